"""One training run: run folder, Keras fit with callbacks, checkpoints, TensorBoard, metrics and export."""

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import types

try:
    import fcntl
except ImportError:  # Windows: runs are not locked.
    fcntl = None

from tfvae.compat import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfvae import artifacts, cli, config, corruption, data, distribute, export, optimizers, summaries, visualization
from tfvae.models import likelihoods

GRID_ROWS = GRID_COLS = 4


def _loss_is_not_the_elbo(cfg):
    """Whether the run's loss differs from the negative ELBO (the importance-weighted bound of 1 sample is it)."""
    return cfg.beta != 1.0 or cfg.free_bits > 0 or (cfg.objective == "iwae" and cfg.num_importance_samples > 1)


def _loss_units(cfg):
    if likelihoods.is_density(cfg.likelihood, cfg.binarize):
        units = "nats per example"
    elif cfg.likelihood == "sse":
        units = "sum of squared error (not nats) + KL (nats)"
    else:
        units = f"{cfg.likelihood} cross-entropy of gray levels + KL nats (not a density: binarize the data for nats)"
    weights = [f"beta={cfg.beta:g}"] * (cfg.beta != 1.0) + [f"free_bits={cfg.free_bits:g}"] * (cfg.free_bits > 0)
    trained = ("minus the importance-weighted bound of "
               f"{cfg.num_importance_samples} samples" if cfg.objective == "iwae" and cfg.num_importance_samples > 1
               else "the objective trained")
    if _loss_is_not_the_elbo(cfg):
        units += (f"; loss is {trained}{' with ' + ', '.join(weights) if weights else ''}, not the negative ELBO, "
                  f"which is reconstruction + kl (negative_elbo in validation and test)")
    return units


def _empty_folder(folder):
    """Removes everything in `folder` but the folder itself, so a lock on it or a link to it stays; links inside are
    removed, not followed."""
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def _remove_with_empty_parents(folder, outermost):
    """Removes `folder`, then each folder above it up to `outermost` while it is empty: what was made for a run, and
    not another run started beside it meanwhile (runs/b when runs/ was made for runs/a)."""
    folder, outermost = os.path.abspath(folder), os.path.abspath(outermost)
    shutil.rmtree(folder, ignore_errors=True)
    while folder != outermost and folder.startswith(outermost + os.sep):
        folder = os.path.dirname(folder)
        try:
            os.rmdir(folder)
        except OSError:
            return  # Not empty: another run's too.


