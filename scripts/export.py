"""Exports the latest checkpoint of a run as a SavedModel (weights only), e.g. after stopping a long training;
or writes an older tfvae or classifier export again with this version's signatures, its weights and files unchanged.

    python scripts/export.py --model_dir=runs/mnist_best --export_dir=saved_models/mnist_best
    python scripts/export.py --saved_model=saved_models/tf1_tutorial
    python scripts/export.py --saved_model=saved_models/mnist_classifier
"""

import os
import sys

from tfvae import cli, config

config.define_export_flags()


def main(argv):
    del argv  # parse_flags_or_exit refuses stray arguments.
    from tfvae import classifier, export, restore

    source, target = config.FLAGS.saved_model or config.FLAGS.model_dir, config.FLAGS.export_dir
    if config.FLAGS.model_dir and not target:
        target = restore.run_export_dir(config.FLAGS.model_dir)
    # Written in place (--saved_model alone) or the run's own export again: nothing of another is replaced.
    replaced = target and os.path.realpath(target) != os.path.realpath(source) and export.describe_other_export(
        target, config.FLAGS.model_dir)
    try:
        if config.FLAGS.saved_model and classifier.is_classifier_export(config.FLAGS.saved_model):
            path = classifier.reexport_classifier(config.FLAGS.saved_model, config.FLAGS.export_dir)
        elif config.FLAGS.saved_model:
            path = restore.reexport_saved_model(config.FLAGS.saved_model, config.FLAGS.export_dir)
        else:
            path = restore.export_checkpoint(config.FLAGS.model_dir, config.FLAGS.export_dir)
    except (export.ExportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"Exported SavedModel to {path}")
    if replaced:
        print(f"It replaced {replaced}; pass --export_dir=PATH to keep both")


if __name__ == "__main__":
    cli.run_main(main)
