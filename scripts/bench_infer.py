"""Inference speed of a SavedModel's `reconstruct` beside the TF1 tutorial graph's Session.run; writes JSON.

    python scripts/bench_infer.py --saved_model=saved_models/tf1_tutorial --output=bench_infer.json
"""

import json
import os
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from tfvae import config  # noqa: E402

flags.DEFINE_string("saved_model", "saved_models/tf1_tutorial", "A tfvae export of the tutorial network.")
flags.DEFINE_integer("calls", 2000, "Batch-1 calls timed (after 100 warm-up calls).", lower_bound=1000)
flags.DEFINE_integer("large_batch", 1024, "Batch size of the throughput measurement.", lower_bound=1)
flags.DEFINE_string("output", "", "JSON file to write (stdout too).")
FLAGS = flags.FLAGS


def _latency_and_throughput(call, x_one, x_large, calls):
    for _ in range(100):
        call(x_one)
    latencies = []
    for _ in range(calls):
        start = time.perf_counter()
        call(x_one)
        latencies.append(time.perf_counter() - start)
    start, repeats = time.perf_counter(), 50
    for _ in range(repeats):
        call(x_large)
    seconds = time.perf_counter() - start
    return {"batch1_p50_ms": 1e3 * float(np.percentile(latencies, 50)),
            "batch1_p99_ms": 1e3 * float(np.percentile(latencies, 99)),
            f"batch{len(x_large)}_examples_per_second": repeats * len(x_large) / seconds}


def main(argv):
    del argv
    import tensorflow as tf
    import tf1_reference
    from tfvae import artifacts, export

    saved, metadata = export.load_saved_model(FLAGS.saved_model)
    rng = np.random.default_rng(0)
    x_one = rng.random((1, 784), dtype=np.float32)
    x_large = rng.random((FLAGS.large_batch, 784), dtype=np.float32)
    reconstruct = saved.signatures["reconstruct"]
    savedmodel = _latency_and_throughput(lambda x: reconstruct(input=tf.constant(x))["x_hat"].numpy(),
                                         x_one, x_large, FLAGS.calls)
    # The TF1 graph with the export's own weights, so both compute the same function.
    weights = [v.numpy() for v in saved.tf1_variables if v.name.startswith(("encoder/", "decoder/"))]
    g = tf1_reference.build_graph(initial_weights=weights, hidden_sizes=tuple(metadata["config"]["hidden_sizes"]),
                                  latent_dim=metadata["latent_dim"])
    with tf.compat.v1.Session(graph=g.graph, config=tf1_reference._single_session_config()) as sess:
        sess.run(g.init_op)
        tf1 = _latency_and_throughput(lambda x: sess.run(g.x_hat_mean, {g.input: x}), x_one, x_large, FLAGS.calls)
        tf1_x_hat = sess.run(g.x_hat_mean, {g.input: x_large})
    max_diff = float(np.abs(tf1_x_hat - reconstruct(input=tf.constant(x_large))["x_hat"].numpy()).max())
    result = {"saved_model": FLAGS.saved_model, "savedmodel_reconstruct": savedmodel, "tf1_session_run": tf1,
              "max_abs_output_difference": max_diff, "tensorflow": tf.__version__,
              "load_average_1min": os.getloadavg()[0]}
    text = json.dumps(result, indent=2)
    print(text)
    if FLAGS.output:
        artifacts.write_text(FLAGS.output, text + "\n")


if __name__ == "__main__":
    app.run(main, flags_parser=config.parse_flags_or_exit)