@contextlib.contextmanager
def hold_model_dir(model_dir):
    """Creates `model_dir` if needed and locks it while the block runs (an advisory `flock`, which also ends with the
    process, however it ends): another train.py on the same folder, such as an `--overwrite` or `--resume` in a second
    terminal of a run still going, is refused instead of deleting or mixing that run's files.

    Args:
      model_dir: the run folder.

    Raises:
      RunConfigError: another holder has it.
    """
    os.makedirs(model_dir, exist_ok=True)
    if fcntl is None:
        yield
        return
    fd = os.open(model_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunConfigError(f"--model_dir={model_dir} is in use by another train.py that is still running; wait "
                                 f"for it to end (or stop it), or pass another --model_dir") from None
        except OSError as e:  # E.g. NFS, whose emulated flock refuses an exclusive lock on a read-only folder.
            logging.warning("--model_dir=%s cannot be locked here (%s): nothing stops a second train.py on it",
                            model_dir, e.strerror)
        yield
    finally:
        os.close(fd)


def prepare_model_dir(cfg, data_record=None):
    """Clears `cfg.model_dir` if the flags ask, and writes the run's resolved flagfile into it, and `data_record`
    (`run`'s, of the data it reads) as DATA_RECORD_FILE. The folder itself is kept, so that the lock of
    `hold_model_dir` on it holds."""
    os.makedirs(cfg.model_dir, exist_ok=True)
    if cfg.overwrite:
        _empty_folder(cfg.model_dir)
    artifacts.write_text(os.path.join(cfg.model_dir, config.RUN_FLAGS_FILE), config.to_flagfile(cfg))
    if data_record:
        artifacts.write_json(os.path.join(cfg.model_dir, DATA_RECORD_FILE), data_record)


# What a run read: where from, and a fingerprint of its examples (data.fingerprint), which a --resume must match;
# the images' shape and an image folder's class names, which rebuilding the model from a checkpoint needs.
DATA_RECORD_FILE = "data.json"


def data_spec_of_run(cfg):
    """(image shape (H, W, C), class names) of the data of the run in `cfg.model_dir`: a named dataset's, or the
    image folder's as the run recorded them in DATA_RECORD_FILE.

    Raises:
      ValueError: an image-folder run whose record is missing or damaged, naming the fix.
    """
    if cfg.dataset != config.IMAGE_FOLDER:
        return data.DATASET_SHAPES[cfg.dataset], ()
    path = os.path.join(cfg.model_dir, DATA_RECORD_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            recorded = json.load(f)
        return tuple(int(size) for size in recorded["image_shape"]), tuple(recorded["class_names"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: cannot read the image folder's shape and classes ({type(e).__name__}); use the "
                         f"run's export (--saved_model), or re-run it") from None


def refuse_data_the_model_cannot_take(cfg, image_shape, class_names):
    """Raises data.DataError when an image folder's images do not fit the flags: a conditional model needs class
    folders, the autoregressive likelihood gray images (the named datasets are checked with the flags)."""
    if cfg.dataset != config.IMAGE_FOLDER:
        return
    if cfg.model == "cvae":
        data.refuse_unlabelled(cfg.dataset, class_names, cfg.data_dir, "--model=cvae learns from labels",
                               ", or pick another --model")
    if cfg.likelihood == "autoregressive_bernoulli" and image_shape[-1] != 1:
        raise data.DataError(f"--likelihood=autoregressive_bernoulli models single-channel images, and the images "
                             f"in {cfg.data_dir} are colour; use --likelihood=bernoulli, or gray images")


def _recorded_channels(cfg):
    """The channels of the image folder the run in `cfg.model_dir` recorded in DATA_RECORD_FILE; 1 without one."""
    if cfg.dataset != config.IMAGE_FOLDER:
        return 1
    try:
        return data_spec_of_run(cfg)[0][-1]
    except (ValueError, IndexError):  # No run yet, or a record without a shape.
        return 1


def check_resumed_data(cfg, data_record):
    """Raises RunConfigError when a --resume reads other examples than the run in `cfg.model_dir` trained on (another
    folder's files, or TFDS's order for the IDX files'): its epochs and validation curves would mix two datasets. The
    same files moved to another folder pass."""
    try:
        with open(os.path.join(cfg.model_dir, DATA_RECORD_FILE), encoding="utf-8") as f:
            recorded = json.load(f)
        recorded_print, recorded_source = recorded["fingerprint"], recorded["source"]
    except (OSError, ValueError, KeyError, TypeError):  # A run of a tfvae before 2026-12-04, or no run yet.
        return
    if recorded_print != data_record["fingerprint"] and recorded_source == data_record["source"]:
        raise RunConfigError(
            f"--resume reads {data_record['source']}, whose examples changed since the run in --model_dir="
            f"{cfg.model_dir} trained on them (files added, removed or edited); put them back as they were, or start "
            f"a new --model_dir")
    if recorded_print != data_record["fingerprint"]:
        raise RunConfigError(
            f"--resume reads {data_record['source']}, whose examples are not those the run in --model_dir="
            f"{cfg.model_dir} trained on ({recorded_source}); pass the --data_dir it trained from, or start a new "
            f"--model_dir")


def make_optimizer(cfg):
    # TF1's AdamOptimizer and Keras' Adam share the update rule; the default epsilon differs (1e-8 vs 1e-7), and
    # so does the rounding, which cfg.adam="tf1" matches (tfvae.optimizers.TF1Adam).
    optimizer = optimizers.make_adam(cfg.learning_rate, cfg.adam_epsilon, cfg.adam, cfg.clip_grad_norm)
    if cfg.mixed_precision == "mixed_float16":
        # float16 gradients underflow without loss scaling; bfloat16 has float32's range and needs none.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def gathers_in_step(cfg):
    """Whether the train step makes its own batches from index batches, instead of tf.data making them.

    On one CPU device without XLA, where it was measured faster: on 2 cores each op of a tf.data function costs
    tens of microseconds of thread hand-offs (docs/performance.md). GPUs, TPUs (which cannot read the host's
    arrays in a step), replicas and XLA keep tf.data's batches.
    """
    return cfg.strategy == "default" and not cfg.jit_compile and not tf.config.list_logical_devices("GPU")


def training_batches(model, datasets, cfg, first_step=0):
    """The dataset to `fit` `model` on for one epoch from `first_step`, by `gathers_in_step`.

    Either tf.data's batches or batches of indices, for which it sets `model.batch_from_indices`; the same batches
    either way (tests/test_vae.py).
    """
    if not gathers_in_step(cfg):
        return datasets.train_from(first_step=first_step)
    model.batch_from_indices = datasets.batch_from_indices
    return datasets.train_indices_from(first_step=first_step)


def compile_model(model, cfg):
    """Compiles `model` for training as `cfg` says, with the optimizer's variables created now.

    Created here, not during the first trace of the train step, where tf.function would have to trace it twice
    (once to create variables, once without) and wrap each initialiser in a conditional.
    """
    model.compile(optimizer=make_optimizer(cfg), jit_compile=cfg.jit_compile,
                  steps_per_execution=cfg.steps_per_execution)
    model.optimizer.build(model.trainable_variables)
    model.micro_batches = cfg.micro_batches


class EpochLine(keras.callbacks.Callback):
    """Prints the TF1 tutorial's per-epoch line, plus validation loss and speed.

    The epoch's seconds include its validation pass; its examples/s are the training steps' alone.
    """

    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = batch_size
        self.epoch_seconds = {}
        self._train_seconds = 0.0  # Not None: no epoch is running (an evaluate after fit calls on_test_begin).

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._steps = 0
        self._train_seconds = None

    def on_train_batch_end(self, batch, logs=None):
        # `batch` is the last step of a `steps_per_execution` call: the steps run so far this epoch, fewer than
        # a whole epoch's in a run resumed mid-epoch or stopped early.
        self._steps = min(batch + 1, self.params["steps"])

    def on_test_begin(self, logs=None):
        # Keras validates inside the epoch, after its training steps.
        if self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        train_seconds = seconds if self._train_seconds is None else self._train_seconds
        self._train_seconds = 0.0
        self.epoch_seconds[epoch + 1] = seconds
        logs = logs or {}
        logs["examples_per_second"] = self._steps * self.batch_size / train_seconds
        # Stopped inside the epoch (StopOnBadSteps): its numbers are those of the steps run.
        stopped = (f" (stopped after {self._steps} of {self.params['steps']} steps)"
                   if self._steps < self.params["steps"] else "")
        line = f"Epoch: {epoch + 1}{stopped} Total Loss: {logs['loss']:.4f}"
        if "val_loss" in logs:
            line += f" Validation Loss: {logs['val_loss']:.4f}"
        print(f"{line} ({seconds:.1f} s, {logs['examples_per_second']:.0f} examples/s)", flush=True)


class ImageSummaries(keras.callbacks.Callback):
    """Each epoch: a 4x4 grid decoded from a fixed z, and fixed originals above their reconstructions; for a
    restoration model (--corruption), the corrupted inputs above their restorations above the clean images, and for
    --corruption=mixed each kind of the mix in turn, one per column, named in the image's description. For an
    autoregressive likelihood, whose decoded grid is a mean-field image, also the grid drawn from p(x|z)."""

    def __init__(self, log_dir, image_shape, originals, seed, corruption_kind="none", corruption_strength=None,
                 data_labels=None):
        super().__init__()
        # What a label means ({"dataset", "class_names"}, as data.class_label reads them), for a conditional grid.
        self.data_labels = data_labels or {}
        self.writer = summaries.EventWriter(log_dir)
        self.image_shape = image_shape
        self.originals = originals
        self.seed = seed
        self.restoring = corruption_kind != "none"
        self.columns = None
        if corruption_kind == "mixed":  # The pipeline's draw could leave out a kind, or show some twice, unnamed.
            inputs, self.columns = corruption.corrupt_one_kind_each(
                originals["target"], corruption_strength, tf.constant([seed, 3], tf.int64), image_shape)
            self.originals = dict(originals, input=inputs)
        self._make_images = None

    def _images(self, z, labels, inputs, input_labels):
        """(the grid's images, the same drawn from p(x|z) or None, the reconstructions), in one tf.function: an
        autoregressive likelihood's 784-step raster pass took 2.6 s run eagerly, 0.05 s compiled."""
        model = self.model
        decoded = model.decode(z, labels)
        drawn = (model.likelihood.sample(decoded, tf.constant([self.seed, 4], tf.int64))
                 if model.likelihood.mean_field else None)
        return model.likelihood(decoded), drawn, model({"input": inputs, "label": input_labels})

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        classes = getattr(model, "num_classes", 0)
        sample_rows = classes or GRID_ROWS  # A conditional model's grid: one row per class.
        z = np.random.default_rng(self.seed).standard_normal((sample_rows * GRID_COLS, model.latent_dim))
        labels = (np.repeat(np.arange(sample_rows, dtype=np.int32), GRID_COLS) if classes
                  else np.zeros(len(z), np.int32))
        if self._make_images is None:
            self._make_images = tf.function(self._images)
        samples, drawn, reconstructions = self._make_images(tf.constant(z, tf.float32), tf.constant(labels),
                                                            self.originals["input"], self.originals["label"])
        as_images = lambda x: visualization.as_images(x, self.image_shape)  # noqa: E731
        if self.restoring:  # What the model is for: the corruption it sees, what it makes of it, the truth.
            tag, rows = "corrupted_over_restored_over_clean", [self.originals["input"], reconstructions,
                                                               self.originals["target"]]
        else:
            tag, rows = "originals_over_reconstructions", [self.originals["target"], reconstructions]
        tiles = np.concatenate([as_images(row) for row in rows])
        rows_named = ["One row per class, top to bottom: " + ", ".join(
            data.class_label(self.data_labels, c) for c in range(classes))] if classes else []
        mean_field = ["The mean-field images of the autoregressive p(x|z), not draws from it (samples_drawn "
                      "draws them)"] if drawn is not None else []
        with self.writer.as_default(step=epoch):  # Keras' epoch index, the step of its epoch scalars.
            tf.summary.image("samples", visualization.tile_images(as_images(samples), sample_rows, GRID_COLS)[None],
                             description=". ".join(rows_named + mean_field) or None)
            if drawn is not None:
                tf.summary.image("samples_drawn",
                                 visualization.tile_images(as_images(drawn), sample_rows, GRID_COLS)[None],
                                 description=". ".join(rows_named + ["Drawn from p(x|z) pixel by pixel (exact), from "
                                                                     "the z of samples, the same seed each epoch"]))
            tf.summary.image(tag, visualization.tile_images(tiles, len(rows), len(tiles) // len(rows))[None],
                             description=("Columns, left to right: " + ", ".join(self.columns)
                                          if self.columns else None))
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.close()


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback without the `evaluation_*_vs_iterations` scalars it writes after each validation:
    they repeat validation's `epoch_*` values at the optimizer step, an axis no other summary of a run uses."""

    def on_test_end(self, logs=None):
        self._pop_writer()  # What Keras' on_test_end does after writing them.


class TrainingInterrupted(Exception):
    """SIGTERM or SIGINT stopped training after a checkpoint was saved; `signal_number` says which."""

    def __init__(self, message, signal_number):
        super().__init__(message)
        self.signal_number = signal_number


class DataEpoch(keras.callbacks.Callback):
    """Points the training pipeline at the epoch Keras is about to run (`Datasets.train_epoch`)."""

    def __init__(self, epoch_variable):
        super().__init__()
        self.epoch_variable = epoch_variable

    # Keras 3 makes an epoch's iterator after on_epoch_begin, tf-keras before it but after the previous
    # on_epoch_end: setting it in both places serves both.
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_variable.assign(epoch)

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_variable.assign(epoch + 1)


class Checkpoints(keras.callbacks.Callback):
    """Saves the run's state through a tf.train.CheckpointManager, numbered by global train step: at each epoch
    end, every `every_steps` steps (0: never mid-epoch), and, after SIGTERM or SIGINT, at the next step boundary,
    which then stops training by raising TrainingInterrupted.

    Keeps `state.step` (train steps done) and `state.epoch` (epochs done) current; a step boundary is the end of
    one `steps_per_execution` call.
    """

    def __init__(self, manager, state, steps_per_epoch, every_steps, stopped_inside_epoch=None):
        super().__init__()
        self.manager = manager
        self.state = state
        self.steps_per_epoch = steps_per_epoch
        self.every_steps = every_steps
        # Whether fit was stopped inside the epoch (StopOnBadSteps), which is then not done; by default any stop,
        # but BestEpoch stops after a whole epoch.
        self.stopped_inside_epoch = stopped_inside_epoch or (lambda: self.model.stop_training)
        self.stop_signal = None  # Set by the signal handler; acted on at the next step boundary.
        self.signal_plan = None  # What the handler says will happen; None: the step-boundary stop.
        self._saved_step = int(state.step.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        # A resumed epoch runs only its remaining steps, params["steps"] of them.
        self._epoch_start = epoch * self.steps_per_epoch + self.steps_per_epoch - self.params["steps"]

    def on_train_batch_end(self, batch, logs=None):
        # `batch` is the last step of the execution; the last execution of an epoch may run fewer steps.
        step = self._epoch_start + min(batch + 1, self.params["steps"])
        self.state.step.assign(step)
        # An epoch's last step is saved at the epoch's end, just after: with the epoch counted and after validation
        # has drawn its noise from the sampling RNG, as a resumed run must find them.
        epoch_ends = not step % self.steps_per_epoch
        if self.every_steps and not epoch_ends and step // self.every_steps > self._saved_step // self.every_steps:
            self._save()
        if not epoch_ends:  # At an epoch's last step a signal waits for the epoch's end too.
            self.stop_if_signalled()

    def on_epoch_end(self, epoch, logs=None):
        if self.stopped_inside_epoch():  # It is not done.
            return
        self.state.epoch.assign(epoch + 1)
        self.state.step.assign((epoch + 1) * self.steps_per_epoch)
        self._save()
        self.stop_if_signalled()

    def _save(self):
        step = int(self.state.step.numpy())
        if step != self._saved_step:
            try:
                self.manager.save(checkpoint_number=step)
            except (OSError, tf.errors.OpError) as e:
                problem = cli.file_system_problem(e, where=self.manager.directory)
                if not problem:
                    raise
                # TensorFlow leaves the folder it was writing the checkpoint into.
                shutil.rmtree(os.path.join(self.manager.directory, f"ckpt-{step}_temp"), ignore_errors=True)
                last = self.manager.latest_checkpoint
                raise CheckpointError(
                    f"saving the checkpoint of step {step} failed: {problem}; "
                    + (f"the last good one is {last}: free some space, then run the same command with --resume"
                       if last else "free some space or pick another --model_dir, then run again with --overwrite"))
            self._saved_step = step

    def stop_if_signalled(self):
        """After a signal: saves (unless this step is saved) and raises TrainingInterrupted."""
        if self.stop_signal is None:
            return
        self._save()
        step = int(self.state.step.numpy())
        epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
        where = (f"after epoch {epoch}" if not step_in_epoch else
                 f"in epoch {epoch + 1}, step {step_in_epoch} of {self.steps_per_epoch}")
        raise TrainingInterrupted(
            f"stopped by {signal.Signals(self.stop_signal).name} at step {step} ({where}); checkpoint "
            f"{self.manager.latest_checkpoint} saved; run the same command with --resume to continue from there",
            self.stop_signal)


@contextlib.contextmanager
def defer_signals(target, plan="saving a checkpoint at the next step boundary, then stopping"):
    """While active, SIGTERM and SIGINT only set `target.stop_signal` (and print `target.signal_plan`, if set,
    else `plan`), for the code to act on at its next safe point (`Checkpoints`: the next step boundary) instead of
    dying mid-step or mid-write; a second signal acts as usual (SIGINT: KeyboardInterrupt, stop at once)."""
    if threading.current_thread() is not threading.main_thread():  # Only the main thread may set handlers.
        yield
        return
    handled = (signal.SIGTERM, signal.SIGINT)
    previous = {number: signal.getsignal(number) for number in handled}

    def handler(number, frame):
        target.stop_signal = number
        for other in handled:
            signal.signal(other, previous[other])
        note = (f"\n{signal.Signals(number).name}: {getattr(target, 'signal_plan', None) or plan} (send it again "
                f"to stop at once)\n")
        try:  # os.write, not print: a handler that prints while the interrupted code prints raises "reentrant call".
            os.write(sys.stdout.fileno(), note.encode())
        except (AttributeError, OSError, ValueError):  # A stdout without a file: a notebook's, pytest's capture.
            print(note, end="", flush=True)

    for number in handled:
        signal.signal(number, handler)
    try:
        yield
    finally:
        for number in handled:
            signal.signal(number, previous[number])


class RunConfigError(ValueError):
    """Flags that only the machine shows to be wrong (e.g. a batch that does not split over its replicas and
    micro-batches); the message names the fix."""


class CheckpointError(ValueError):
    """The run's checkpoint to resume from cannot be read."""


class TrainingDiverged(RuntimeError):
    """Too many non-finite train steps in a row; the message names the last good checkpoint and what to change."""


class StopOnBadSteps(keras.callbacks.Callback):
    """Stops fit after `max_bad_steps` skipped (non-finite) train steps in a row.

    The train step counts them (`VAE.bad_steps_in_a_row`), since Keras calls back once per `steps_per_execution`
    steps, and scattered skipped steps in one call are not in a row. The skipped steps never changed the weights,
    so the checkpoints written before are good; none is written for the unfinished epoch.
    """

    def __init__(self, max_bad_steps, steps_per_epoch=None):
        super().__init__()
        self.max_bad_steps = max_bad_steps
        self.steps_per_epoch = steps_per_epoch  # None: every epoch is whole (no mid-epoch resume).
        self.stopped_at = None  # (epoch, step of the epoch) of the call after which it stopped.

    def on_train_begin(self, logs=None):
        # What an earlier fit of the model saw is not this one's to judge; a run of skipped steps at its end still
        # goes on (`now`) if this fit's first steps are skipped too.
        self.model.bad_steps_in_a_row.longest.assign(0.0)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.model.bad_steps_in_a_row.longest.numpy() >= self.max_bad_steps:
            # A resumed epoch runs only its last params["steps"] steps; its batch 0 is that far into the epoch.
            steps = self.params["steps"]
            self.stopped_at = (self._epoch + 1, (self.steps_per_epoch or steps) - steps + min(batch + 1, steps))
            self.model.stop_training = True


def lowest_epoch(val_losses):
    """The index of the lowest finite value of `val_losses` (None where an epoch logged none), the first of equal
    ones, or None when there is none."""
    finite = [(value, epoch) for epoch, value in enumerate(val_losses) if value is not None and np.isfinite(value)]
    return min(finite)[1] if finite else None


def improving_epoch(val_losses, min_delta=0.0):
    """The index of the last epoch of `val_losses` that lowered the validation loss: went more than `min_delta`
    below the last epoch that did (Keras' EarlyStopping rule), or None when none has a finite loss.

    With `min_delta` 0 it is `lowest_epoch`. With more, a slow decline still counts once it adds up to `min_delta`.
    """
    improving, reference = None, None
    for epoch, value in enumerate(val_losses):
        if value is not None and np.isfinite(value) and (reference is None or value < reference - min_delta):
            improving, reference = epoch, value
    return improving


class BestEpoch(keras.callbacks.Callback):
    """--keep_best and --early_stopping_patience: after each epoch whose validation loss is the lowest yet, saves the
    weights to `best_manager` (when given); once `patience` epochs in a row have not lowered it (by more than
    `min_delta`, see `improving_epoch`), stops fit. The best weights are the lowest epoch's whatever `min_delta`.

    `val_losses` are those of the epochs before this fit (an earlier process of the run logged them), so a resumed
    run goes on counting. `epochs`, the run's --epochs: a run that trains them all has not stopped early.
    """

    def __init__(self, val_losses, patience, best_manager=None, epochs=None, min_delta=0.0):
        super().__init__()
        self.val_losses = list(val_losses)
        self.patience = patience
        self.min_delta = min_delta
        self.best_manager = best_manager
        self.epochs = epochs  # The run's --epochs: a run that trained them all did not stop early.
        self.stopped_after = None  # Epochs done when it stopped fit.

    def patience_ran_out(self):
        improving = improving_epoch(self.val_losses, self.min_delta)
        return (bool(self.patience) and improving is not None
                and len(self.val_losses) - 1 - improving >= self.patience
                and (self.epochs is None or len(self.val_losses) < self.epochs))

    def on_epoch_end(self, epoch, logs=None):
        if self.model.stop_training:  # StopOnBadSteps, inside the epoch: it has no validation loss.
            return
        self.val_losses = (self.val_losses + [None] * epoch)[:epoch] + [(logs or {}).get("val_loss")]
        if self.best_manager is not None and lowest_epoch(self.val_losses) == epoch:
            self.best_manager.save(checkpoint_number=epoch + 1)
        if self.patience_ran_out():
            self.stopped_after = epoch + 1
            self.model.stop_training = True

    def why_stopped(self):
        """Why the run stops after the epochs of `val_losses`, once `patience_ran_out`."""
        improving = improving_epoch(self.val_losses, self.min_delta)
        since = len(self.val_losses) - 1 - improving
        by = f" by more than {self.min_delta:g}" if self.min_delta else ""
        flags = f"--early_stopping_patience={self.patience}" + (
            f", --early_stopping_min_delta={self.min_delta:g}" if self.min_delta else "")
        return (f"the validation loss has not gone below epoch {improving + 1}'s {self.val_losses[improving]:.4f}{by} "
                f"in the {since} epoch{'s' if since > 1 else ''} since ({flags})")


def make_best_manager(model, cfg):
    """The CheckpointManager of --keep_best's weights (model_dir/best, the latest only), numbered by epoch.

    With the sampling RNG's state after that epoch: tested on them, the weights give the test numbers a run of that
    many epochs would, however many epochs followed.
    """
    return tf.train.CheckpointManager(tf.train.Checkpoint(model=model, rng=model.seed_generator.state),
                                      os.path.join(cfg.model_dir, config.BEST_DIR), max_to_keep=1)


def restore_best(best_manager, model, val_losses):
    """Reads --keep_best's weights into `model`. Returns (their epoch, the line that says so).

    Raises:
      CheckpointError: model_dir/best holds no checkpoint, or a damaged one.
    """
    path = best_manager.latest_checkpoint
    if path is None:
        raise CheckpointError(f"--keep_best: {best_manager.directory} holds no weights of a best epoch (removed?); "
                              f"export the latest checkpoint instead with python scripts/export.py --model_dir="
                              f"{os.path.dirname(best_manager.directory)}")
    try:
        best_manager.checkpoint.restore(path).assert_existing_objects_matched()
    except export.VARIABLE_READ_ERRORS as e:
        raise CheckpointError(f"--keep_best: cannot read {path} ({export.describe_read_error(e)}); export the latest "
                              f"checkpoint instead with python scripts/export.py --model_dir="
                              f"{os.path.dirname(best_manager.directory)}") from None
    model.repair_kl_weight()
    epoch = int(path.rsplit("-", 1)[1])
    loss = val_losses[epoch - 1] if epoch <= len(val_losses) and val_losses[epoch - 1] is not None else float("nan")
    return epoch, f"Testing and exporting the weights of epoch {epoch}, of the lowest validation loss ({loss:.4f})"


def kl_warmup_weight(epoch, warmup_epochs):
    """The KL weight (times beta) after `epoch` epochs (fractional) of a linear warm-up over `warmup_epochs`."""
    return min(1.0, epoch / warmup_epochs) if warmup_epochs > 0 else 1.0


class KLWarmup(keras.callbacks.Callback):
    """The linear KL warm-up: each train step's weight from the schedule; validation and test use weight 1.

    Driven by the epoch and step Keras reports, so a resumed run continues the schedule where it stopped. Keras
    calls back once per call of its multi-step loop, so this sets the line (`model.kl_warmup_line` at optimizer
    step 0 and `model.kl_weight_per_step`) and each step computes its own weight (`VAE.train_kl_weight`). The slope
    is read when the train step is traced: use the callback from the model's first `fit`. `model.kl_weight`, which
    validation and test use, stays 1.
    """

    def __init__(self, warmup_epochs, steps_per_epoch=None):
        super().__init__()
        self.warmup_epochs = warmup_epochs
        self.steps_per_epoch = steps_per_epoch  # None: every epoch is whole (no mid-epoch resume).
        self._epoch = 0

    def _steps_per_epoch(self):
        return self.steps_per_epoch or self.params["steps"]

    def on_train_begin(self, logs=None):
        self.model.kl_weight_per_step = 1.0 / (self.warmup_epochs * self._steps_per_epoch())

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        # A resumed epoch runs only its last params["steps"] steps; its batch 0 is that far into the epoch.
        steps_per_epoch = self._steps_per_epoch()
        step = steps_per_epoch - self.params["steps"] + batch
        weight = kl_warmup_weight(self._epoch + step / steps_per_epoch, self.warmup_epochs)
        # Where the line through this step's weight crosses optimizer step 0 (a skipped step does not advance it).
        iterations = float(self.model.optimizer.iterations.numpy())
        self.model.kl_warmup_line.at_step_zero.assign(weight - self.model.kl_weight_per_step * iterations)

    def on_train_batch_end(self, batch, logs=None):
        traced = self.model.traced_kl_weight_per_step
        if traced is not None and traced != self.model.kl_weight_per_step:
            raise RuntimeError("the train step was traced in an earlier fit without KLWarmup, so it ignores the "
                               "warm-up's slope; pass KLWarmup to the model's first fit")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:  # The weight of the epoch's last step.
            logs["kl_weight"] = kl_warmup_weight(epoch + 1 - 1 / self._steps_per_epoch(), self.warmup_epochs)

    def on_train_end(self, logs=None):
        self.model.kl_weight_per_step = 0.0


@dataclasses.dataclass(frozen=True)
class TrainState:
    """Where a run is, as int64 variables saved in its checkpoints: train steps done and epochs done."""

    step: tf.Variable
    epoch: tf.Variable


def make_checkpoint_manager(model, cfg):
    """Returns (manager, state) for `model_dir/checkpoints`.

    A checkpoint holds the model, the optimizer (with its step count and Adam moments), the model's sampling RNG
    state, and `state`: `step` (train steps done) and `epoch` (epochs done). With the training pipeline a pure
    function of (seed, epoch, step) (`data.make_train_pipeline`), `step` is the data position too.
    """
    state = TrainState(step=tf.Variable(0, dtype=tf.int64, trainable=False, name="step"),
                       epoch=tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch"))
    manager = tf.train.CheckpointManager(_run_checkpoint(model, state),
                                         os.path.join(cfg.model_dir, config.CHECKPOINTS_DIR),
                                         max_to_keep=cfg.keep_checkpoints)
    return manager, state


TRAIN_METRICS_KEY = "train_metrics"  # Where a run's checkpoints hold the train metrics' variables.


def _train_metrics(model):
    return {metric.name: list(metric.variables) for metric in model.metrics}


def _run_checkpoint(model, state, train_metrics=True):
    # Keras 3 does not track a SeedGenerator's state for tf.train.Checkpoint; named here, the eps of a resumed
    # run are those the uninterrupted run would have drawn.
    objects = dict(model=model, optimizer=model.optimizer, epoch=state.epoch, step=state.step,
                   rng=model.seed_generator.state)
    if train_metrics:  # Saved inside an epoch, the sums of its steps so far (ResumedEpochMetrics).
        objects[TRAIN_METRICS_KEY] = _train_metrics(model)
    return tf.train.Checkpoint(**objects)


class ResumedEpochMetrics(keras.callbacks.Callback):
    """A run resumed inside an epoch: puts back the train metrics' sums of the epoch's steps before the checkpoint
    `path`, which fit has just reset, so that the epoch's train loss is that of all its steps, as the uninterrupted
    run logs it, not of the steps after the resume alone."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_begin(self, epoch, logs=None):
        if self.path:  # Read through the checkpoint, which knows how to spread a sum over replicas.
            tf.train.Checkpoint(**{TRAIN_METRICS_KEY: _train_metrics(self.model)}).read(
                self.path).expect_partial().assert_existing_objects_matched()
            self.path = None  # The resumed epoch only.


def restore_checkpoint(manager, model, state, steps_per_epoch):
    """Restores the latest checkpoint of `manager`; every object of the run must be in it. Returns whether it
    holds the train metrics' sums (tfvae wrote none before, and an epoch resumed from such a checkpoint logs the
    train loss of its steps after the resume).

    Raises:
      CheckpointError: the checkpoint is damaged or does not fit the model.
    """
    path = manager.latest_checkpoint
    try:
        names = {name.split("/")[0] for name, _ in tf.train.list_variables(path)}
        if TRAIN_METRICS_KEY in names:
            manager.checkpoint.restore(path).assert_existing_objects_matched()
        elif "step" in names:
            _run_checkpoint(model, state, train_metrics=False).restore(path).assert_existing_objects_matched()
        else:  # Written by tfvae before checkpoints held the step and RNG state: only at epoch ends.
            tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=state.epoch).restore(
                path).assert_existing_objects_matched()
            state.step.assign(state.epoch * steps_per_epoch)
        model.repair_kl_weight()
    except export.VARIABLE_READ_ERRORS as e:
        fix = ("start a new --model_dir, or put back an intact copy of that checkpoint" if export.is_damaged(e) else
               f"resume with the flags the run was trained with (--flagfile="
               f"{os.path.join(os.path.dirname(manager.directory), 'flags.txt')}), or start a new --model_dir")
        raise CheckpointError(f"--resume: cannot read {path} ({export.describe_read_error(e)}); {fix}") from None
    return TRAIN_METRICS_KEY in names


def export_metadata(cfg, image_shape, model=None, class_names=()):
    """What an export needs to be used alone: shapes, latent size, likelihood, an image folder's class names, and
    the run's config.

    Without `model`, a run's description from its flags alone (restore.load_run_files)."""
    num_classes = getattr(model, "num_classes", 0) if model is not None else (
        data.num_classes(cfg.dataset, class_names) if cfg.model == "cvae" else 0)
    input_shape = [int(np.prod(image_shape))] if cfg.flatten_inputs else list(image_shape)
    return {
        "model": cfg.model,
        "input_shape": input_shape,
        "image_shape": list(image_shape),
        "latent_dim": cfg.latent_dim,
        "likelihood": cfg.likelihood,
        "likelihood_is_density": likelihoods.is_density(cfg.likelihood, cfg.binarize),
        "binarize": cfg.binarize,
        "corruption": cfg.corruption,
        "corruption_strength": cfg.corruption_strength,
        "dataset": cfg.dataset,
        "num_classes": num_classes,
        **({"class_names": list(class_names)} if class_names else {}),
        "config": dataclasses.asdict(cfg),
    }


def train(model, datasets, cfg):
    """Trains `model` on `datasets` as `cfg` says, writing everything under `cfg.model_dir`.

    Returns:
      The metrics dict also written to `model_dir/metrics.json`: per-epoch history, final test metrics (nats
      per example for densities), seconds and examples per second.
    """
    compile_model(model, cfg)
    steps_per_epoch = len(datasets.arrays.train_images) // cfg.batch_size
    resume_line = None
    manager, state = make_checkpoint_manager(model, cfg)
    resumed_metrics = None  # The checkpoint whose train metrics a resumed epoch starts from.
    if cfg.resume and manager.latest_checkpoint:
        if restore_checkpoint(manager, model, state, steps_per_epoch):
            resumed_metrics = manager.latest_checkpoint
        # The flags, not the checkpoint, say the learning rate: a run that diverged resumes with a lower one.
        model.optimizer.learning_rate = cfg.learning_rate
        epoch, step_in_epoch = divmod(int(state.step.numpy()), steps_per_epoch)
        if epoch > cfg.epochs or (epoch == cfg.epochs and step_in_epoch):
            # Tested and exported as it is, it would be recorded as a run of --epochs, which it is not.
            trained = f"{epoch} epochs" + (f" and {step_in_epoch} steps" if step_in_epoch else "")
            raise RunConfigError(
                f"--epochs={cfg.epochs} is fewer than the run in --model_dir={cfg.model_dir} has trained ({trained}); "
                f"pass --epochs={epoch + bool(step_in_epoch)} or more to resume it, or export it as it is with "
                f"python scripts/export.py --model_dir={cfg.model_dir}")
        if epoch >= cfg.epochs:  # Stopped after its last step, before the test pass and export.
            done = "its epoch is done" if epoch == 1 else f"its {epoch} epochs are done"
            print(f"Resuming from {manager.latest_checkpoint}: {done}; testing and exporting", flush=True)
        else:  # Said once the history tells whether it had stopped early.
            resume_line = (f"Resuming from {manager.latest_checkpoint} at epoch {epoch + 1}"
                           + (f", step {step_in_epoch + 1} of {steps_per_epoch}" if step_in_epoch else ""))
    elif cfg.resume:  # The same command for the first start and every restart (a preemptible job) stays valid.
        print(f"--resume: no checkpoint in {manager.directory} yet; starting at step 0", flush=True)
    if not (cfg.resume and manager.latest_checkpoint) and (cfg.init_from or cfg.init_from_tf1):
        from tfvae import legacy

        print(legacy.initialize_model(model, init_from=cfg.init_from, init_from_tf1=cfg.init_from_tf1,
                                      dataset=cfg.dataset, image_shape=datasets.image_shape), flush=True)
        # Adam's state read from the source holds its run's learning rate; this run's flags say this run's.
        model.optimizer.learning_rate = cfg.learning_rate
    initial_epoch, first_step = divmod(int(state.step.numpy()), steps_per_epoch)
    first_epoch = initial_epoch
    # Read before this process's epochs are logged: a resumed run's metrics.json and export keep the whole curves.
    earlier_history = summaries.history_before(cfg.model_dir, first_epoch) if first_epoch else {}
    best_manager = make_best_manager(model, cfg) if cfg.keep_best else None
    best_epoch = BestEpoch(earlier_history.get("val_loss", [None] * first_epoch), cfg.early_stopping_patience,
                           best_manager, cfg.epochs, cfg.early_stopping_min_delta)
    if resume_line and best_epoch.patience_ran_out() and not first_step:
        resume_line = (f"Resuming from {manager.latest_checkpoint}: {best_epoch.why_stopped()}; testing and "
                       f"exporting")
    if resume_line:
        print(resume_line, flush=True)
    if cfg.resume:  # What an earlier process logged past the checkpoint is logged again from here.
        removed = summaries.drop_epochs_from(cfg.model_dir, first_epoch)
        if removed:
            print(f"TensorBoard: removed the {removed} events an earlier process logged for epoch {first_epoch + 1} "
                  f"on and for the test, which this one logs again", flush=True)
    earlier_epoch_seconds = summaries.epoch_seconds_before(cfg.model_dir) if first_epoch else {}

    epoch_line = EpochLine(cfg.batch_size)
    stop_on_bad_steps = StopOnBadSteps(cfg.max_bad_steps, steps_per_epoch)
    checkpoints = Checkpoints(manager, state, steps_per_epoch, cfg.checkpoint_every_steps,
                              stopped_inside_epoch=lambda: stop_on_bad_steps.stopped_at is not None)
    tensorboard = EpochTensorBoard(log_dir=cfg.model_dir, write_graph=False, profile_batch=0)
    callbacks = [
        stop_on_bad_steps,  # Before Checkpoints: a diverged epoch is stopped, not checkpointed as done.
        DataEpoch(datasets.train_epoch),
        epoch_line,  # Before TensorBoard, so the speed it adds to the logs reaches TensorBoard.
        tensorboard,
    ]
    if cfg.kl_warmup_epochs:
        callbacks.insert(0, KLWarmup(cfg.kl_warmup_epochs, steps_per_epoch))
    if cfg.image_summaries:
        callbacks.append(ImageSummaries(os.path.join(cfg.model_dir, "images"), datasets.image_shape,
                                        datasets.preview, cfg.seed, cfg.corruption, cfg.corruption_strength,
                                        {"dataset": cfg.dataset, "class_names": datasets.arrays.class_names}))
    callbacks += summaries.make_callbacks(cfg, datasets)  # KL histograms, active units, HParams.
    if cfg.keep_best or cfg.early_stopping_patience:
        # Before Checkpoints: a signal stops fit in its epoch end, and the epoch's best weights are saved first.
        callbacks.append(best_epoch)
    callbacks.append(checkpoints)  # Last: at an epoch end it saves, and may stop, after the others logged it.
    verbose = 1 if sys.stdout.isatty() else 0
    if verbose:
        # Keras appends its own progress bar after these, which would end its epoch's line after the tutorial's
        # line had been printed onto it; first, it ends its line before.
        callbacks.insert(0, keras.callbacks.ProgbarLogger())
    fit_args = dict(
        validation_data=datasets.validation if cfg.validation_size else None,
        callbacks=callbacks,
        shuffle=False,  # The pipeline shuffles, seeded.
        verbose=verbose,
    )
    # One fit over the remaining epochs; Keras iterates `datasets.train` afresh each epoch and DataEpoch points it
    # at that epoch. A run resumed mid-epoch first finishes that epoch in its own fit, over the pipeline from the
    # checkpoint's step: Keras has no "initial step", and its epochs must all have the same number of batches.
    history = {}
    start = time.perf_counter()
    # Signals wait for a safe point: a step boundary while training, then the end of the test pass and its
    # logs, so an interrupted run has a whole metrics.json or none.
    with defer_signals(checkpoints):
        try:
            # DataEpoch sets the epoch for the epochs after the first; tf-keras makes the first one's iterator
            # before any callback runs.
            # Resumed after it stopped early, or with a patience that has run out since its best epoch.
            if best_epoch.patience_ran_out() and not first_step:
                best_epoch.stopped_after = initial_epoch
            if first_step and initial_epoch < cfg.epochs:
                datasets.train_epoch.assign(initial_epoch)
                partial = model.fit(training_batches(model, datasets, cfg, first_step), initial_epoch=initial_epoch,
                                    epochs=initial_epoch + 1, **dict(
                                        fit_args, callbacks=[ResumedEpochMetrics(resumed_metrics), *callbacks]))
                history = dict(partial.history)
                initial_epoch += 1
            if (initial_epoch < cfg.epochs and stop_on_bad_steps.stopped_at is None
                    and best_epoch.stopped_after is None):
                datasets.train_epoch.assign(initial_epoch)
                rest = model.fit(training_batches(model, datasets, cfg), initial_epoch=initial_epoch,
                                 epochs=cfg.epochs, **fit_args)
                for name, values in rest.history.items():
                    history[name] = history.get(name, []) + list(values)
            checkpoints.stop_if_signalled()  # A signal after the last step: the final checkpoint is saved.
        except TrainingInterrupted:
            tensorboard.on_train_end()  # Flushes and closes the event files fit would have closed.
            raise
        train_seconds = time.perf_counter() - start
        checkpoints.signal_plan = "finishing the test pass and metrics.json, then stopping (--resume exports)"
        if stop_on_bad_steps.stopped_at is not None:
            epoch, step = stop_on_bad_steps.stopped_at
            raise TrainingDiverged(
                f"{cfg.max_bad_steps} train steps in a row had a non-finite loss or gradient (by step {step} of "
                f"epoch {epoch}) and were skipped; the weights never saw them and "
                + (f"the last good checkpoint is {manager.latest_checkpoint}; lower --learning_rate, set "
                   f"--clip_grad_norm, or check the data, then --resume" if manager.latest_checkpoint else
                   "no checkpoint was saved yet; lower --learning_rate, set --clip_grad_norm, or check the data, "
                   "then start again with --overwrite"))
        last_epoch = best_epoch.stopped_after or cfg.epochs  # The epochs the run trained, all told.
        if best_epoch.stopped_after is not None and best_epoch.stopped_after > first_epoch:  # Not said on resume.
            print(f"Stopped early after epoch {best_epoch.stopped_after}: {best_epoch.why_stopped()}", flush=True)
        tested_epoch = last_epoch
        if cfg.keep_best:
            tested_epoch, line = restore_best(best_manager, model, best_epoch.val_losses)
            print(line, flush=True)
        test_metrics = model.evaluate(datasets.test, verbose=0, return_dict=True)
        order = ["loss", "reconstruction", "kl"]  # The tutorial's order, whatever order Keras returns them in.
        # The negative ELBO only where it is not the loss printed first (metrics.json and TensorBoard always have it).
        hidden = [] if _loss_is_not_the_elbo(cfg) else ["negative_elbo"]
        names = [k for k in order if k in test_metrics] + sorted(k for k in test_metrics if k not in order + hidden)
        print("Test " + " ".join(f"{k}: {test_metrics[k]:.4f}" for k in names), flush=True)
        summaries.write_test_metrics(cfg.model_dir, test_metrics, step=tested_epoch - 1)  # That epoch's step.
        if cfg.image_summaries:
            summaries.write_projector(os.path.join(cfg.model_dir, summaries.PROJECTOR_DIR), model, datasets.test,
                                      *datasets.arrays.split("test"))
        epochs_run = list(range(first_epoch + 1, last_epoch + 1))
        whole_history = {name: earlier_history.get(name, [None] * first_epoch)
                         + list(history.get(name, [None] * len(epochs_run)))
                         for name in {*earlier_history, *history}}
        metrics = {
            # Epochs 1..epochs, those before a resume included (None: not logged then).
            "history": {k: [None if v is None else float(v) for v in values]
                        for k, values in whole_history.items()},
            "epochs_run": epochs_run,  # The epochs this process ran.
            # Theirs, and those an earlier process of the run timed and kept in its metrics.json.
            "epoch_seconds": dict(sorted({**earlier_epoch_seconds, **epoch_line.epoch_seconds}.items())),
            "test": {k: float(v) for k, v in test_metrics.items()},
            "tested_epoch": tested_epoch,  # Whose weights were tested and exported: the last, or with --keep_best.
            **({"stopped_early_after_epoch": best_epoch.stopped_after} if best_epoch.stopped_after else {}),
            "train_seconds": train_seconds,  # This process's training, over epochs_run.
            "units": _loss_units(cfg),
        }
        artifacts.write_json(os.path.join(cfg.model_dir, "metrics.json"), metrics)
        checkpoints.stop_if_signalled()  # Before the export; --resume then tests and exports again.
    return metrics


def set_precision_policy(cfg):
    """Sets Keras' global policy to `cfg.mixed_precision`; models built afterwards compute in it."""
    keras.mixed_precision.set_global_policy("float32" if cfg.mixed_precision == "none" else cfg.mixed_precision)
    if cfg.mixed_precision == "mixed_float16" and not tf.config.list_physical_devices("GPU"):
        # What float16 costs on a CPU depends on the CPU: an epoch of the pytorch_tutorial recipe took 198 s against
        # 2.6 s in float32 on an earlier AVX-512 host, 4.9 s against 4.3 s on an AVX2 AMD EPYC.
        logging.warning("--mixed_precision=mixed_float16 without a GPU: on some CPUs float16 runs ~75x slower than "
                        "float32, and so would this export; compare one epoch with --mixed_precision=none first")


def set_thread_pools(cfg):
    """Sizes TensorFlow's op thread pools as `cfg` says (0: TensorFlow's default, one thread per core).

    Pools can only be sized before TensorFlow's runtime starts; in a process where it already runs (a second
    training in one Python session) they stay as they are, with a warning.
    """
    for pool, threads in (("intra_op", cfg.intra_op_threads), ("inter_op", cfg.inter_op_threads)):
        try:
            getattr(tf.config.threading, f"set_{pool}_parallelism_threads")(threads)
        except RuntimeError:
            current = getattr(tf.config.threading, f"get_{pool}_parallelism_threads")()
            logging.warning("--%s_threads=%d ignored: TensorFlow already runs in this process, with %d", pool,
                            threads, current)


def run(cfg):
    """The whole job of `scripts/train.py`: data, model, training, export. Returns the metrics."""
    from tfvae import legacy  # Local import keeps `--help` fast.
    from tfvae.models import build_model

    changes = config.resume_changes(cfg) if cfg.resume else []
    if changes:
        checkpoints = os.path.join(cfg.model_dir, config.CHECKPOINTS_DIR)
        latest = tf.train.latest_checkpoint(checkpoints) or os.path.join(checkpoints, "ckpt-STEP")
        raise RunConfigError(
            f"--resume continues the run in --model_dir={cfg.model_dir} as its {config.RUN_FLAGS_FILE} says, and "
            f"these flags change what it is: {', '.join(changes)}; resume without them, or start a new --model_dir "
            f"with --init_from={latest} to train on from its weights")
    set_thread_pools(cfg)
    if cfg.cpu_devices > 1:
        distribute.split_cpu(cfg.cpu_devices)
    set_precision_policy(cfg)
    strategy = distribute.make_strategy(cfg.strategy, cfg.tpu)
    replicas = strategy.num_replicas_in_sync
    # Unequal shares would weigh examples unequally: each replica's loss is its mean over the replica count.
    if cfg.batch_size % (replicas * cfg.micro_batches):
        split = (f"into --micro_batches={cfg.micro_batches} equal parts on each" if cfg.micro_batches > 1
                 else "evenly")
        raise RunConfigError(f"--batch_size={cfg.batch_size} over {replicas} replicas does not split {split}; pass "
                             f"a --batch_size that is a multiple of {replicas * cfg.micro_batches}"
                             + (", or --micro_batches=1" if cfg.micro_batches > 1 else ""))
    chief = distribute.is_chief(strategy)
    keras.utils.set_random_seed(cfg.seed)  # Python, NumPy and TF: initialisation; the data has its own seeds.
    if cfg.deterministic:
        # Also makes TF's kernels pick deterministic algorithms (e.g. reductions on GPU), at some speed cost.
        tf.config.experimental.enable_op_determinism()
    # A resumed image-folder run reads its folder with the channels it trained on: tfvae before 2026-12-05 read a
    # gray GIF as three equal channels.
    channels = _recorded_channels(cfg) if cfg.resume else 1
    datasets = data.make_datasets(cfg, channels=channels)  # A restoration model's corrupted as cfg says.
    class_names = datasets.arrays.class_names
    refuse_data_the_model_cannot_take(cfg, datasets.image_shape, class_names)
    data_record = {"source": data.describe_source(cfg.dataset, cfg.data_dir),
                   "fingerprint": data.fingerprint(datasets.arrays),
                   "image_shape": list(datasets.image_shape), "class_names": list(class_names)}
    if cfg.resume:
        check_resumed_data(cfg, data_record)
    # Every worker takes part in saving (it can involve collectives); only the chief's files are kept.
    run_cfg = cfg if chief else dataclasses.replace(cfg, model_dir=tempfile.mkdtemp(prefix="tfvae-worker-"))
    fresh_run = cfg.overwrite or not os.path.isdir(run_cfg.model_dir) or not os.listdir(run_cfg.model_dir)
    created = artifacts.first_missing_folder(run_cfg.model_dir)  # What hold_model_dir will create, if anything.
    flags_file = os.path.join(run_cfg.model_dir, config.RUN_FLAGS_FILE)
    # A --resume refused for its checkpoint leaves the run's record of its own flags as it was.
    resumed_flags = None
    if cfg.resume and os.path.isfile(flags_file):
        with open(flags_file) as f:
            resumed_flags = f.read()
    try:
        with hold_model_dir(run_cfg.model_dir):
            try:
                prepare_model_dir(run_cfg, data_record)
                with strategy.scope():
                    model = build_model(cfg, datasets.image_shape, data.num_classes(cfg.dataset, class_names))
                    metrics = train(model, datasets, run_cfg)
            except (legacy.TF1ImportError, KeyboardInterrupt, cli.Terminated):
                # Stopped before its first checkpoint (an --init_from that does not fit, a Ctrl-C while it starts;
                # once training runs, Ctrl-C saves one): leave no run folder behind, so the same command, corrected
                # if need be, is not refused for an existing one.
                checkpoints = os.path.join(run_cfg.model_dir, config.CHECKPOINTS_DIR)
                if fresh_run and not tf.train.latest_checkpoint(checkpoints):
                    if created:
                        _remove_with_empty_parents(run_cfg.model_dir, created)
                    else:
                        _empty_folder(run_cfg.model_dir)  # It was there, empty (or emptied by --overwrite).
                raise
            except (CheckpointError, RunConfigError):
                if resumed_flags is not None:
                    artifacts.write_text(flags_file, resumed_flags)
                raise
            export_dir = cfg.export_dir if chief else os.path.join(run_cfg.model_dir, "export")
            # Runs of a sweep may share an --export_dir: the last one stands, so say whose export it replaces.
            replaced = export.describe_other_export(export_dir, cfg.model_dir) if chief else None
            # A signal now would leave a half-written export folder beside the old one: the export finishes first.
            late = types.SimpleNamespace(stop_signal=None)
            with defer_signals(late, plan="finishing the export first"):
                try:
                    path = export.export_saved_model(model, export_dir,
                                                     export_metadata(cfg, datasets.image_shape, model,
                                                                     class_names),
                                                     extra_json={"metrics.json": metrics})
                except (OSError, tf.errors.OpError) as e:
                    problem = cli.file_system_problem(e, where=f"--export_dir={export_dir}")
                    if not problem:
                        raise
                    raise export.ExportError(
                        f"{problem}; the run itself is complete and {cfg.model_dir} "
                        f"keeps its checkpoints: free some space or pick another folder, then python "
                        f"scripts/export.py --model_dir={cfg.model_dir} --export_dir=PATH") from e
    finally:
        if not chief:
            shutil.rmtree(run_cfg.model_dir, ignore_errors=True)
    if chief:
        print(f"Exported SavedModel to {path}", flush=True)
        if replaced:
            print(f"It replaced {replaced}; pass --export_dir=PATH to keep both", flush=True)
    if late.stop_signal is not None:
        print(f"{signal.Signals(late.stop_signal).name} came during the export, which finished first; the run is "
              f"complete", file=sys.stderr, flush=True)
    return metrics
