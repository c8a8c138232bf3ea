"""One training run: run folder, Keras fit with callbacks, checkpoints, TensorBoard, metrics and export."""

import dataclasses
import os
import shutil
import sys
import tempfile
import time

from tfvae.compat import keras
import numpy as np
import tensorflow as tf

from tfvae import artifacts, config, distribute, export, optimizers, summaries, visualization

GRID_ROWS = GRID_COLS = 4


def prepare_model_dir(cfg):
    """Creates or clears `cfg.model_dir` as the flags ask, and writes the run's resolved flagfile into it."""
    if cfg.overwrite and os.path.exists(cfg.model_dir):
        shutil.rmtree(cfg.model_dir)
    os.makedirs(cfg.model_dir, exist_ok=True)
    artifacts.write_text(os.path.join(cfg.model_dir, "flags.txt"), config.to_flagfile(cfg))


def make_optimizer(cfg):
    # TF1's AdamOptimizer and Keras' Adam share the update rule; the default epsilon differs (1e-8 vs 1e-7), and
    # so does the rounding, which cfg.adam="tf1" matches (tfvae.optimizers.TF1Adam).
    optimizer = optimizers.make_adam(cfg.learning_rate, cfg.adam_epsilon, cfg.adam)
    if cfg.mixed_precision == "mixed_float16":
        # float16 gradients underflow without loss scaling; bfloat16 has float32's range and needs none.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def compile_model(model, cfg):
    """Compiles `model` for training as `cfg` says, with the optimizer's variables created now.

    Created here, not during the first trace of the train step, where tf.function would have to trace it twice
    (once to create variables, once without) and wrap each initialiser in a conditional.
    """
    model.compile(optimizer=make_optimizer(cfg), jit_compile=cfg.jit_compile,
                  steps_per_execution=cfg.steps_per_execution)
    model.optimizer.build(model.trainable_variables)


class EpochLine(keras.callbacks.Callback):
    """Prints the TF1 tutorial's per-epoch line, plus validation loss and speed."""

    def __init__(self, examples_per_epoch):
        super().__init__()
        self.examples_per_epoch = examples_per_epoch
        self.epoch_seconds = {}

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        self.epoch_seconds[epoch + 1] = seconds
        logs = logs or {}
        logs["examples_per_second"] = self.examples_per_epoch / seconds
        line = f"Epoch: {epoch + 1} Total Loss: {logs['loss']:.4f}"
        if "val_loss" in logs:
            line += f" Validation Loss: {logs['val_loss']:.4f}"
        print(f"{line} ({seconds:.1f} s, {logs['examples_per_second']:.0f} examples/s)", flush=True)


class ImageSummaries(keras.callbacks.Callback):
    """Each epoch: a 4x4 grid decoded from a fixed z, and fixed originals above their reconstructions."""

    def __init__(self, log_dir, image_shape, originals, seed):
        super().__init__()
        self.writer = tf.summary.create_file_writer(log_dir)
        self.image_shape = image_shape
        self.originals = originals
        self.seed = seed

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        z = np.random.default_rng(self.seed).standard_normal((GRID_ROWS * GRID_COLS, model.latent_dim))
        labels = np.arange(GRID_ROWS * GRID_COLS, dtype=np.int32) % max(getattr(model, "num_classes", 1), 1)
        samples = model.likelihood(model.decode(tf.constant(z, tf.float32), tf.constant(labels)))
        reconstructions = model({"input": self.originals["input"], "label": self.originals["label"]})
        as_images = lambda x: visualization.as_images(x, self.image_shape)  # noqa: E731
        pairs = np.concatenate([as_images(self.originals["target"]), as_images(reconstructions)])
        with self.writer.as_default(step=epoch + 1):
            tf.summary.image("samples", visualization.tile_images(as_images(samples), GRID_ROWS, GRID_COLS)[None])
            tf.summary.image("originals_over_reconstructions",
                             visualization.tile_images(pairs, 2, len(pairs) // 2)[None])
        self.writer.flush()


class CheckpointEachEpoch(keras.callbacks.Callback):
    """Saves model, optimizer and the next epoch to start from through a tf.train.CheckpointManager."""

    def __init__(self, manager, epoch_variable):
        super().__init__()
        self.manager = manager
        self.epoch_variable = epoch_variable

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_variable.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)


def kl_warmup_weight(epoch, warmup_epochs):
    """The KL weight (times beta) after `epoch` epochs (fractional) of a linear warm-up over `warmup_epochs`."""
    return min(1.0, epoch / warmup_epochs) if warmup_epochs > 0 else 1.0


class KLWarmup(keras.callbacks.Callback):
    """Sets `model.kl_weight` before each train step from the linear schedule; validation and test use weight 1.

    Driven by the epoch and step Keras reports, so a resumed run continues the schedule where it stopped.
    """

    def __init__(self, warmup_epochs):
        super().__init__()
        self.warmup_epochs = warmup_epochs
        self._epoch = 0
        self._train_weight = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        steps = self.params.get("steps") or 1
        self._train_weight = kl_warmup_weight(self._epoch + batch / steps, self.warmup_epochs)
        self.model.kl_weight.assign(self._train_weight)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["kl_weight"] = self._train_weight

    # Validation inside fit reports the objective the run is heading for, comparable across epochs.
    def on_test_begin(self, logs=None):
        self.model.kl_weight.assign(1.0)

    def on_test_end(self, logs=None):
        self.model.kl_weight.assign(self._train_weight)

    def on_train_end(self, logs=None):
        self.model.kl_weight.assign(1.0)


def make_checkpoint_manager(model, cfg):
    """Returns (manager, epoch variable) tracking model, optimizer and epoch under `model_dir/checkpoints`."""
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(cfg.model_dir, "checkpoints"),
                                         max_to_keep=cfg.keep_checkpoints)
    return manager, epoch


