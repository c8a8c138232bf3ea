"""Trains the small classifier that judges conditional samples (scripts/evaluate_cvae.py).

    python scripts/train_classifier.py --data_dir=PATH/MNIST_data --export_dir=saved_models/mnist_classifier

Writes a SavedModel with a `classify` signature and classifier.json (test accuracy) to --export_dir.
"""

import sys

from tfvae import cli, config

config.define_classifier_flags()


def main(argv):
    del argv  # parse_flags_or_exit refuses stray arguments.
    from tfvae import classifier, data

    try:
        classifier.train_classifier(config.classifier_config_from_flags())
    except (classifier.ClassifierError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli.run_main(main)
