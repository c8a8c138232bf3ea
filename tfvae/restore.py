"""A trained model as its serving functions (encode, decode, log_likelihood) plus metadata, from a SavedModel
or from the latest checkpoint of a run folder."""

import dataclasses
import os

import numpy as np
import tensorflow as tf
from absl import logging

from tfvae import compat, config, export


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """The signatures of a tfvae export (or the same functions of a live model) and its `tfvae.json` metadata.

    `signatures` maps "encode", "decode", "reconstruct", "log_likelihood" (and "log_likelihood_samples" in exports
    that have it) to callables taking keyword tensors (`input`, `z`, and `label` for conditional models) and
    returning dicts of tensors, as in `tfvae/export.py`.
    """

    signatures: dict
    metadata: dict
    source: str
    # Keeps a loaded SavedModel (and so its variables) alive as long as its signatures are used.
    owner: object = None

    @property
    def num_classes(self):
        return int(self.metadata.get("num_classes") or 0)

    @property
    def latent_dim(self):
        return int(self.metadata["latent_dim"])

    def _with_label(self, inputs, label):
        if self.num_classes:
            if label is None:
                raise ValueError("this model is conditional; pass the class labels")
            inputs["label"] = tf.cast(label, tf.int32)
        return inputs

    def encode(self, x, label=None):
        """x `[batch, *input_shape]` in [0, 1] -> (z_mean, z_logvar), each `[batch, latent_dim]`."""
        out = self.signatures["encode"](**self._with_label({"input": tf.cast(x, tf.float32)}, label))
        return out["z_mean"], out["z_logvar"]

    def decode(self, z, label=None):
        """z `[batch, latent_dim]` -> x_hat `[batch, *input_shape]` in [0, 1] (mean of p(x|z))."""
        return self.signatures["decode"](**self._with_label({"z": tf.cast(z, tf.float32)}, label))["x_hat"]

    def log_likelihood(self, x, z, label=None):
        """log p(x|z) per example, `[batch]` (nats when metadata says the likelihood is a density)."""
        inputs = {"input": tf.cast(x, tf.float32), "z": tf.cast(z, tf.float32)}
        return self.signatures["log_likelihood"](**self._with_label(inputs, label))["log_px_z"]

    def log_likelihood_samples(self, x, z, label=None):
        """log p(x|z_s) of each example under S latents: x `[batch, ...]`, z `[S, batch, latent_dim]` -> `[S, batch]`.

        Exports made before this signature existed get the same numbers from `log_likelihood` on tiled copies of x.
        """
        x, z = tf.cast(x, tf.float32), tf.cast(z, tf.float32)
        if "log_likelihood_samples" in self.signatures:
            inputs = self._with_label({"input": x, "z": z}, label)
            return self.signatures["log_likelihood_samples"](**inputs)["log_px_z"]
        num_samples, batch = tf.shape(z)[0], tf.shape(z)[1]
        x_tiled = tf.reshape(tf.tile(x[None], tf.concat([[num_samples], tf.ones([tf.rank(x)], tf.int32)], 0)),
                             tf.concat([[-1], tf.shape(x)[1:]], 0))
        label_tiled = None if label is None else tf.reshape(tf.tile(label[None], [num_samples, 1]), [-1])
        log_px_z = self.log_likelihood(x_tiled, tf.reshape(z, [-1, tf.shape(z)[-1]]), label_tiled)
        return tf.reshape(log_px_z, [num_samples, batch])


def load_saved_model(path):
    """Loads a tfvae SavedModel folder. Raises export.ExportError when it is not one."""
    saved, metadata = export.load_saved_model(path)
    return LoadedModel(signatures=dict(saved.signatures), metadata=metadata, source=os.path.abspath(path),
                       owner=saved)


def build_in_precision(cfg, image_shape, num_classes=None):
    """`build_model` with the layers computing in the run's precision (a mixed-precision run's as it trained and
    exported), leaving Keras' global policy as it was for whatever the process builds next."""
    from tfvae import training  # Local: heavy.
    from tfvae.compat import keras
    from tfvae.models import build_model

    policy = keras.mixed_precision.global_policy()
    training.set_precision_policy(cfg)
    try:
        return build_model(cfg, image_shape, num_classes)
    finally:
        keras.mixed_precision.set_global_policy(policy)


