"""SavedModel export with the TF1 tutorial's interface (`input` -> `z_mean`, `z_logvar`, `x_hat`), and loading."""

import json
import math
import os
import re
import shutil

import tensorflow as tf

from tfvae import artifacts, cli, compat, config
from tfvae.compat import keras

METADATA_FILE = "tfvae.json"
FORMAT_VERSION = 1
# Variables are written in shards of at most this size: pretrained exports stay ordinary-sized files in git.
MAX_SHARD_BYTES = 4 * 1024 * 1024
# What reading saved variables (a checkpoint, an export's variables/) raises: ValueError, OpError or AssertionError
# for values that do not fit the model, IndexError ("Read less bytes than requested") for a data file shorter than
# its index says.
VARIABLE_READ_ERRORS = (AssertionError, ValueError, IndexError, tf.errors.OpError)


def is_damaged(error):
    """Whether a `VARIABLE_READ_ERRORS` error says the files are damaged or gone, not that they belong to another
    model (whose missing variables are a NotFoundError too: "Key ... not found in checkpoint")."""
    files_gone = isinstance(error, tf.errors.NotFoundError) and any(
        reason in str(error) for reason in ("Failed to find any matching files", "No such file or directory"))
    return files_gone or isinstance(error, (IndexError, tf.errors.DataLossError))


class CheckpointFilesMissing(FileNotFoundError):
    """A folder's `checkpoint` file names a checkpoint whose files are gone."""

    def __init__(self, prefix):
        super().__init__(f"the latest checkpoint, {prefix}, has no {os.path.basename(prefix)}.index: its files are "
                         f"missing or were moved")


def latest_checkpoint(folder):
    """`tf.train.latest_checkpoint(folder)` that tells "none yet" (None) from "its files are gone"
    (CheckpointFilesMissing), where TensorFlow's returns None for both and logs an error line for the second."""
    state = tf.train.get_checkpoint_state(folder)
    if state is None or not state.model_checkpoint_path:
        return None
    prefix = os.path.join(folder, state.model_checkpoint_path)  # Joining keeps an absolute path as it is.
    if tf.io.gfile.exists(prefix + ".index"):
        return prefix
    # TF1's Saver records absolute paths: a checkpoint folder copied from elsewhere still holds its files.
    moved = os.path.join(folder, os.path.basename(prefix))
    if tf.io.gfile.exists(moved + ".index"):
        return moved
    raise CheckpointFilesMissing(prefix)


def describe_read_error(error):
    """One line on why saved variables could not be read (a `VARIABLE_READ_ERRORS` error)."""
    if isinstance(error, IndexError):
        return "its data file is shorter than its index says: truncated or damaged"
    # TensorFlow's "not bound to checkpointed values" lists each variable's repr: their paths say what is missing.
    missing = re.findall(r"<Variable path=([^,\s]+)", str(error))
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        return f"it has no value for {', '.join(missing[:3])}{more}"
    return cli.op_error_reason(error)[:200]


class ExportError(ValueError):
    """An export path is unusable or a SavedModel is not a tfvae export; the message names the fix."""


def incomplete_export(path, reason):
    """The ExportError for an export whose files are missing, cut short or changed (`reason` says which)."""
    return ExportError(f"--saved_model={path}: its SavedModel files are incomplete or corrupt ({reason}); copy or "
                       f"export the model again")


def assert_finite(tensor, message, name):
    """Returns `tensor` once an assertion that all its values are finite has passed; fails with `message`.

    Not tf.debugging.assert_all_finite: its CheckNumerics kernel is a scalar loop that took 1.0-1.4 ms on CPU for a
    [1024, 784] batch, more than the rest of a tutorial model's reconstruct, where is_finite and all take ~0.1 ms.
    """
    finite = tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(tensor)), [message], name=name)
    with tf.control_dependencies([finite]):
        return tf.identity(tensor)


def assert_images(tensor, name):
    """Returns image batch `tensor` once an assertion that every value is finite and in [0, 1] has passed: 8-bit
    pixels passed as they are (0-255) would encode to nonsense without a word.

    Three reductions: NaN or inf anywhere makes the sum NaN or inf (IEEE arithmetic; min and max may skip a NaN),
    and min and max bound the rest. At batch 1,024 of 784 pixels this took ~0.11 ms more than assert_finite, where
    elementwise forms (`0 <= x <= 1`, `|x - 0.5| <= 0.5`) took 0.17-0.43 ms more; at batch 1 the same.
    """
    in_range = (tf.math.is_finite(tf.reduce_sum(tensor)) & (tf.reduce_min(tensor) >= 0.0)
                & (tf.reduce_max(tensor) <= 1.0))
    message = f"{name} has values outside [0, 1], or NaN or inf; pass images scaled to [0, 1] (8-bit pixels / 255)"
    check = tf.debugging.Assert(in_range, [message], name=f"{name}_range_check")
    with tf.control_dependencies([check]):
        return tf.identity(tensor)


