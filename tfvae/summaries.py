"""TensorBoard beyond Keras' scalars: per-dimension KL histograms, active units, HParams, the Embedding Projector;
and reading a run's per-epoch history back from its metrics.json or event files."""

import contextlib
import dataclasses
import json
import os

import numpy as np
import tensorflow as tf
from absl import logging

from tfvae import artifacts, config, losses
from tfvae.compat import keras

METRICS_FILE = "metrics.json"


def read_history(folder):
    """Per-epoch values of a run, Keras-History style: {"loss": [...], "val_loss": [...], "kl": [...], ...}.

    From `folder/metrics.json` (a finished run or an export) or the TensorBoard event files in `folder/train` and
    `folder/validation`, whichever holds more epochs: a run in progress or stopped has only its event files, a
    metrics.json may be left from an earlier, shorter run in the same folder, and one written by a resumed run of an
    older tfvae holds only the epochs that process ran (the event files then win a tie too).

    Raises:
      ValueError: neither is there.
    """
    (metrics, partial), events = _history_from_metrics(folder), _history_from_events(folder)
    held, events_held = _epochs_with_a_loss(metrics), _epochs_with_a_loss(events)
    history = events if events_held > held or (partial and events_held == held and events) else metrics or events
    if not history:
        raise ValueError(f"{folder}: no {METRICS_FILE} with a history and no TensorBoard epoch scalars in "
                         f"train/ or validation/; pass a run folder of train.py or an export")
    return history


def read_final_test(folder, epochs):
    """The test metrics of `folder/metrics.json` ({"loss": ..., "kl": ...}) and the epoch whose weights they are of
    (the last, or with --keep_best the best) when they are of a run of `epochs` epochs (those of the history
    read_history gave); (None, None) otherwise: no file, an older or shorter run's, unreadable."""
    try:
        with open(os.path.join(folder, METRICS_FILE), encoding="utf-8") as f:
            metrics = json.load(f)
        test, losses = metrics.get("test"), metrics.get("history", {}).get("loss", [])
        tested_epoch = metrics.get("tested_epoch", epochs)
    except (OSError, ValueError, AttributeError):
        return None, None
    if not (isinstance(test, dict) and len(losses) == epochs and isinstance(tested_epoch, int)):
        return None, None
    return test, tested_epoch


def _epochs_with_a_loss(history):
    return sum(value is not None for value in history.get("loss", []))


def _history_from_metrics(folder):
    """(the history in `folder/metrics.json` by epoch or {}, whether it lacks epochs before those it holds)."""
    metrics_path = os.path.join(folder, METRICS_FILE)
    if not os.path.isfile(metrics_path):
        return {}, False
    try:
        with open(metrics_path, encoding="utf-8") as f:
            metrics = json.load(f)
        history, epochs_run = metrics.get("history", {}), metrics.get("epochs_run") or [0]
        if not (isinstance(history, dict) and all(isinstance(values, list) for values in history.values())
                and isinstance(epochs_run, list) and isinstance(epochs_run[-1], int)):
            raise TypeError("not shaped as tfvae writes it")
    except (OSError, ValueError, TypeError, AttributeError) as e:  # Cut short, edited, or not tfvae's.
        logging.warning("%s is unreadable (%s); reading the run's history from its event files instead",
                        metrics_path, e)
        return {}, False
    # An older tfvae's resumed run wrote only the epochs that process ran: its earlier epochs are None here.
    missing = {name: max(epochs_run[-1] - len(values), 0) for name, values in history.items()}
    return ({name: [None] * missing[name] + list(values) for name, values in history.items()},
            any(missing.values()))


