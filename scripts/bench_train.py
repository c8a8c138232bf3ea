"""Training speed of tfvae beside a TF1 feed_dict graph of the same network, measured in one run; writes JSON.

    python scripts/bench_train.py --preset=tf1_tutorial --epochs=5 --data_dir=PATH/MNIST_data --output=bench.json
    python scripts/bench_train.py --preset=mlp400 --epochs=5 --data_dir=PATH/MNIST_data
"""

import dataclasses
import json
import os
import platform
import resource
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from tfvae import config  # noqa: E402

PRESETS = {
    # The TF1 tutorial: 784-100-(2x20, tanh) / 20-100-784, squared error, batch 100.
    "tf1_tutorial": config.RunConfig(model="tf1_tutorial", hidden_sizes=(100,), latent_dim=20, likelihood="sse",
                                     batch_size=100, adam="tf1", steps_per_execution=550, jit_compile=False),
    # pytorch/examples' VAE: 784-400-(2x20) / 20-400-784, Bernoulli on logits, batch 128.
    "mlp400": config.RunConfig(model="mlp", hidden_sizes=(400,), latent_dim=20, likelihood="bernoulli",
                               batch_size=128, adam="tf1", steps_per_execution=429, jit_compile=True),
}

flags.DEFINE_enum("preset", "tf1_tutorial", sorted(PRESETS), "Network to measure.")
flags.DEFINE_integer("epochs", 5, "Epochs per contender; steady state is the median of epochs 2..N.",
                     lower_bound=2)
flags.DEFINE_string("data_dir", "", "MNIST_data/ IDX folder (or TFDS data dir).")
flags.DEFINE_string("output", "", "JSON file to write (stdout too).")
flags.DEFINE_bool("jit_compile", None, "Override the preset's XLA choice.")
flags.DEFINE_integer("steps_per_execution", None, "Override the preset's steps per execution.")
FLAGS = flags.FLAGS


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_tfvae(cfg, epochs):
    from tfvae import data, training
    from tfvae.models import build_model

    datasets = data.make_datasets(cfg)
    model = build_model(cfg, datasets.image_shape)
    model.compile(optimizer=training.make_optimizer(cfg), jit_compile=cfg.jit_compile,
                  steps_per_execution=cfg.steps_per_execution)
    seconds, losses = [], []
    for epoch in range(epochs):
        datasets.train_epoch.assign(epoch)  # Each epoch its own shuffle, as in training.train.
        start = time.perf_counter()
        history = model.fit(datasets.train, epochs=1, verbose=0, shuffle=False)
        seconds.append(time.perf_counter() - start)
        losses.append(history.history["loss"][-1])
    validation = model.evaluate(datasets.validation, verbose=0, return_dict=True)["loss"]
    examples = (len(datasets.arrays.train_images) // cfg.batch_size) * cfg.batch_size
    return _summary(seconds, examples, losses, validation), datasets


def bench_tf1(cfg, datasets, epochs):
    import tensorflow as tf
    import tf1_reference

    images = datasets.arrays.train_images.reshape(len(datasets.arrays.train_images), -1).astype(np.float32) / 255
    validation = datasets.arrays.validation_images.reshape(-1, images.shape[1]).astype(np.float32) / 255
    g = tf1_reference.build_graph(hidden_sizes=cfg.hidden_sizes, latent_dim=cfg.latent_dim,
                                  likelihood=cfg.likelihood, seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    steps = len(images) // cfg.batch_size
    seconds, losses = [], []
    with tf.compat.v1.Session(graph=g.graph, config=tf1_reference._single_session_config()) as sess:
        sess.run(g.init_op)
        for _ in range(epochs):
            order = rng.permutation(len(images))
            start = time.perf_counter()
            total = 0.0
            for step in range(steps):
                batch = images[order[step * cfg.batch_size:(step + 1) * cfg.batch_size]]
                _, loss = sess.run([g.train_op, g.loss], {g.input: batch})
                total += loss
            seconds.append(time.perf_counter() - start)
            losses.append(total / steps)
        validation_loss = float(np.mean([sess.run(g.loss, {g.input: validation[i:i + 1000]})
                                         for i in range(0, len(validation), 1000)]))
    return _summary(seconds, steps * cfg.batch_size, losses, validation_loss)


def _summary(seconds, examples, losses, validation_loss):
    return {
        "examples_per_second": float(np.median([examples / s for s in seconds[1:]])),
        "first_epoch_seconds": seconds[0],
        "epoch_seconds": seconds,
        "final_train_loss": float(losses[-1]),
        "final_validation_loss": float(validation_loss),
        "peak_rss_mb": _peak_rss_mb(),
    }


def main(argv):
    del argv
    import tensorflow as tf

    cfg = dataclasses.replace(PRESETS[FLAGS.preset], data_dir=FLAGS.data_dir)
    if FLAGS.jit_compile is not None:
        cfg = dataclasses.replace(cfg, jit_compile=FLAGS.jit_compile)
    if FLAGS.steps_per_execution is not None:
        cfg = dataclasses.replace(cfg, steps_per_execution=FLAGS.steps_per_execution)
    tfvae_result, datasets = bench_tfvae(cfg, FLAGS.epochs)
    tf1_result = bench_tf1(cfg, datasets, FLAGS.epochs)
    result = {
        "preset": FLAGS.preset,
        "epochs": FLAGS.epochs,
        "config": {k: v for k, v in dataclasses.asdict(cfg).items()
                   if k in ("hidden_sizes", "latent_dim", "likelihood", "batch_size", "jit_compile",
                            "steps_per_execution", "adam", "data_threads")},
        "tfvae": tfvae_result,
        "tf1_feed_dict": tf1_result,
        "speedup_vs_tf1": tfvae_result["examples_per_second"] / tf1_result["examples_per_second"],
        "versions": {"tensorflow": tf.__version__, "python": platform.python_version()},
        "threads": {"cpus": os.cpu_count(), "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                    "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                    "load_average_1min": os.getloadavg()[0]},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if FLAGS.output:
        from tfvae import artifacts

        artifacts.write_text(FLAGS.output, text + "\n")


if __name__ == "__main__":
    app.run(main, flags_parser=config.parse_flags_or_exit)