def has_convolutions(model):
    """Whether the model's encoder or decoder holds a convolution layer."""
    convolutions = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Conv1DTranspose,
                    keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose, keras.layers.DepthwiseConv2D,
                    keras.layers.SeparableConv2D)
    return any(isinstance(layer, convolutions) for network in (model.encoder, model.decoder)
               for layer in network.layers)


def on_at_least_one_example(network):
    """`network(x, *others)` of batch-first tensors (None passes) that also takes an empty batch: it runs one zero
    example then and returns none of it.

    TensorFlow's oneDNN Conv2D (TF 2.21 on CPU) gives an empty batch the input's spatial shape (a stride-2 conv of
    `[0, 28, 28, 1]` returns `[0, 28, 28, 1]`), so the next layer fails with a shape error that names neither.
    """
    def run(x, *others):
        rows = tf.shape(x)[0]
        missing = 1 - tf.minimum(rows, 1)  # One row of padding for an empty batch, none otherwise.

        def pad(tensor):
            if tensor is None:
                return None
            # Not tf.pad: oneDNN folds a Pad into the Conv2D after it (padding "valid"), empty batch and all.
            return tf.concat([tensor, tf.zeros(tf.concat([[missing], tf.shape(tensor)[1:]], 0), tensor.dtype)], 0)

        outputs = network(pad(x), *map(pad, others))
        return tf.nest.map_structure(lambda output: output[:rows], outputs)
    return run


