r"""Imports a TF1 tutorial VAE (Saver checkpoint or SavedModel) as a tfvae SavedModel.

    python scripts/import_tf1.py --source=PATH/model.ckpt --export_dir=saved_models/NAME [--with_optimizer]
    python scripts/import_tf1.py --source=PATH/tf1_saved_model --export_dir=saved_models/NAME \
        --variable_map=map.json
"""

import sys

from tfvae import cli, config

config.define_import_tf1_flags()


def main(argv):
    del argv  # parse_flags_or_exit refuses stray arguments.
    from tfvae import export, legacy

    cfg = config.import_config_from_flags()
    try:
        if cfg.variable_map:
            legacy.load_variable_map(cfg.variable_map)  # A broken map fails before the checkpoint is listed.
        source = legacy.open_source(cfg.source)
        # A folder's checkpoint is the one its 'checkpoint' file names (or its SavedModel's): say which was read.
        read = "" if source.prefix == cfg.source else f" (reading {source.prefix})"
        print(f"{cfg.source}{read}: {len(source.variables)} variables\n{legacy.format_variables(source)}")
        path, report = legacy.import_tf1(cfg.source, cfg.export_dir, cfg.variable_map, cfg.with_optimizer,
                                         cfg.dataset, cfg.learning_rate, cfg.adam_epsilon)
    except (legacy.TF1ImportError, export.ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print("Mapped:\n" + "\n".join(f"  {name} -> {path}" for path, name in report["variable_map"].items()))
    if cfg.with_optimizer:
        print(f"Adam state carried over at step {report['adam_step']}")
    print(f"Exported SavedModel to {path}")
    if "replaced" in report:
        print(f"It replaced {report['replaced']}; pass another --export_dir to keep both")


if __name__ == "__main__":
    cli.run_main(main)
