"""TF1 checkpoint import: a TF1 tutorial graph's variables mapped by name onto a tfvae VAE, every shape checked.

The TF1 tutorial creates unnamed `tf.Variable`s, so TF1 called them `Variable`, `Variable_1`, ... in creation order:
encoder hidden kernel/bias, latent kernel/bias (tanh, split into z_mean, z_logvar), decoder hidden kernel/bias,
output kernel/bias. `AdamOptimizer` added slots `<name>/Adam` (m), `<name>/Adam_1` (v) and the float32
`beta1_power`, `beta2_power`. Other graphs are mapped with a JSON file {tfvae variable path: TF1 name}.
"""

import dataclasses
import json
import math
import os
import re

import tensorflow as tf

from tfvae import compat, config, data, export

TF1_SLOTS = ("Adam", "Adam_1")  # m and v, as TF1's AdamOptimizer names them.
TF1_POWERS = ("beta1_power", "beta2_power")
IMAGE_SHAPES = {784: (28, 28, 1), 3072: (32, 32, 3)}


class TF1ImportError(ValueError):
    """A TF1 source cannot be mapped onto the tfvae model; the message names the variable and the fix."""


def tutorial_paths(num_hidden):
    """tfvae variable paths of the tutorial model in TF1 creation order (`Variable`, `Variable_1`, ...)."""
    layers = ([f"encoder/hidden_{i}" for i in range(num_hidden)] + ["encoder/latent_params"]
              + [f"decoder/hidden_{i}" for i in range(num_hidden)] + ["decoder/logits"])
    return [f"{layer}/{weight}" for layer in layers for weight in ("kernel", "bias")]


def default_variable_map(num_hidden):
    """{tfvae path: TF1 name} of the tutorial: `Variable`, `Variable_1`, ... in creation order."""
    return {path: "Variable" if i == 0 else f"Variable_{i}" for i, path in enumerate(tutorial_paths(num_hidden))}


def checkpoint_prefix(source):
    """The checkpoint prefix of `source`: a Saver prefix as is, a SavedModel folder's `variables/variables`, or the
    latest checkpoint of a checkpoint folder or of a train.py run folder."""
    if os.path.isfile(source + ".index"):
        return source
    if os.path.isdir(source):
        if os.path.isfile(os.path.join(source, "saved_model.pb")):
            prefix = os.path.join(source, "variables", "variables")
            if os.path.isfile(prefix + ".index"):
                return prefix
            raise TF1ImportError(f"{source}: SavedModel without variables/variables.index; export it again")
        run_folder = os.path.isfile(os.path.join(source, config.RUN_FLAGS_FILE))
        try:
            latest = export.latest_checkpoint(source)
            if latest:
                return latest
            if run_folder:  # A train.py run: its latest checkpoint.
                latest = export.latest_checkpoint(os.path.join(source, config.CHECKPOINTS_DIR))
                if latest:
                    return latest
        except export.CheckpointFilesMissing as e:
            raise TF1ImportError(f"{source}: {e}; put back an intact copy of that checkpoint"
                                 + (", or pass the run's export (--export_dir)" if run_folder else "")) from None
        if run_folder:
            raise TF1ImportError(f"{source}: a train.py run folder without a checkpoint yet; pass one that has "
                                 f"checkpoints/, or its export (--export_dir)")
    raise TF1ImportError(f"{source}: neither a checkpoint prefix (no {source}.index) nor a SavedModel folder "
                         f"(no saved_model.pb) nor a folder with a 'checkpoint' file; pass a checkpoint prefix "
                         f"(e.g. PATH/model.ckpt, whose PATH/model.ckpt.index exists), a SavedModel folder or a "
                         f"train.py run folder")


@dataclasses.dataclass(frozen=True)
class Source:
    """A TF1 checkpoint opened for reading: its prefix, and {name: (shape tuple, dtype)} of its variables."""

    path: str
    prefix: str
    variables: dict

    def read(self, name):
        try:
            return tf.train.load_checkpoint(self.prefix).get_tensor(name)
        except export.VARIABLE_READ_ERRORS as e:  # A data file cut short or changed since it was opened.
            raise _unreadable(self.prefix, export.describe_read_error(e)) from None