class _ServingModule(tf.Module):
    """Holds the model's variables and its signatures; nothing of tfvae is needed to load it."""

    def __init__(self, model, input_shape, optimizer=None):
        super().__init__()
        self.model = model
        # Keras 3 exports each weight twice: the functions read its tf.Variable, while the TF1 Saver in the
        # MetaGraph restores only a copy. Tracking the tf.Variables too makes the Saver restore what the functions
        # read, so TF1's `saved_model.loader.load(sess, ...)` serves this export.
        self.tf1_variables = compat.backing_tf_variables(model)
        if optimizer is not None:
            # Tracked beside `model`, so tf.train.Checkpoint(model=, optimizer=) reads both from variables/.
            self.optimizer = optimizer
        conditional = getattr(model, "num_classes", 0) > 0
        x_spec = tf.TensorSpec([None, *input_shape], tf.float32, name="input")
        z_spec = tf.TensorSpec([None, model.latent_dim], tf.float32, name="z")
        z_samples_spec = tf.TensorSpec([None, None, model.latent_dim], tf.float32, name="z")
        label_spec = tf.TensorSpec([None], tf.int32, name="label")
        seed_spec = tf.TensorSpec([], tf.int64, name="seed")

        encode_network, decode_network = model.encode, model.decode
        if has_convolutions(model):
            encode_network, decode_network = map(on_at_least_one_example, (model.encode, model.decode))

        def same_batch(tensor, name, reference, reference_name, axis=0):
            # Else a mismatch fails deep inside (a Concat or Mul shape error) or, for one z, broadcasts silently.
            tensor_size, reference_size = tf.shape(tensor)[axis], tf.shape(reference)[0]
            check = tf.debugging.Assert(
                tf.equal(tensor_size, reference_size),
                [f"{name} and {reference_name} must hold the same number of examples; got", tensor_size, "and",
                 reference_size], name=f"{name}_batch_check")
            with tf.control_dependencies([check]):
                return tf.identity(tensor)

        def checked_label(label, reference, reference_name):
            # One class per example: a scalar or [n, 1] label would fail inside the range checks, naming no input.
            label = tf.ensure_shape(label, [None], name="label_shape_check")
            # A label outside [0, num_classes) must fail loudly, never wrap into another class.
            tf.debugging.assert_non_negative(label, message="label must be >= 0")
            tf.debugging.assert_less(label, model.num_classes,
                                     message=f"label must be < num_classes={model.num_classes}")
            return same_batch(label, "label", reference, reference_name)

        def checked(tensor, name):
            # Signature wrappers pass any shape through, and NaN in is NaN out: refuse both by name instead.
            if name == "input":
                return assert_images(tf.ensure_shape(tensor, [None, *input_shape], name="input_shape_check"), name)
            # z is [batch, latent_dim], or [samples, batch, latent_dim].
            tensor = tf.ensure_shape(tensor, [None] * (tensor.shape.rank - 1) + [model.latent_dim],
                                     name=f"{name}_shape_check")
            return assert_finite(tensor, f"{name} has NaN or inf values; pass finite latent vectors",
                                 name=f"{name}_finite_check")

        def encode(input, label=None):
            z_mean, z_logvar = encode_network(checked(input, "input"), label)
            return {"z_mean": z_mean, "z_logvar": z_logvar}

        def decode(z, label=None):
            logits = decode_network(checked(z, "z"), label)
            return {"x_hat": model.likelihood(logits), "logits": logits}

        def sample(z, seed, label=None):
            logits = decode_network(checked(z, "z"), label)
            return {"x_sample": model.likelihood.sample(logits, tf.stack([seed, tf.zeros_like(seed)]))}

        def reconstruct(input, label=None):
            z_mean, _ = encode_network(checked(input, "input"), label)
            return {"x_hat": model.likelihood(decode_network(z_mean, label))}

        def log_likelihood(input, z, label=None):
            logits = decode_network(same_batch(checked(z, "z"), "z", input, "input"), label)
            return {"log_px_z": model.likelihood.log_prob(checked(input, "input"), logits)}

        def log_likelihood_samples(input, z, label=None):
            # S decodings of each example at once, for importance sampling (tfvae.evaluation).
            num_samples, batch = tf.shape(z)[0], tf.shape(z)[1]
            tiled_label = None if label is None else tf.reshape(tf.tile(label[None], [num_samples, 1]), [-1])
            z = same_batch(checked(z, "z"), "z", input, "input", axis=1)
            logits = decode_network(tf.reshape(z, [-1, model.latent_dim]), tiled_label)
            logits = tf.reshape(logits, tf.concat([[num_samples, batch], tf.shape(logits)[1:]], 0))
            return {"log_px_z": model.likelihood.log_prob_samples(checked(input, "input"), logits)}

        if conditional:
            self.encode = tf.function(lambda input, label: encode(input, checked_label(label, input, "input")),
                                      input_signature=[x_spec, label_spec])
            self.decode = tf.function(lambda z, label: decode(z, checked_label(label, z, "z")),
                                      input_signature=[z_spec, label_spec])
            sample_function = tf.function(lambda z, seed, label: sample(z, seed, checked_label(label, z, "z")),
                                          input_signature=[z_spec, seed_spec, label_spec])
            self.reconstruct = tf.function(
                lambda input, label: reconstruct(input, checked_label(label, input, "input")),
                input_signature=[x_spec, label_spec])
            self.log_likelihood = tf.function(
                lambda input, z, label: log_likelihood(input, z, checked_label(label, input, "input")),
                input_signature=[x_spec, z_spec, label_spec])
            self.log_likelihood_samples = tf.function(
                lambda input, z, label: log_likelihood_samples(input, z, checked_label(label, input, "input")),
                input_signature=[x_spec, z_samples_spec, label_spec])
        else:
            self.encode = tf.function(encode, input_signature=[x_spec])
            self.decode = tf.function(decode, input_signature=[z_spec])
            sample_function = tf.function(sample, input_signature=[z_spec, seed_spec])
            self.reconstruct = tf.function(reconstruct, input_signature=[x_spec])
            self.log_likelihood = tf.function(log_likelihood, input_signature=[x_spec, z_spec])
            self.log_likelihood_samples = tf.function(log_likelihood_samples,
                                                      input_signature=[x_spec, z_samples_spec])
        # The tutorial's squared error is no distribution to draw from: its export has no `sample`.
        if model.likelihood.can_sample:
            self.sample = sample_function

    def signatures(self):
        signatures = {
            "serving_default": self.reconstruct,
            "encode": self.encode,
            "decode": self.decode,
            "reconstruct": self.reconstruct,
            "log_likelihood": self.log_likelihood,
            "log_likelihood_samples": self.log_likelihood_samples,
        }
        if hasattr(self, "sample"):
            signatures["sample"] = self.sample
        return signatures


def make_serving_functions(model, input_shape):
    """The export's signatures as live tf.functions of `model` ({"encode": ..., ...}), without saving anything.

    Evaluating a checkpoint through these gives exactly what its SavedModel would.
    """
    return _ServingModule(model, input_shape).signatures()