class NoCheckpoint(ValueError):
    """A run folder holds no checkpoint yet: stopped or diverged in its first epoch, or still in it."""


def _run_config(model_dir):
    """The RunConfig in `model_dir/flags.txt`. Raises ValueError naming the fix when there is none."""
    if not os.path.isdir(model_dir):
        raise ValueError(f"--model_dir={model_dir}: no such folder; pass a run folder written by train.py")
    return config.run_config_of_run_folder(model_dir)


def load_checkpoint(model_dir, best=True):
    """Rebuilds the model of a run from `model_dir/flags.txt` and restores its latest checkpoint, or with `best` the
    weights a --keep_best run keeps of its best epoch (when it has them): those it tests and exports.

    Raises:
      ValueError: no flags file or no checkpoint, naming the folder and the fix.
    """
    from tfvae import data, training  # Local: heavy, and only this path needs them.

    cfg = _run_config(model_dir)
    # The run's export, where there is one (a run stopped before its end has none).
    own_export = (f", or use the run's export instead: --saved_model={cfg.export_dir}"
                  if export.is_tfvae_export(cfg.export_dir) else "")
    folder = config.CHECKPOINTS_DIR
    if best and cfg.keep_best:
        if tf.train.latest_checkpoint(os.path.join(model_dir, config.BEST_DIR)):
            folder = config.BEST_DIR
        else:
            logging.warning("--model_dir=%s is a --keep_best run, but %s/ holds no weights of a best epoch (none "
                            "validated yet, or removed): reading its latest checkpoint", model_dir, config.BEST_DIR)
    try:
        latest = export.latest_checkpoint(os.path.join(model_dir, folder))
    except export.CheckpointFilesMissing as e:
        raise ValueError(f"--model_dir={model_dir}: {e}; put back an intact copy of that checkpoint"
                         f"{own_export}") from None
    if latest is None:
        # No export named: a run without a checkpoint never exported, so one there is another run's.
        raise NoCheckpoint(f"--model_dir={model_dir}: no checkpoint in {config.CHECKPOINTS_DIR}/ yet; train at "
                           f"least one epoch")
    image_shape, class_names = training.data_spec_of_run(cfg)
    model = build_in_precision(cfg, image_shape, data.num_classes(cfg.dataset, class_names))
    try:  # Only the model: the optimizer and epoch counter in the checkpoint are not needed to evaluate.
        tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()
        model.repair_kl_weight()
    except export.VARIABLE_READ_ERRORS as e:
        # The failed restore would warn at exit of every value it left unread; the error says it all.
        tf.get_logger().setLevel("ERROR")
        raise ValueError(f"--model_dir={model_dir}: cannot read {latest} ({export.describe_read_error(e)}); put "
                         f"back an intact copy of that checkpoint{own_export}") from None
    metadata = training.export_metadata(cfg, image_shape, model, class_names)
    metadata["checkpoint"] = os.path.abspath(latest)
    if folder == config.BEST_DIR:
        metadata["tested_epoch"] = int(latest.rsplit("-", 1)[1])
    signatures = export.make_serving_functions(model, metadata["input_shape"])
    return LoadedModel(signatures=signatures, metadata=metadata, source=os.path.abspath(model_dir), owner=model)


def load_run_files(model_dir):
    """A run folder's description from its flags.txt alone, without a model (`signatures` empty): what reading
    its files needs (plot.py's loss curves), also for a run that has no checkpoint yet, e.g. one that diverged in
    its first epoch, whose event files show how.

    Raises:
      ValueError: no such folder or no flags file, naming the fix.
    """
    from tfvae import training  # Local: heavy.

    cfg = _run_config(model_dir)
    metadata = training.export_metadata(cfg, *training.data_spec_of_run(cfg))
    return LoadedModel(signatures={}, metadata=metadata, source=os.path.abspath(model_dir))