def open_source(path):
    """Opens a TF1 checkpoint prefix or SavedModel folder. Returns a Source."""
    prefix = checkpoint_prefix(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except export.VARIABLE_READ_ERRORS as e:  # An index file cut short or not a checkpoint's.
        raise _unreadable(prefix, export.describe_read_error(e)) from None
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    # TF2 writes an object graph beside the values; TF1's Saver never did. Mapped by TF1 names, it matches nothing.
    if export.is_tfvae_export(path) or "_CHECKPOINTABLE_OBJECT_GRAPH" in shapes:
        raise TF1ImportError(f"{path}: a TensorFlow 2 export or checkpoint (tfvae's?), not a TF1 one; pass it to "
                             f"train.py as --init_from, or use a tfvae export as it is")
    return Source(path=path, prefix=prefix,
                  variables={name: (tuple(shapes[name]), dtypes[name].name) for name in sorted(shapes)})


def format_variables(source):
    """The listing import_tf1.py prints: one `name shape dtype` line per variable."""
    width = max((len(name) for name in source.variables), default=0)
    return "\n".join(f"  {name:<{width}}  {list(shape)}  {dtype}"
                     for name, (shape, dtype) in source.variables.items())


def _some_names(source, count=8):
    """A few of the source's weight names (not Adam's slots or powers), for a one-line error (import_tf1.py prints
    every variable)."""
    names = [name for name in source.variables
             if name not in TF1_POWERS and not name.endswith(tuple(f"/{slot}" for slot in TF1_SLOTS))]
    return ", ".join(names[:count]) + (f", ... ({len(names)} in all)" if len(names) > count else "")


# What a --variable_map is, for the errors that need one: its keys are tfvae's paths, its values the TF1 names.
MAP_FORMAT = f"--variable_map=FILE.json of {{tfvae path: TF1 name}}, the keys {config.VARIABLE_MAP_KEYS}"
# train.py has no --variable_map: a TF1 graph with other names goes through import_tf1.py first.
INIT_FROM_TF1_MAP_FIX = ("import it with scripts/import_tf1.py --source=CHECKPOINT --export_dir=DIR and a "
                         "--variable_map, then pass --init_from=DIR")


def load_variable_map(path):
    """Reads a --variable_map JSON file: {tfvae variable path: TF1 variable name}."""
    try:
        with open(path) as f:
            variable_map = json.load(f)
    except (OSError, ValueError) as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors.
        raise TF1ImportError(f"--variable_map={path}: not a readable JSON file ({e}); write "
                             f'{{"encoder/hidden_0/kernel": "TF1 name", ...}}') from None
    if not isinstance(variable_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in variable_map.items()):
        raise TF1ImportError(f"--variable_map={path}: must be a JSON object of strings "
                             f'{{"encoder/hidden_0/kernel": "TF1 name", ...}}')
    return variable_map


def resolve_variable_map(source, variable_map=None, map_fix=None):
    """Checks a variable map against `source` (default: the tutorial's names). Returns (map, num_hidden).

    `map_fix` ends the error when the source needs a map: by default, how to write one (import_tf1.py).
    """
    if variable_map is None:
        num_tutorial = sum(1 for name in source.variables if re.fullmatch(r"Variable(_\d+)?", name))
        if num_tutorial < 8 or num_tutorial % 4:
            raise TF1ImportError(
                f"{source.path}: found {num_tutorial} tutorial variables (Variable, Variable_1, ...), expected "
                f"8, 12, ... (its variables: {_some_names(source)}); {map_fix or 'pass a ' + MAP_FORMAT}")
        num_hidden = num_tutorial // 4 - 1
        variable_map = default_variable_map(num_hidden)
    else:
        num_hidden = sum(1 for path in variable_map if re.fullmatch(r"encoder/hidden_\d+/kernel", path))
        if not num_hidden:
            raise TF1ImportError(f"--variable_map names no encoder/hidden_0/kernel; the tutorial's MLP has at least "
                                 f"one hidden layer: the keys must be exactly {tutorial_paths(1)} (more layers: "
                                 f"hidden_1, ...)")
        expected = set(tutorial_paths(num_hidden))
        missing, unknown = sorted(expected - set(variable_map)), sorted(set(variable_map) - expected)
        if missing or unknown:
            problems = [f"{what} {paths}" for what, paths in (("missing tfvae paths", missing),
                                                             ("unknown paths", unknown)) if paths]
            raise TF1ImportError(f"--variable_map: {', '.join(problems)}; the keys must be exactly "
                                 f"{tutorial_paths(num_hidden)}")
    for path, name in variable_map.items():
        if name not in source.variables:
            raise TF1ImportError(f"TF1 variable {name!r} (for {path}) not in {source.path} (its variables: "
                                 f"{_some_names(source)}); fix that name in --variable_map")
    return variable_map, num_hidden


def infer_architecture(source, variable_map, num_hidden):
    """(hidden_sizes, latent_dim, image_shape) of the TF1 graph, read off its encoder kernels."""
    def kernel_shape(path):
        shape = source.variables[variable_map[path]][0]
        if len(shape) != 2:
            raise TF1ImportError(f"{variable_map[path]} ({path}): expected a 2-D kernel, found shape "
                                 f"{list(shape)}")
        return shape

    hidden_sizes = tuple(kernel_shape(f"encoder/hidden_{i}/kernel")[1] for i in range(num_hidden))
    num_pixels = kernel_shape("encoder/hidden_0/kernel")[0]
    latent_outputs = kernel_shape("encoder/latent_params/kernel")[1]
    if latent_outputs % 2:
        raise TF1ImportError(f"{variable_map['encoder/latent_params/kernel']} (encoder/latent_params/kernel): "
                             f"{latent_outputs} outputs cannot split into z_mean and z_logvar; expected 2 x latent")
    if num_pixels not in IMAGE_SHAPES:
        raise TF1ImportError(f"{variable_map['encoder/hidden_0/kernel']} (encoder/hidden_0/kernel): input size "
                             f"{num_pixels}, expected one of {sorted(IMAGE_SHAPES)} (MNIST 28x28, CIFAR 32x32x3); "
                             f"map encoder/hidden_0/kernel to the first layer's kernel in --variable_map")
    return hidden_sizes, latent_outputs // 2, IMAGE_SHAPES[num_pixels]


IMPORT_FIX = "fix --variable_map or the model's sizes"
# train.py has no --variable_map: its TF1 weights must be the tutorial's names and this run's sizes.
INIT_FROM_TF1_FIX = ("pass the TF1 graph's --hidden_sizes and --latent_dim, or import it with scripts/import_tf1.py "
                     "(--variable_map for other names) and pass that export as --init_from")


def _checked_value(source, name, path, expected_shape, fix):
    shape, dtype = source.variables[name]
    if tuple(shape) != tuple(expected_shape):
        raise TF1ImportError(f"{name} ({path}): expected shape {list(expected_shape)}, found {list(shape)} in "
                             f"{source.path}; {fix}")
    if dtype != "float32":
        raise TF1ImportError(f"{name} ({path}): expected dtype float32, found {dtype} in {source.path}")
    return source.read(name)


def assign_weights(model, source, variable_map, fix=IMPORT_FIX):
    """Copies the mapped TF1 variables into `model`'s trainable variables, checking shape and dtype of each; `fix`
    ends the message of a variable that does not fit."""
    for variable in model.trainable_variables:
        path = compat.variable_path(variable)
        if path not in variable_map:
            raise TF1ImportError(f"model variable {path} has no TF1 variable in the map; {fix}")
        variable.assign(_checked_value(source, variable_map[path], path, variable.shape, fix))


TINY_FLOAT32 = 1.1754944e-38  # The smallest normal float32; TensorFlow flushes smaller values to 0 on CPUs.


def tf1_step(beta1_power, beta2_power, beta_1, beta_2):
    """The number of Adam steps TF1 took, from its beta powers (which are beta^(step + 1)).

    beta1_power underflows to 0 in float32 after ~900 steps; beta2_power then gives the step within a few
    steps, which only moves Keras' bias correction (already ~1) by less than float32 resolution.
    """
    if beta1_power > 1e-30:
        return max(round(math.log(beta1_power) / math.log(beta_1)) - 1, 0)
    if beta2_power > 0:
        return max(round(math.log(beta2_power) / math.log(beta_2)) - 1, 0)
    # Both flushed to 0 (float32 denormals, after ~87,000 steps at beta_2 = 0.999): at least the step where
    # beta2_power left float32's normal range. TF1Adam takes the powers themselves, so its updates stay exact.
    return math.ceil(math.log(TINY_FLOAT32) / math.log(beta_2))


def assign_optimizer_state(optimizer, model, source, variable_map):
    """Copies TF1 Adam's slots and beta powers into a built Keras Adam (`TF1Adam` takes the powers exactly)."""
    for path in TF1_POWERS:
        if path not in source.variables:
            raise TF1ImportError(f"{source.path} has no {path}: it holds no AdamOptimizer state; drop "
                                 f"--with_optimizer")
    for variable in model.trainable_variables:
        path = compat.variable_path(variable)
        index = optimizer._get_variable_index(variable)
        for slot_name, slots in zip(TF1_SLOTS, (optimizer._momentums, optimizer._velocities)):
            name = f"{variable_map[path]}/{slot_name}"
            if name not in source.variables:
                raise TF1ImportError(f"{source.path} has no Adam slot {name} for {path}; drop --with_optimizer")
            slots[index].assign(_checked_value(source, name, f"Adam slot of {path}", variable.shape, IMPORT_FIX))
    beta1_power, beta2_power = (float(source.read(name)) for name in TF1_POWERS)
    step = tf1_step(beta1_power, beta2_power, optimizer.beta_1, optimizer.beta_2)
    optimizer.iterations.assign(step)
    if hasattr(optimizer, "beta_1_power"):
        optimizer.beta_1_power.assign(beta1_power)
        optimizer.beta_2_power.assign(beta2_power)
    return step


def build_tf1_model(source, variable_map=None, dataset="mnist", learning_rate=1e-3, adam_epsilon=1e-8,
                    with_optimizer=False, name="tf1_import"):
    """A tfvae `tf1_tutorial` VAE holding the weights (and optionally Adam state) of a TF1 source.

    Returns:
      (model, cfg, image_shape, report): the VAE (compiled with Adam when `with_optimizer`), the RunConfig
      describing it, the images' (H, W, C), and a JSON-able report of the mapping.
    """
    from tfvae import training
    from tfvae.models import build_model

    variable_map, num_hidden = resolve_variable_map(source, variable_map)
    hidden_sizes, latent_dim, image_shape = infer_architecture(source, variable_map, num_hidden)
    if tuple(data.DATASET_SHAPES[dataset]) != tuple(image_shape):
        # Else the export would claim images its weights cannot take, and its users would load the wrong data.
        fits = sorted(name for name, shape in data.DATASET_SHAPES.items() if tuple(shape) == tuple(image_shape))
        raise TF1ImportError(f"--dataset={dataset}: its images are {'x'.join(map(str, data.DATASET_SHAPES[dataset]))}"
                             f", but {variable_map['encoder/hidden_0/kernel']} takes "
                             f"{'x'.join(map(str, image_shape))} ones; pass --dataset={' or '.join(fits)}")
    cfg = config.RunConfig(name=name, model="tf1_tutorial", dataset=dataset, hidden_sizes=hidden_sizes,
                           latent_dim=latent_dim, likelihood="sse", learning_rate=learning_rate,
                           adam_epsilon=adam_epsilon, adam="tf1", model_dir="", export_dir="")
    model = build_model(cfg, image_shape)
    paths = [compat.variable_path(v) for v in model.trainable_variables]
    if paths != tutorial_paths(num_hidden):  # The model's layout is what the map's keys promise.
        raise TF1ImportError(f"tfvae's tf1_tutorial variables {paths} differ from {tutorial_paths(num_hidden)}")
    assign_weights(model, source, variable_map)
    report = {"source": os.path.abspath(source.path), "variable_map": variable_map,
              "hidden_sizes": list(hidden_sizes), "latent_dim": latent_dim}
    if with_optimizer:
        model.compile(optimizer=training.make_optimizer(cfg))
        model.optimizer.build(model.trainable_variables)
        report["adam_step"] = assign_optimizer_state(model.optimizer, model, source, variable_map)
    return model, cfg, image_shape, report


def import_tf1(source_path, export_dir, variable_map_file=None, with_optimizer=False, dataset="mnist",
               learning_rate=1e-3, adam_epsilon=1e-8):
    """The job of `scripts/import_tf1.py`: TF1 source -> tfvae SavedModel. Returns (export path, report)."""
    from tfvae import export, training

    source = open_source(source_path)
    variable_map = load_variable_map(variable_map_file) if variable_map_file else None
    model, cfg, image_shape, report = build_tf1_model(
        source, variable_map, dataset=dataset, learning_rate=learning_rate, adam_epsilon=adam_epsilon,
        with_optimizer=with_optimizer, name=os.path.basename(os.path.normpath(export_dir)))
    cfg = dataclasses.replace(cfg, export_dir=export_dir)
    metadata = training.export_metadata(cfg, image_shape, model)
    replaced = export.describe_export(export_dir)
    path = export.export_saved_model(model, export_dir, {**metadata, "tf1_import": report},
                                     optimizer=model.optimizer if with_optimizer else None)
    if replaced:
        report["replaced"] = replaced
    return path, report


def initialize_model(model, init_from="", init_from_tf1="", dataset="", image_shape=None):
    """Loads starting weights into a compiled, built `model` for `train.py --init_from[_tf1]`. Returns a log line.

    init_from: a tfvae export (weights, plus Adam state when exported with it) or a tfvae checkpoint prefix.
    init_from_tf1: a TF1 tutorial checkpoint prefix or SavedModel folder (weights only, tutorial names).
    dataset, image_shape: this run's; an export of other images is refused by name (not by a kernel's shape).
    """
    _refuse_other_images(init_from, dataset, image_shape)
    if init_from_tf1:
        source = open_source(init_from_tf1)
        variable_map, _ = resolve_variable_map(source, map_fix=INIT_FROM_TF1_MAP_FIX)
        assign_weights(model, source, variable_map, fix=INIT_FROM_TF1_FIX)
        read = "" if source.prefix == init_from_tf1 else f" (checkpoint {source.prefix})"
        return f"Initialised from TF1 weights {init_from_tf1}{read}"
    prefix = checkpoint_prefix(init_from)
    graph = _object_graph(prefix)
    children = _children(graph, 0)
    if "model" not in children:
        raise TF1ImportError(f"--init_from={init_from}: not a tfvae export or checkpoint (no model in it); "
                             f"for TF1 checkpoints pass --init_from_tf1")
    # Adam's state is a root object in a train.py checkpoint, and the model's optimizer in an export of the compiled
    # model; exports of weights alone (export.py, import_tf1.py without --with_optimizer) have none.
    root_optimizer = "optimizer" in children
    has_optimizer = root_optimizer or "optimizer" in _children(graph, children["model"])
    unfit = f"--init_from={init_from} does not fit this model"
    from tfvae import restore  # Here: restore imports modules that import this one.

    if has_optimizer:
        saved = children["optimizer"] if root_optimizer else _children(graph, children["model"])["optimizer"]
        saved_scaled, scaled = "inner_optimizer" in _children(graph, saved), hasattr(model.optimizer, "inner_optimizer")
        if saved_scaled != scaled and not root_optimizer:  # In an export Adam is the model's: it cannot be moved.
            raise TF1ImportError(f"{unfit}: its Adam state was exported {'with' if saved_scaled else 'without'} "
                                 f"float16's loss scale; pass the --mixed_precision it was trained with, or "
                                 f"--init_from the run folder it was exported from")
        unread = []
        try:
            if saved_scaled == scaled:
                checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer) if root_optimizer else \
                    tf.train.Checkpoint(model=model)
                checkpoint.read(prefix).expect_partial().assert_existing_objects_matched()
            else:
                unread = _read_across_loss_scale(model, prefix, saved_scaled)
        except restore.DamagedCheckpoint as e:
            raise _unreadable(prefix, e) from None
        except export.VARIABLE_READ_ERRORS as e:
            if export.is_damaged(e):  # Other flags would not help.
                raise _unreadable(prefix, export.describe_read_error(e)) from None
            raise TF1ImportError(f"{unfit} ({export.describe_read_error(e)}); pass the flags of the run that "
                                 f"wrote it") from None
        if unread:
            raise TF1ImportError(f"{unfit} (it has no value for {', '.join(unread[:3])}); pass the flags of the run "
                                 f"that wrote it")
        model.repair_kl_weight()
        return (f"Initialised weights and Adam state at step {int(model.optimizer.iterations)} from {init_from}"
                + _left_out_note(graph, children["model"], model))
    try:  # The weights only; the model's Adam state, built already, starts afresh.
        unread = restore.read_every_variable({"model": model}, model.trainable_variables, prefix)
    except restore.DamagedCheckpoint as e:
        raise _unreadable(prefix, e) from None
    except ValueError as e:
        raise TF1ImportError(f"{unfit} ({e}); pass the flags of the run that wrote it") from None
    if unread:
        raise TF1ImportError(f"{unfit} (it has no value for {', '.join(unread[:3])}); pass the flags of the run "
                             f"that wrote it")
    model.repair_kl_weight()
    return f"Initialised weights from {init_from}" + _left_out_note(graph, children["model"], model)