def _history_from_events(folder):
    """The epoch scalars of the event files in `folder/train` and `folder/validation`, by epoch ({} if none)."""
    from tensorboard.backend.event_processing import event_accumulator  # Only this path needs it.

    by_step = {}
    for subdir, prefix in (("train", ""), ("validation", "val_")):
        path = os.path.join(folder, subdir)
        if not os.path.isdir(path):
            continue
        accumulator = event_accumulator.EventAccumulator(path, size_guidance={event_accumulator.TENSORS: 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["tensors"]:
            if tag.startswith("epoch_"):
                by_step[prefix + tag[len("epoch_"):]] = {
                    e.step: float(tf.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)}
    # Keras logs epoch e at step e - 1; a quantity logged only in some epochs (a resumed run with a newer
    # metric) gets None elsewhere, so every list is indexed by epoch.
    epochs = 1 + max((step for values in by_step.values() for step in values), default=-1)
    return {name: [values.get(step) for step in range(epochs)] for name, values in by_step.items()}


def epoch_seconds_before(folder):
    """{epoch: seconds} of the epochs an earlier process of the run in `folder` timed, from the metrics.json it left
    (a finished run, resumed to test and export again or to train more epochs); {} when there is none or it is
    unreadable. A run stopped mid-way has no metrics.json yet: its seconds are not kept anywhere."""
    try:
        with open(os.path.join(folder, METRICS_FILE)) as f:
            seconds = json.load(f).get("epoch_seconds") or {}
        return {int(epoch): float(value) for epoch, value in seconds.items()}
    except (OSError, ValueError, TypeError, AttributeError):  # Missing, not JSON, or not shaped as tfvae writes it.
        return {}


def history_before(folder, epochs):
    """The first `epochs` epochs of the history of the run in `folder` ({name: [value or None] * epochs}), for a
    resumed run to carry the whole run's curves; {} when the folder has none.

    Only what Keras' History also reports is kept (the event files also hold the learning rate, which History
    leaves out), so a resumed run's metrics.json names what an uninterrupted run's does.
    """
    try:
        history = read_history(folder)
    except ValueError:
        return {}
    return {name: (list(values) + [None] * epochs)[:epochs] for name, values in history.items()
            if name not in KERAS_ONLY_IN_EVENTS}


# Scalars Keras' TensorBoard callback logs that its History does not report.
KERAS_ONLY_IN_EVENTS = ("learning_rate", "val_learning_rate")


# Paths and settings of speed, devices and bookkeeping: they do not change what a run learns (mixed precision and
# --deterministic, which can, stay).
HPARAMS_EXCLUDED = ("model_dir", "export_dir", "data_dir", "resume", "overwrite", "jit_compile", "steps_per_execution",
                    "micro_batches", "data_threads", "intra_op_threads", "inter_op_threads", "keep_checkpoints",
                    "checkpoint_every_steps", "image_summaries", "strategy", "tpu", "cpu_devices", "max_bad_steps")


def _unused_hparams(cfg):
    """The flags this run's model and objective never read, left out of its HParams row."""
    unused = set()
    if cfg.model != "conv":
        unused.add("conv_filters")
    if cfg.likelihood != "autoregressive_bernoulli":
        unused |= {"ar_kernel_size", "ar_channels"}
    if cfg.likelihood != "gaussian":
        unused |= {"gaussian_stddev", "learn_variance"}
    if cfg.objective != "iwae":
        unused.add("num_importance_samples")
    if cfg.corruption == "none":
        unused.add("corruption_strength")
    if not cfg.image_size:
        unused.add("image_size")
    if not cfg.init_from:
        unused.add("init_from")
    if not cfg.init_from_tf1:
        unused.add("init_from_tf1")
    return unused


KL_EXAMPLES = 1000
PROJECTOR_DIR = "projector"
PROJECTOR_EXAMPLES = 10000


def hparams_of(cfg):
    """The flags that shape what the run learns, as HParams values (bool, int, float or str; tuples joined by
    commas): paths, speed and bookkeeping settings and flags this model does not read are left out."""
    values = {}
    unused = _unused_hparams(cfg)
    for name, value in dataclasses.asdict(cfg).items():
        if name in HPARAMS_EXCLUDED or name in unused or value is None:
            continue
        values[name] = ",".join(str(v) for v in value) if isinstance(value, (tuple, list)) else value
    return values


def take_examples(dataset, count):
    """The first `count` examples of a batched pipeline of dicts, as one dict of numpy arrays."""
    parts, seen = [], 0
    for batch in dataset:
        parts.append({k: v.numpy() for k, v in batch.items()})
        seen += len(parts[-1]["input"])
        if seen >= count:
            break
    return {k: np.concatenate([p[k] for p in parts])[:count] for k in parts[0]}


def latent_dimensions_table(kl_per_dimension, mean_variance):
    """A Markdown table naming each latent dimension with its KL (nats), Var_x(E_q[z_u]) and whether it is active.

    TensorBoard's Text tab shows it, one per epoch: the histogram counts collapsed dimensions, this names them.
    (Not a scalar per dimension: the HParams tab would list each as a metric column.)"""
    width = len(str(len(kl_per_dimension) - 1))
    rows = ["| dimension | KL (nats) | Var_x(E_q[z_u]) | active |", "|---|---|---|---|"]
    for unit, (kl, variance) in enumerate(zip(kl_per_dimension, mean_variance)):
        active = "yes" if variance > losses.ACTIVE_UNIT_THRESHOLD else "**no**"
        rows.append(f"| z{unit:0{width}d} | {kl:.4f} | {variance:.4g} | {active} |")
    return "\n".join(rows)


@contextlib.contextmanager
def writing_to(log_dir, step=None, filename_suffix=None):
    """A block whose tf.summary calls go to an event file in `log_dir`, closed (its thread and file) at the end."""
    writer = tf.summary.create_file_writer(log_dir, filename_suffix=filename_suffix)
    try:
        with writer.as_default(step=step):
            yield
    finally:
        writer.close()


class EventWriter:
    """A callback's summary writer for `log_dir`, made on first use and closed at the end of each `fit` (a run
    resumed mid-epoch fits twice: the second fit writes a new event file beside the first)."""

    def __init__(self, log_dir):
        self.log_dir = log_dir
        self._writer = None

    def as_default(self, step=None):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        return self._writer.as_default(step=step)

    def flush(self):
        if self._writer is not None:
            self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class LatentSummaries(keras.callbacks.Callback):
    """Each epoch, on fixed held-out examples: a histogram of the per-dimension KL (nats, one value per latent
    dimension), the number of active units, and a table naming each dimension's KL and activity, under `log_dir`
    (TensorBoard's Histograms / Scalars / Text tabs)."""

    def __init__(self, log_dir, examples):
        super().__init__()
        self.writer = EventWriter(log_dir)
        self.examples = examples

    def on_train_end(self, logs=None):
        self.writer.close()

    def on_epoch_end(self, epoch, logs=None):
        z_mean, z_logvar = self.model.encode(tf.constant(self.examples["input"]),
                                             tf.constant(self.examples["label"]))
        # float32 even under a mixed-precision policy, whose float16 would round small KLs away.
        z_mean, z_logvar = tf.cast(z_mean, tf.float32), tf.cast(z_logvar, tf.float32)
        kl_per_dimension = tf.reduce_mean(losses.kl_per_dimension(z_mean, z_logvar), axis=0)
        mean_variance = tf.math.reduce_variance(z_mean, axis=0)
        active = tf.reduce_sum(tf.cast(mean_variance > losses.ACTIVE_UNIT_THRESHOLD, tf.int32))
        with self.writer.as_default(step=epoch):  # Keras' epoch index, the step of its epoch scalars.
            tf.summary.histogram("kl_per_dimension", kl_per_dimension,
                                 description="Mean KL(q(z_u|x) || N(0, 1)) of each latent dimension u, nats, on "
                                             f"{len(self.examples['input'])} held-out examples")
            tf.summary.scalar("active_units", active, description="Latent dimensions with Var_x(E_q[z_u]) > "
                                                                  f"{losses.ACTIVE_UNIT_THRESHOLD} (Burda et al. 2015)")
            tf.summary.text("latent_dimensions", latent_dimensions_table(kl_per_dimension.numpy(),
                                                                         mean_variance.numpy()),
                            description="Each latent dimension's KL, variance of its posterior mean, and whether it "
                                        "is active")
        self.writer.flush()


class HParamsSummary(keras.callbacks.Callback):
    """Records the run's flags for TensorBoard's HParams tab at the start of training, so runs under one logdir
    compare in one table against their validation and test metrics."""

    def __init__(self, log_dir, cfg):
        super().__init__()
        self.log_dir = log_dir
        self.cfg = cfg
        self._written = False

    def on_train_begin(self, logs=None):
        if self._written:  # A run resumed mid-epoch calls fit twice.
            return
        self._written = True
        from tensorboard.plugins.hparams import api as hp

        earlier = _hparams_event_files(self.log_dir)
        with writing_to(self.log_dir, filename_suffix=HPARAMS_SUFFIX):
            tf.summary.experimental.write_raw_pb(hparams_experiment().SerializeToString(), step=0)
            # The run folder names the trial: unique under one logdir, unlike --name.
            hp.hparams(hparams_of(self.cfg), trial_id=os.path.basename(os.path.normpath(self.cfg.model_dir)))
        # A resumed run's flags replace those of its earlier processes: TensorBoard shows the first it reads.
        for path in earlier:
            os.remove(path)
        if earlier:
            print("TensorBoard: a TensorBoard started before this process keeps showing the flags it first read for "
                  "this run in HParams; restart it to see these", flush=True)


# The HParams table's metrics in the order shown: what compares runs first (the negative ELBO, whatever the objective
# trained), speed last. (tag, run folder under the run or None for the run itself, column name).
HPARAMS_METRICS = (
    ("test/negative_elbo", None, "test negative ELBO"),
    ("test/loss", None, "test loss"),
    ("epoch_negative_elbo", "validation", "validation negative ELBO"),
    ("epoch_loss", "validation", "validation loss"),
    ("test/kl", None, "test KL"),
    ("test/reconstruction", None, "test reconstruction"),
    ("epoch_kl", "validation", "validation KL"),
    ("epoch_reconstruction", "validation", "validation reconstruction"),
    ("active_units", "latent", "active units"),
    ("epoch_loss", "train", "train loss"),
    ("epoch_kl", "train", "train KL"),
    ("epoch_reconstruction", "train", "train reconstruction"),
    ("epoch_grad_norm", "train", "gradient norm"),
    ("epoch_bad_steps", "train", "skipped steps"),
    ("epoch_examples_per_second", "train", "examples/s"),
)
# The flags the HParams table shows until others are ticked: those a sweep varies most.
HPARAMS_SHOWN = ("model", "likelihood", "latent_dim", "beta", "learning_rate")


def hparams_experiment():
    """The HParams experiment every run writes (a `summary_pb2.Summary`): every flag a row may hold, and the
    metrics in HPARAMS_METRICS' order. The same in every run, so whichever run TensorBoard takes it from (it takes
    one) orders the table, whose first five flags and metrics are shown until others are ticked.

    TensorBoard lists a written experiment's flags by `differs`, then by name, where it would otherwise mark those
    whose values differ between runs: HPARAMS_SHOWN are marked so.
    """
    from tensorboard.plugins.hparams import api as hp, plugin_data_pb2  # Only this path needs them.

    names = [field.name for field in dataclasses.fields(config.RunConfig) if field.name not in HPARAMS_EXCLUDED]
    summary = hp.hparams_config_pb(hparams=[hp.HParam(name) for name in names],
                                   metrics=[hp.Metric(tag, group=group, display_name=shown)
                                            for tag, group, shown in HPARAMS_METRICS])
    plugin_data = summary.value[0].metadata.plugin_data
    content = plugin_data_pb2.HParamsPluginData.FromString(plugin_data.content)
    for info in content.experiment.hparam_infos:
        info.differs = info.name in HPARAMS_SHOWN
    plugin_data.content = content.SerializeToString()
    return summary


HPARAMS_SUFFIX = ".hparams"


def _hparams_event_files(log_dir):
    """The event files directly in `log_dir` that hold nothing but an HParams session start: this module's, by
    their suffix, and those of tfvae before 2026-12-04, by their contents."""
    from tensorboard.compat.proto import event_pb2  # Only this path needs these.
    from tensorboard.plugins.hparams import metadata as hparams_metadata

    found = []
    for path in _event_files(log_dir):
        if path.endswith(HPARAMS_SUFFIX):
            found.append(path)
            continue
        try:
            tags = {value.tag for record in tf.data.TFRecordDataset(path)
                    for value in event_pb2.Event.FromString(record.numpy()).summary.value}
        except tf.errors.DataLossError:  # A file cut short by a crash: not ours to remove.
            continue
        if tags == {hparams_metadata.SESSION_START_INFO_TAG}:
            found.append(path)
    return found


# A run's folders of events logged per epoch at Keras' epoch index: train/ and validation/ (Keras' TensorBoard
# callback), images/ (training.ImageSummaries) and latent/ (LatentSummaries).
EPOCH_LOG_DIRS = ("train", "validation", "images", "latent")
# The final test metrics' tags, in the run folder itself (write_test_metrics).
TEST_TAG_PREFIX = "test/"


def drop_epochs_from(model_dir, first_epoch):
    """Removes from the run's event files what earlier processes logged for epoch index `first_epoch` and later,
    which a run resumed from the checkpoint of `first_epoch` done epochs logs again: e.g. the unfinished epoch of a
    run stopped for non-finite steps. TensorBoard would draw both values at one step.

    The test metrics (`test/NAME` in the run folder itself) go whatever their step: a resumed run tests its final
    model again, and an earlier process's test point of fewer epochs would be joined to the new one by a line.

    Returns:
      The number of events removed.
    """
    removed = sum(_drop_events(path, lambda event: event.step >= first_epoch)
                  for subdir in EPOCH_LOG_DIRS for path in _event_files(os.path.join(model_dir, subdir)))
    return removed + sum(
        _drop_events(path, lambda event: any(value.tag.startswith(TEST_TAG_PREFIX) for value in event.summary.value))
        for path in _event_files(model_dir))


def _drop_events(path, drops):
    """Rewrites the event file `path` without its summary events for which `drops(event)` holds (whole, or not at
    all). Returns how many it removed."""
    from tensorboard.compat.proto import event_pb2  # Only this path needs it.

    records = []
    try:
        for record in tf.data.TFRecordDataset(path):
            records.append(record.numpy())
    except tf.errors.DataLossError:  # A file cut short by a crash: its whole records are kept.
        pass
    events = [event_pb2.Event.FromString(record) for record in records]
    kept = [record for record, event in zip(records, events) if not (event.HasField("summary") and drops(event))]
    if len(kept) < len(records):
        artifacts.write_bytes_with(path, lambda tmp: _write_records(tmp, kept))
    return len(records) - len(kept)


def _event_files(folder):
    """The paths of the TensorBoard event files directly in `folder`, by name (so by the time they were begun)."""
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    return [os.path.join(folder, name) for name in names
            if name.startswith("events.out.tfevents.") and os.path.isfile(os.path.join(folder, name))]


def _write_records(path, records):
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)


def make_callbacks(cfg, datasets):
    """The callbacks of this module for a training run writing under `cfg.model_dir`."""
    held_out = datasets.validation if cfg.validation_size else datasets.test
    return [
        LatentSummaries(os.path.join(cfg.model_dir, "latent"), take_examples(held_out, KL_EXAMPLES)),
        HParamsSummary(cfg.model_dir, cfg),
    ]


def write_test_metrics(model_dir, test_metrics, step):
    """Final test metrics as scalars `test/NAME` in `model_dir`, where the HParams tab reads them."""
    with writing_to(model_dir, step=step):
        for name, value in test_metrics.items():
            tf.summary.scalar(f"{TEST_TAG_PREFIX}{name}", value)


def write_projector(log_dir, model, dataset, images, labels, count=PROJECTOR_EXAMPLES):
    """Writes the test-set z_mean for TensorBoard's Embedding Projector: checkpoint, label metadata, sprite.

    Args:
      log_dir: output folder (a run of its own under the run folder).
      model: the trained VAE.
      dataset: batched test pipeline of dicts, not shuffled, in the order of `images`.
      images: uint8 `[n, H, W, C]` test images (gray levels for the sprite).
      labels: int32 `[n]`.
      count: examples to embed (at most n).
    """
    from tensorboard.plugins import projector

    examples = take_examples(dataset, min(count, len(images)))
    n = len(examples["input"])
    z_mean = np.concatenate([model.encode(tf.constant(examples["input"][i:i + 1000]),
                                          tf.constant(examples["label"][i:i + 1000]))[0].numpy().astype(np.float32)
                             for i in range(0, n, 1000)])
    os.makedirs(log_dir, exist_ok=True)
    # One column: the projector wants no header row then (it counts every line as a point).
    artifacts.write_text(os.path.join(log_dir, "metadata.tsv"), "".join(f"{int(label)}\n" for label in labels[:n]))
    side = int(np.ceil(np.sqrt(n)))
    height, width = images.shape[1:3]
    thumbnails = np.zeros((side * side, height, width, images.shape[3]), np.uint8)
    thumbnails[:n] = images[:n]
    # The projector wants one square image with thumbnails in row-major order and no padding.
    sprite = thumbnails.reshape(side, side, height, width, -1).transpose(0, 2, 1, 3, 4).reshape(
        side * height, side * width, -1)
    artifacts.write_bytes_with(os.path.join(log_dir, "sprite.png"),
                               lambda tmp: tf.io.write_file(tmp, tf.io.encode_png(sprite)))
    checkpoint = tf.train.Checkpoint(test_z_mean=tf.Variable(z_mean, name="z_mean"))  # The Projector shows its key.
    checkpoint.save(os.path.join(log_dir, "embedding.ckpt"))
    embedding_config = projector.ProjectorConfig()
    embedding = embedding_config.embeddings.add()
    embedding.tensor_name = "test_z_mean/.ATTRIBUTES/VARIABLE_VALUE"
    embedding.metadata_path = "metadata.tsv"
    embedding.sprite.image_path = "sprite.png"
    embedding.sprite.single_image_dim.extend([width, height])
    projector.visualize_embeddings(log_dir, embedding_config)
    # TensorBoard only lists folders holding an event file as runs; the projector looks for its config in runs.
    with writing_to(log_dir):
        tf.summary.text("about", f"z_mean of {n} test examples; labels in metadata.tsv, thumbnails in sprite.png",
                        step=0)
    return z_mean
