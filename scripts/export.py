"""Exports the latest checkpoint of a run (a --keep_best run's best epoch's weights, as train.py exports them) as a
SavedModel (weights only), e.g. after stopping a long training;
or writes an older tfvae or classifier export again with this version's signatures, its weights and files unchanged.

    python scripts/export.py --model_dir=runs/mnist_best --export_dir=saved_models/mnist_best
    python scripts/export.py --saved_model=saved_models/tf1_tutorial
    python scripts/export.py --saved_model=saved_models/mnist_classifier
"""

import sys

from tfvae import cli, config

config.define_export_flags()


def main(argv):
    del argv  # parse_flags_or_exit refuses stray arguments.
    from tfvae import export, restore

    try:
        path, replaced, read = restore.write_export(config.export_config_from_flags())
    except (export.ExportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"Exported SavedModel to {path}" + (f" from {read}" if read else ""))
    if replaced:
        print(f"It replaced {replaced}; pass --export_dir=PATH to keep both")


if __name__ == "__main__":
    cli.run_main(main)