def _left_out_note(graph, node, model):
    """What a source's model holds that `model` has no place for, as the end of the log line: e.g. the weights of
    an autoregressive or learned-variance likelihood read into a plain one, which a checkpoint read skips silently.
    Matched by name, as the read matches them; the optimizer's slots follow the weights and are not listed."""
    matched, unmatched, visited = set(), {}, set()

    def walk(node, target, path):
        children = tf.train.TrackableView(target).children(target) if target is not None else {}
        for child in graph.nodes[node].children:
            child_target = children.get(child.local_name)
            # A node is visited once as matched and once as not: it may be reachable under several names.
            key = (child.node_id, child_target is not None)
            if key in visited or (path == "model" and child.local_name == "optimizer"):
                continue
            visited.add(key)
            if any(attribute.name == "VARIABLE_VALUE" for attribute in graph.nodes[child.node_id].attributes):
                if child_target is None:
                    unmatched.setdefault(child.node_id, f"{path}/{child.local_name}")
                else:
                    matched.add(child.node_id)
            walk(child.node_id, child_target, f"{path}/{child.local_name}")

    walk(node, model, "model")
    left_out = [path for node_id, path in unmatched.items() if node_id not in matched]
    if not left_out:
        return ""
    shown = ", ".join(left_out[:4]) + (f" and {len(left_out) - 4} more" if len(left_out) > 4 else "")
    return f"; not used, this model has no such weights: {shown}"