def load(saved_model=None, model_dir=None, model_needed=True):
    """Loads from exactly one of a SavedModel folder and a run folder; without `model_needed`, a run folder's
    description only (`load_run_files`)."""
    if bool(saved_model) == bool(model_dir):
        raise ValueError("pass exactly one of --saved_model and --model_dir")
    if saved_model:
        return load_saved_model(saved_model)
    return load_checkpoint(model_dir) if model_needed else load_run_files(model_dir)


def input_size(metadata):
    """Numbers per example the model sees, D (784 for MNIST)."""
    return int(np.prod(metadata["input_shape"]))


def run_export_dir(model_dir):
    """The --export_dir a run's flags.txt names, or None when it cannot be read (`export_checkpoint` says why)."""
    try:
        return config.run_config_of_run_folder(model_dir).export_dir
    except ValueError:
        return None


def export_checkpoint(model_dir, export_dir=None):
    """Exports the latest checkpoint of a run (of a --keep_best run, its best epoch's weights, as train.py exports)
    as a SavedModel: the model's weights only (no optimizer slots, so a third of the size of an export of the
    compiled model), with the run's history in metrics.json.

    Returns:
      (the absolute export path, the checkpoint it read, relative to `model_dir`).
    """
    from tfvae import summaries  # Local: reads TensorBoard files.

    loaded = load_checkpoint(model_dir)
    metadata = {k: v for k, v in loaded.metadata.items() if k not in ("checkpoint", "tested_epoch")}
    checkpoint = os.path.basename(loaded.metadata["checkpoint"])
    best = {}
    if "tested_epoch" in loaded.metadata:  # A --keep_best run's: its best epoch's weights, as train.py exports.
        checkpoint = os.path.join(config.BEST_DIR, checkpoint)
        best = {"tested_epoch": loaded.metadata["tested_epoch"]}
    try:
        metrics = {"history": summaries.read_history(model_dir), "checkpoint": checkpoint, **best}
    except ValueError:
        metrics = {}
    # The run's config as load_checkpoint read it, its folders absolute.
    path = export.export_saved_model(loaded.owner, export_dir or metadata["config"]["export_dir"], metadata,
                                     extra_json={"metrics.json": metrics} if metrics else None)
    read = os.path.relpath(loaded.metadata["checkpoint"], os.path.abspath(model_dir))
    if best:
        read += f", the weights of epoch {best['tested_epoch']} (--keep_best)"
    return path, read


def write_export(cfg):
    """The whole job of `scripts/export.py` (an ExportConfig): the run's latest checkpoint, or a tfvae or classifier
    export written again, to `cfg.export_dir` (default: the run's own --export_dir, or in place).

    Returns:
      (the absolute export path, a description of another run's export it replaced or None, the checkpoint of a
      run it read or None).
    """
    from tfvae import classifier  # Local: only this path needs it.

    source, target = cfg.saved_model or cfg.model_dir, cfg.export_dir
    if cfg.model_dir and not target:
        target = run_export_dir(cfg.model_dir)
    # Written in place (--saved_model alone) or the run's own export again: nothing of another is replaced.
    replaced = None
    if target and os.path.realpath(target) != os.path.realpath(source):
        replaced = export.describe_other_export(target, cfg.model_dir)
    read = None
    if cfg.saved_model and classifier.is_classifier_export(cfg.saved_model):
        path = classifier.reexport_classifier(cfg.saved_model, cfg.export_dir)
    elif cfg.saved_model:
        path = reexport_saved_model(cfg.saved_model, cfg.export_dir)
    else:
        path, read = export_checkpoint(cfg.model_dir, cfg.export_dir)
    return path, replaced, read


class DamagedCheckpoint(ValueError):
    """A checkpoint whose files are damaged (cut short, bytes changed), not one of another model."""