def is_tfvae_export(path):
    return os.path.isfile(os.path.join(path, METADATA_FILE))


def export_saved_model(model, export_dir, metadata, extra_json=None, optimizer=None, extra_files=None):
    """Writes `model` as a SavedModel to `export_dir`, atomically, with `metadata` in `tfvae.json` beside it.

    Args:
      model: a built VAE.
      export_dir: destination; an existing tfvae export there is replaced, any other non-empty folder refused.
      metadata: JSON-able dict; must hold "input_shape" (without batch) and "image_shape" (H, W, C).
      extra_json: optional {file name: JSON-able object} written into the export too (e.g. metrics.json).
      optimizer: optional optimizer whose state is saved too, so `train.py --init_from=EXPORT` continues it.
      extra_files: optional {name: path of a file or folder} copied into the export (e.g. an older export's PNGs).

    Returns:
      The absolute export path.
    """
    if artifacts.holds_something_else(export_dir, METADATA_FILE):
        raise ExportError(f"--export_dir={export_dir} exists and is not a tfvae export; "
                          f"remove it or choose another --export_dir")
    if os.path.islink(export_dir):  # A link such as current -> v3 stays one: the folder it names is replaced.
        export_dir = os.path.realpath(export_dir)
    module = _ServingModule(model, metadata["input_shape"], optimizer)
    tmp_dir = artifacts.make_temp_dir_beside(export_dir)
    try:
        options = tf.saved_model.SaveOptions(experimental_sharding_callback=tf.train.experimental.MaxShardSizePolicy(
            max_shard_size=MAX_SHARD_BYTES))
        tf.saved_model.save(module, tmp_dir, signatures=module.signatures(), options=options)
        artifacts.write_json(os.path.join(tmp_dir, METADATA_FILE),
                             {"format": "tfvae", "format_version": FORMAT_VERSION, **metadata})
        for name, obj in (extra_json or {}).items():
            artifacts.write_json(os.path.join(tmp_dir, name), obj)
        for name, source in (extra_files or {}).items():
            copy = shutil.copytree if os.path.isdir(source) else shutil.copy2
            copy(source, os.path.join(tmp_dir, name))
        artifacts.replace_dir(tmp_dir, export_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return os.path.abspath(export_dir)


def _metadata_problem(metadata):
    """What in an export's tfvae.json the tools could not use (a field missing or of the wrong kind) and the fix,
    or None."""
    def positive_ints(value):
        return isinstance(value, list) and bool(value) and all(type(n) is int and n > 0 for n in value)

    def wrong(name, expected):
        problem = f"has no {name}" if name not in metadata else f"has {name} {metadata[name]!r}, {expected}"
        return f"{problem}; copy or export the model again"

    version = metadata.get("format_version", FORMAT_VERSION)
    if type(version) is int and version > FORMAT_VERSION:
        return f"has format_version {version}, newer than this tfvae reads ({FORMAT_VERSION}); update tfvae"
    image_shape, input_shape = metadata.get("image_shape"), metadata.get("input_shape")
    if not positive_ints(image_shape) or len(image_shape) != 3:
        return wrong("image_shape", "not [height, width, channels]")
    if not positive_ints(input_shape) or math.prod(input_shape) != math.prod(image_shape):
        return wrong("input_shape", f"which does not hold its image_shape {image_shape}")
    if type(metadata.get("latent_dim")) is not int or metadata["latent_dim"] <= 0:
        return wrong("latent_dim", "not a positive integer")
    if type(metadata.get("num_classes", 0)) is not int or metadata.get("num_classes", 0) < 0:
        return wrong("num_classes", "not an integer >= 0")
    for name in ("model", "dataset", "likelihood"):
        if not isinstance(metadata.get(name), str):
            return wrong(name, "not a name")
    if not isinstance(metadata.get("config"), dict):
        return wrong("config", "not the object of the run's flags")
    return None


def load_metadata(path, complete=True):
    """Reads `tfvae.json` of an export, with a clear error when `path` is missing or not a tfvae export, or (when
    `complete`) when it lacks a field the tools read to use the model."""
    if not os.path.isdir(path):
        raise ExportError(f"--saved_model={path}: no such folder; pass the folder train.py exported "
                          f"(e.g. saved_models/tf1_tutorial)")
    if not is_tfvae_export(path):
        flags_file = os.path.join(path, config.RUN_FLAGS_FILE)
        if os.path.isfile(flags_file):  # A run folder: its export is where its --export_dir says.
            with open(flags_file) as f:
                exported_to = re.search(r"^--export_dir=(.+)$", f.read(), re.MULTILINE)
            raise ExportError(f"--saved_model={path}: a run folder of train.py, not its export; pass its --export_dir"
                              f"{'=' + exported_to[1] if exported_to else ''} (or --model_dir={path} where a script "
                              f"takes one)")
        raise ExportError(f"--saved_model={path}: not a tfvae export (no {METADATA_FILE}); pass the --export_dir "
                          f"of train.py or import_tf1.py (e.g. saved_models/tf1_tutorial)")
    try:
        with open(os.path.join(path, METADATA_FILE)) as f:
            metadata = json.load(f)
    except (OSError, ValueError) as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors.
        raise ExportError(f"--saved_model={path}: {METADATA_FILE} is not readable JSON ({e}); copy or export the "
                          f"model again") from None
    if not isinstance(metadata, dict):
        raise ExportError(f"--saved_model={path}: {METADATA_FILE} holds no JSON object; copy or export the model "
                          f"again")
    problem = _metadata_problem(metadata) if complete else None
    if problem:
        raise ExportError(f"--saved_model={path}: its {METADATA_FILE} {problem}")
    return metadata


def exported_run(path):
    """The --model_dir of the run whose tfvae export is at `path` (as its tfvae.json records it), or None: no export
    there, or one that records no run (an import, or an unreadable tfvae.json, which the export will replace)."""
    try:
        run_config = load_metadata(path, complete=False).get("config", {})
    except ExportError:
        return None
    model_dir, export_dir = run_config.get("model_dir"), run_config.get("export_dir")
    if not isinstance(model_dir, str):
        return None
    # train.py records both as typed, relative to where it ran.
    ran_in = config.folder_run_in(path, export_dir) if isinstance(export_dir, str) and export_dir else None
    return os.path.join(ran_in, model_dir) if ran_in else model_dir


def describe_export(path):
    """What the tfvae export at `path` is, for a line saying a new export replaced it: "the export of run DIR", "an
    import of the TF1 checkpoint PREFIX" or "a tfvae export"; None when no tfvae export is there."""
    if not is_tfvae_export(path):
        return None
    run = exported_run(path)
    if run:
        return f"the export of run {run}"
    try:
        metadata = load_metadata(path, complete=False)
    except ExportError:
        return "a tfvae export with an unreadable tfvae.json"
    source = (metadata.get("tf1_import") or {}).get("source")
    return f"an import of the TF1 checkpoint {source}" if isinstance(source, str) else "a tfvae export"


def describe_other_export(path, model_dir=None):
    """`describe_export` of `path`, unless what is there is the export of run `model_dir` itself (written again
    by the same run, nothing of another is lost) or nothing: then None."""
    run = exported_run(path)
    if model_dir and run and os.path.realpath(run) == os.path.realpath(model_dir):
        return None
    return describe_export(path)


def model_name(metadata):
    """The run's --name recorded in an export's tfvae.json (its model type for exports that hold none)."""
    return metadata.get("config", {}).get("name") or metadata.get("model", "model")


def load_saved_model(path):
    """Loads a tfvae SavedModel. Returns (loaded object with `.signatures`, metadata dict).

    A SavedModel is code: load only exports from sources you trust.
    """
    metadata = load_metadata(path)
    try:
        loaded = tf.saved_model.load(path)
    except (OSError, *VARIABLE_READ_ERRORS) as e:  # A missing or cut-short saved_model.pb or variables/.
        raise incomplete_export(path, describe_read_error(e)) from None
    # tfvae.json from another export beside this SavedModel would fail later in a shape error naming neither.
    signatures = loaded.signatures
    takes = {"latent_dim": signatures["decode"].structured_input_signature[1]["z"].shape[-1] if "decode" in signatures
             else metadata["latent_dim"],
             "input_shape": signatures["reconstruct"].structured_input_signature[1]["input"].shape[1:].as_list()
             if "reconstruct" in signatures else metadata["input_shape"]}
    mismatched = [f"{name} {metadata[name]} where its signatures take {takes[name]}" for name in takes
                  if takes[name] != metadata[name]]
    if mismatched:
        raise ExportError(f"--saved_model={path}: its {METADATA_FILE} does not describe its SavedModel (it says "
                          f"{' and '.join(mismatched)}); copy or export the model again")
    return loaded, metadata