def _read_across_loss_scale(model, prefix, saved_scaled):
    """Reads a train.py checkpoint of the other side of float16's loss scale, which wraps Adam
    (training.make_optimizer): the saved Adam state is one level down (or up) from where `model`'s is; the scale
    itself starts afresh. Returns the paths of the weights and slots it held no value for."""
    from tfvae import restore  # Here: restore imports modules that import this one.

    adam = model.optimizer if saved_scaled else model.optimizer.inner_optimizer
    target = tf.train.Checkpoint(inner_optimizer=adam) if saved_scaled else adam
    # The model also holds its own (wrapped or unwrapped) optimizer, which the saved one does not match in form:
    # every weight and Adam slot is checked read instead.
    expected = [v for v in [*model.weights, *adam.variables] if tf.as_dtype(v.dtype).is_floating]
    return restore.read_every_variable({"model": model, "optimizer": target}, expected, prefix)


def _refuse_other_images(init_from, dataset, image_shape):
    metadata_path = os.path.join(init_from, export.METADATA_FILE) if init_from and image_shape else ""
    if not os.path.isfile(metadata_path):
        return
    try:
        metadata = export.load_metadata(init_from)
    except export.ExportError as e:
        raise TF1ImportError(str(e).replace("--saved_model=", "--init_from=", 1)) from None
    trained_on = tuple(metadata.get("image_shape", image_shape))
    if trained_on != tuple(image_shape):
        raise TF1ImportError(f"--init_from={init_from} was trained on {metadata.get('dataset')} images "
                             f"{list(trained_on)}, this run has {dataset} images {list(image_shape)}; pass "
                             f"--dataset={metadata.get('dataset')} or an export of {dataset}")


def _object_graph(prefix):
    """The object graph of a TF2 object-based checkpoint (None for a TF1 name-based one)."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    try:
        reader = tf.train.load_checkpoint(prefix)
        if not reader.has_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"):
            return None
        graph = trackable_object_graph_pb2.TrackableObjectGraph()
        graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    except export.VARIABLE_READ_ERRORS as e:
        raise _unreadable(prefix, export.describe_read_error(e)) from None
    return graph


def _unreadable(prefix, reason):
    return TF1ImportError(f"{prefix}: cannot read the checkpoint ({reason}); pass an intact one")


def _children(graph, node):
    """{name: node id} of the children of `node` in an object graph (e.g. the root's "model", "optimizer")."""
    return {} if graph is None else {child.local_name: child.node_id for child in graph.nodes[node].children}