def export_metadata(cfg, image_shape, model):
    """What an export needs to be used alone: shapes, latent size, likelihood, and the run's config."""
    input_shape = [int(np.prod(image_shape))] if cfg.flatten_inputs else list(image_shape)
    return {
        "model": cfg.model,
        "input_shape": input_shape,
        "image_shape": list(image_shape),
        "latent_dim": cfg.latent_dim,
        "likelihood": cfg.likelihood,
        "likelihood_is_density": model.likelihood.is_density,
        "binarize": cfg.binarize,
        "corruption": cfg.corruption,
        "corruption_strength": cfg.corruption_strength,
        "dataset": cfg.dataset,
        "num_classes": getattr(model, "num_classes", 0),
        "config": dataclasses.asdict(cfg),
    }


def train(model, datasets, cfg):
    """Trains `model` on `datasets` as `cfg` says, writing everything under `cfg.model_dir`.

    Returns:
      The metrics dict also written to `model_dir/metrics.json`: per-epoch history, final test metrics (nats
      per example for densities), seconds and examples per second.
    """
    compile_model(model, cfg)
    manager, epoch_variable = make_checkpoint_manager(model, cfg)
    if cfg.resume and manager.latest_checkpoint:
        manager.checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        print(f"Resuming from {manager.latest_checkpoint} at epoch {int(epoch_variable.numpy()) + 1}", flush=True)
    elif cfg.init_from or cfg.init_from_tf1:
        from tfvae import legacy

        print(legacy.initialize_model(model, init_from=cfg.init_from, init_from_tf1=cfg.init_from_tf1), flush=True)
    initial_epoch = int(epoch_variable.numpy())

    examples_per_epoch = (len(datasets.arrays.train_images) // cfg.batch_size) * cfg.batch_size
    epoch_line = EpochLine(examples_per_epoch)
    callbacks = [
        epoch_line,  # First, so the speed it adds to the logs reaches TensorBoard.
        keras.callbacks.TensorBoard(log_dir=cfg.model_dir, write_graph=False, profile_batch=0),
        CheckpointEachEpoch(manager, epoch_variable),
    ]
    if cfg.kl_warmup_epochs:
        callbacks.insert(0, KLWarmup(cfg.kl_warmup_epochs))
    if cfg.image_summaries:
        callbacks.append(ImageSummaries(os.path.join(cfg.model_dir, "images"), datasets.image_shape,
                                        datasets.preview, cfg.seed))
    callbacks += summaries.make_callbacks(cfg, datasets)  # KL histograms, active units, HParams.
    start = time.perf_counter()
    history = model.fit(
        datasets.train,
        validation_data=datasets.validation if cfg.validation_size else None,
        epochs=cfg.epochs,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        shuffle=False,  # The pipeline shuffles, seeded.
        verbose=1 if sys.stdout.isatty() else 0,
    )
    train_seconds = time.perf_counter() - start
    test_metrics = model.evaluate(datasets.test, verbose=0, return_dict=True)
    print("Test " + " ".join(f"{k}: {v:.4f}" for k, v in test_metrics.items()), flush=True)
    summaries.write_test_metrics(cfg.model_dir, test_metrics, step=cfg.epochs)
    if cfg.image_summaries:
        summaries.write_projector(os.path.join(cfg.model_dir, summaries.PROJECTOR_DIR), model, datasets.test,
                                  *datasets.arrays.split("test"))
    metrics = {
        "history": {k: [float(v) for v in values] for k, values in history.history.items()},
        "epochs_run": list(range(initial_epoch + 1, cfg.epochs + 1)),
        "epoch_seconds": epoch_line.epoch_seconds,
        "test": {k: float(v) for k, v in test_metrics.items()},
        "train_seconds": train_seconds,
        "units": "nats per example" if model.likelihood.is_density else "sum of squared error + KL nats",
    }
    artifacts.write_json(os.path.join(cfg.model_dir, "metrics.json"), metrics)
    return metrics


def run(cfg):
    """The whole job of `scripts/train.py`: data, model, training, export. Returns the metrics."""
    from tfvae import corruption, data  # Local import keeps `--help` fast.
    from tfvae.models import build_model

    if cfg.cpu_devices > 1:
        distribute.split_cpu(cfg.cpu_devices)
    if cfg.mixed_precision != "none":
        keras.mixed_precision.set_global_policy(cfg.mixed_precision)
    strategy = distribute.make_strategy(cfg.strategy, cfg.tpu)
    chief = distribute.is_chief(strategy)
    keras.utils.set_random_seed(cfg.seed)
    corrupt_fn = corruption.make_corrupt_fn(cfg.corruption, cfg.corruption_strength,
                                            data.DATASET_SHAPES[cfg.dataset])
    datasets = data.make_datasets(cfg, corrupt_fn=corrupt_fn)
    # Every worker takes part in saving (it can involve collectives); only the chief's files are kept.
    run_cfg = cfg if chief else dataclasses.replace(cfg, model_dir=tempfile.mkdtemp(prefix="tfvae-worker-"))
    try:
        prepare_model_dir(run_cfg)
        with strategy.scope():
            model = build_model(cfg, datasets.image_shape)
            metrics = train(model, datasets, run_cfg)
        export_dir = cfg.export_dir if chief else os.path.join(run_cfg.model_dir, "export")
        path = export.export_saved_model(model, export_dir, export_metadata(cfg, datasets.image_shape, model),
                                         extra_json={"metrics.json": metrics})
    finally:
        if not chief:
            shutil.rmtree(run_cfg.model_dir, ignore_errors=True)
    if chief:
        print(f"Exported SavedModel to {path}", flush=True)
    return metrics
