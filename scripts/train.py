"""Trains a VAE: `python scripts/train.py --flagfile=configs/tf1_tutorial.flags [--data_dir=PATH/MNIST_data]`."""

import signal
import sys

from tfvae import cli, config

config.define_train_flags()


def main(argv):
    del argv  # parse_flags_or_exit refuses stray arguments.
    import tensorflow as tf

    from tfvae import data, export, legacy, training

    try:
        training.run(config.config_from_flags())
    # Bad data files, an --init_from[_tf1] that does not fit the model, a damaged checkpoint to resume from, a run
    # whose steps all went non-finite, an --export_dir that became unusable while training ran.
    except (data.DataError, legacy.TF1ImportError, training.CheckpointError, training.TrainingDiverged,
            export.ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        # A failed restore makes TensorFlow warn at exit of every value it left unread; the line above says it all.
        tf.get_logger().setLevel("ERROR")
        sys.exit(1)
    except training.RunConfigError as e:  # Flags that fit together but not this machine's replicas.
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except training.TrainingInterrupted as e:  # SIGTERM / SIGINT, after a checkpoint was saved.
        if e.signal_number == signal.SIGINT:
            cli.exit_interrupted(e)  # Ends by SIGINT: a shell loop of runs stops too.
        print(f"interrupted: {e}", file=sys.stderr)
        sys.exit(128 + e.signal_number)  # The shell's code for death by SIGTERM: 143.


if __name__ == "__main__":
    cli.run_main(main)
