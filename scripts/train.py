"""Trains a VAE: `python scripts/train.py --flagfile=configs/tf1_tutorial.flags [--data_dir=PATH/MNIST_data]`."""

from absl import app

from tfvae import config

config.define_train_flags()


def main(argv):
    del argv  # parse_flags_or_exit refuses stray arguments.
    from tfvae import training

    training.run(config.config_from_flags())


if __name__ == "__main__":
    app.run(main, flags_parser=config.parse_flags_or_exit)