def read_every_variable(objects, expected, prefix):
    """Reads the checkpoint at `prefix` into `objects` (the children of a tf.train.Checkpoint) and tells which of
    the `expected` floating variables it held no value for: they are NaN until read, so a weight or slot the
    checkpoint lacks (another architecture or optimizer) cannot pass unnoticed.

    Returns:
      The paths of the `expected` variables the checkpoint did not hold.

    Raises:
      ValueError: the checkpoint does not fit (e.g. a kernel of another shape); the message is TensorFlow's reason.
      DamagedCheckpoint: a ValueError for files cut short or changed.
    """
    for variable in expected:
        variable.assign(tf.fill(variable.shape, float("nan")))
    try:
        tf.train.Checkpoint(**objects).read(prefix).expect_partial()
    except export.VARIABLE_READ_ERRORS as e:
        raise (DamagedCheckpoint if export.is_damaged(e) else ValueError)(export.describe_read_error(e)) from None
    return [getattr(v, "path", v.name) for v in expected if not np.isfinite(v.numpy()).all()]


# What tf.saved_model.save and export_saved_model write. Anything else in an export folder (metrics.json,
# evaluation JSON, PNGs) describes its weights, so a re-export carries it over.
SAVED_MODEL_ENTRIES = {"saved_model.pb", "fingerprint.pb", "variables", "assets", export.METADATA_FILE}


def reexport_saved_model(saved_model, export_dir=None):
    """Writes a tfvae export again with this version's signatures (e.g. the input checks an older one lacks).

    The model is rebuilt from the export's own config and reads the export's weights, and Adam's state when the
    export has it, so every value carries over unchanged; so do the files beside the SavedModel. In place unless
    `export_dir` is given; the old folder stays until the new one is complete.

    Returns:
      The absolute export path.
    """
    from tfvae import legacy, training  # Local: heavy, and only this path needs them.

    metadata = export.load_metadata(saved_model)
    if "config" not in metadata:
        raise export.ExportError(f"--saved_model={saved_model}: its {export.METADATA_FILE} has no config to rebuild "
                                 f"the model from; export it again from its run with --model_dir")
    cfg = config.run_config_from_dict(metadata["config"])
    prefix = legacy.checkpoint_prefix(saved_model)
    try:
        keys = [name for name, _ in tf.train.list_variables(prefix)]
    except export.VARIABLE_READ_ERRORS as e:  # An index file cut short.
        raise export.incomplete_export(saved_model, export.describe_read_error(e)) from None
    # Adam's state sits under the model in train.py's exports, at the root in import_tf1.py --with_optimizer's.
    optimizer_at_root = any(key.startswith("optimizer/") for key in keys)
    with_optimizer = optimizer_at_root or any(key.startswith("model/optimizer/") for key in keys)

    model = build_in_precision(cfg, tuple(metadata["image_shape"]), metadata.get("num_classes"))
    # The export's own root: tf1_variables also holds the sampling seed's state, which is not under the model.
    objects = {"model": model, "tf1_variables": compat.backing_tf_variables(model)}
    expected = list(model.trainable_variables)
    if with_optimizer:
        training.compile_model(model, cfg)  # Creates Adam's variables, to read its state into.
        objects.update({"optimizer": model.optimizer} if optimizer_at_root else {})
        expected += [v for v in model.optimizer.variables if tf.as_dtype(v.dtype).is_floating]
    fix = "export it again from its run with --model_dir"
    try:
        unread = read_every_variable(objects, expected, prefix)
    except DamagedCheckpoint as e:
        raise export.incomplete_export(saved_model, e) from None
    except ValueError as e:
        raise export.ExportError(f"--saved_model={saved_model}: its variables do not fit the model its "
                                 f"{export.METADATA_FILE} describes ({e}); {fix}") from None
    if unread:
        raise export.ExportError(f"--saved_model={saved_model}: {len(unread)} variables of the model its "
                                 f"{export.METADATA_FILE} describes are not in it (e.g. {unread[0]}); {fix}")
    model.repair_kl_weight()
    metadata = {k: v for k, v in metadata.items() if k not in ("format", "format_version")}
    extra_files = {name: os.path.join(saved_model, name) for name in sorted(os.listdir(saved_model))
                   if name not in SAVED_MODEL_ENTRIES and not name.startswith(".")}
    return export.export_saved_model(model, export_dir or saved_model, metadata, extra_files=extra_files,
                                     optimizer=model.optimizer if optimizer_at_root else None)
