"""Measures a trained VAE in nats: negative ELBO, reconstruction, KL, importance-sampled NLL, bits/dim, active units.

    python scripts/evaluate.py --saved_model=saved_models/mnist_best --data_dir=PATH/MNIST_data
    python scripts/evaluate.py --model_dir=runs/mnist_best --split=validation --num_importance_samples=5000

Prints a table and writes JSON (default: evaluation_SPLIT_kK_nN.json inside the model folder, N = --num_examples or
all).
"""

import sys

from tfvae import cli, config

config.define_evaluate_flags()


def main(argv):
    del argv  # parse_flags_or_exit refuses stray arguments.
    from tfvae import artifacts, data, evaluation, export, restore

    cfg = config.evaluate_config_from_flags()
    try:
        loaded = restore.load(cfg.saved_model, cfg.model_dir)
        results = evaluation.run(loaded, cfg.data_dir, cfg.split, cfg.num_importance_samples, cfg.num_examples,
                                 cfg.batch_size, cfg.samples_per_batch, cfg.binarize, cfg.seed)
    except (export.ExportError, data.DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(evaluation.format_table(results, results["protocol"]))
    artifacts.write_json(cfg.output, results)
    print(f"Wrote {cfg.output}")


if __name__ == "__main__":
    cli.run_main(main)
