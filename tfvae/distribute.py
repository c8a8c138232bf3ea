"""tf.distribute strategies by name, and who in a cluster writes the artifacts (the chief)."""

import json
import os
import signal
import sys

import tensorflow as tf

from tfvae.config import STRATEGIES


def make_strategy(name, tpu_address=""):
    """Builds the strategy `name`; devices come from the machine (all GPUs for `mirrored`, TF_CONFIG for workers).

    Returns:
      A tf.distribute.Strategy. `default` is the no-op strategy of one device (the GPU if there is one).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        # Without GPUs, mirror over the logical CPUs (one unless configured), so the same flags run anywhere.
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker_mirrored":
        hosts = ", ".join(host for job in json.loads(os.environ["TF_CONFIG"])["cluster"].values() for host in job)
        return _connect_ending_on_signals(tf.distribute.MultiWorkerMirroredStrategy,
                                          f"the workers of TF_CONFIG ({hosts})")
    if name == "tpu":
        def connect():
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            return tf.distribute.TPUStrategy(resolver)
        return _connect_ending_on_signals(connect, f"the TPU at --tpu={tpu_address}")
    raise ValueError(f"unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}")


def _connect_ending_on_signals(make, what):
    """`make()`, which waits for other machines (workers, a TPU) as long as they take.

    TensorFlow's wait holds Python's lock in C++, where no Python signal handler (Ctrl-C's KeyboardInterrupt, the run's
    SIGTERM handler) can ever run: the run could only be killed with SIGKILL. While it waits, SIGINT and SIGTERM
    get their default action, ending the process at once; nothing of the run is written yet.
    """
    print(f"Connecting to {what}; until connected, Ctrl-C ends the run at once", file=sys.stderr, flush=True)
    handlers = {signum: signal.signal(signum, signal.SIG_DFL) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        return make()
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def split_cpu(num_devices):
    """Splits the host CPU into `num_devices` logical devices (before TensorFlow initialises), for `mirrored`."""
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_devices)


def is_chief(strategy):
    """True for the one process that writes checkpoints, summaries and exports."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    # Without a "chief" job, worker 0 is the chief (the MultiWorkerMirroredStrategy convention).
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return "chief" not in cluster and resolver.task_type == "worker" and resolver.task_id == 0
