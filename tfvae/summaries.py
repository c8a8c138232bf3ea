"""TensorBoard beyond scalars: per-dimension KL histograms, gradient norm, HParams, the Embedding Projector;
and reading a run's per-epoch history back from its metrics.json or event files."""

import json
import os

import numpy as np
import tensorflow as tf

METRICS_FILE = "metrics.json"


def read_history(folder):
    """Per-epoch values of a run, Keras-History style: {"loss": [...], "val_loss": [...], "kl": [...], ...}.

    Reads `folder/metrics.json` (a finished run or an export) when present, otherwise the TensorBoard event
    files in `folder/train` and `folder/validation` (a run still in progress).

    Raises:
      ValueError: neither is there.
    """
    metrics_path = os.path.join(folder, METRICS_FILE)
    if os.path.isfile(metrics_path):
        with open(metrics_path) as f:
            history = json.load(f).get("history", {})
        if history:
            return history
    from tensorboard.backend.event_processing import event_accumulator  # Only this path needs it.

    history = {}
    for subdir, prefix in (("train", ""), ("validation", "val_")):
        path = os.path.join(folder, subdir)
        if not os.path.isdir(path):
            continue
        accumulator = event_accumulator.EventAccumulator(path, size_guidance={event_accumulator.TENSORS: 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["tensors"]:
            if tag.startswith("epoch_"):
                events = sorted(accumulator.Tensors(tag), key=lambda e: e.step)
                history[prefix + tag[len("epoch_"):]] = [float(tf.make_ndarray(e.tensor_proto)) for e in events]
    if not history:
        raise ValueError(f"{folder}: no {METRICS_FILE} with a history and no TensorBoard epoch scalars in "
                         f"train/ or validation/; pass a run folder of train.py or an export")
    return history
