"""Draws a trained VAE: samples, reconstructions, 2-D manifold, latent scatter, interpolations, latent traversals,
loss curves, class grid (conditional models), one PNG per kind.

    python scripts/plot.py --saved_model=saved_models/mnist_best --data_dir=PATH/MNIST_data --output_dir=plots
    python scripts/plot.py --model_dir=runs/mnist_best --kinds=loss_curves,latent_scatter
"""

import sys

from tfvae import cli, config

config.define_plot_flags()


def main(argv):
    del argv  # parse_flags_or_exit refuses stray arguments.
    from tfvae import data, export, plots, restore

    cfg = config.plot_config_from_flags()
    try:
        try:
            loaded = restore.load(cfg.saved_model, cfg.model_dir, model_needed=plots.need_a_model(cfg.kinds))
        except restore.NoCheckpoint as e:
            if "all" not in cfg.kinds:
                raise ValueError(f"{e}; --kinds=loss_curves draws from the run's files alone") from None
            loaded = restore.load_run_files(cfg.model_dir)  # "all" is what applies: its curves.
        _, left_out = plots.run(loaded, cfg.kinds, cfg.output_dir, cfg.data_dir, cfg.seed, cfg.grid_size,
                                cfg.scatter_examples,
                                on_written=lambda kind, path: print(f"Wrote {path} ({kind})", flush=True))
    except (export.ExportError, data.DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    for kind, reason in left_out.items():
        print(f"Skipped {kind}: {reason}")


if __name__ == "__main__":
    cli.run_main(main)
