"""LiteRT (TFLite) conversion of a tfvae SavedModel's `encode`, `decode` and `reconstruct` signatures, checked
against it."""

import dataclasses
import os
import tempfile

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from tfvae import artifacts, data, export
from tfvae.compat import keras

# reconstruct is encode then decode in one call (for the denoising models, the restoration); the converter stores
# the weights the signatures share once, so it adds a few kB.
SIGNATURES = ("encode", "decode", "reconstruct")


def convert(saved_model, quantize="none"):
    """Converts the `SIGNATURES` of a tfvae export to a .tflite flatbuffer.

    Args:
      saved_model: a tfvae export folder.
      quantize: "none" (float32) or "dynamic" (int8 weights, float activations).

    Returns:
      The flatbuffer bytes.
    """
    # Loaded first for a clear error when the folder is not a tfvae export or its files are incomplete.
    _, metadata = export.load_saved_model(saved_model)
    if (metadata.get("config") or {}).get("mixed_precision", "none") == "none":
        return _convert(saved_model, quantize)
    # Trained with --mixed_precision, its layers compute in bfloat16 or float16, which LiteRT's built-in kernels do
    # not take: convert the same weights computing in float32.
    with tempfile.TemporaryDirectory() as folder:
        return _convert(_float32_twin(saved_model, metadata, os.path.join(folder, "float32")), quantize)


def _convert(saved_model, quantize):
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=list(SIGNATURES))
    if quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def _float32_twin(saved_model, metadata, folder):
    """Writes to `folder` an export of `saved_model`'s weights in a model rebuilt to compute in float32."""
    from tfvae import config, legacy, restore  # Local: only mixed-precision exports need them.
    from tfvae.models import build_model

    cfg = dataclasses.replace(config.run_config_from_dict(metadata["config"]), mixed_precision="none")
    keras.mixed_precision.set_global_policy("float32")
    model = build_model(cfg, tuple(metadata["image_shape"]), metadata.get("num_classes"))
    try:
        unread = restore.read_every_variable({"model": model}, model.trainable_variables,
                                             legacy.checkpoint_prefix(saved_model))
    except restore.DamagedCheckpoint as e:
        raise export.incomplete_export(saved_model, e) from None
    except ValueError as e:
        unread = [str(e)]
    if unread:
        raise export.ExportError(f"--saved_model={saved_model}: its weights do not fit the model its "
                                 f"{export.METADATA_FILE} describes ({unread[0]}); export it again from its run")
    return export.export_saved_model(model, folder, {**metadata, "config": dataclasses.asdict(cfg)})


def _inputs(name, metadata, count, rng):
    if name in ("encode", "reconstruct"):
        inputs = {"input": rng.random((count, *metadata["input_shape"]), dtype=np.float32)}
    else:
        inputs = {"z": rng.standard_normal((count, metadata["latent_dim"])).astype(np.float32)}
    if metadata.get("num_classes"):
        inputs["label"] = (np.arange(count) % metadata["num_classes"]).astype(np.int32)
    return inputs


def compare(tflite_model, saved_model, count=256, seed=0):
    """Runs every converted signature in the LiteRT interpreter and in TensorFlow on the same seeded inputs.

    Inputs are x ~ U[0, 1) for encode and reconstruct, and z ~ N(0, I) for decode.

    Returns:
      {signature: {output: max abs difference}}.
    """
    from ai_edge_litert.interpreter import Interpreter  # Imported lazily: the [lite] extra.

    saved, metadata = export.load_saved_model(saved_model)
    interpreter = Interpreter(model_content=tflite_model)
    rng = np.random.default_rng(seed)
    differences = {}
    for name in SIGNATURES:
        inputs = _inputs(name, metadata, count, rng)
        lite_outputs = interpreter.get_signature_runner(name)(**inputs)
        tf_outputs = saved.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
        differences[name] = {key: float(np.max(np.abs(lite_outputs[key] - tf_outputs[key].numpy())))
                             for key in sorted(tf_outputs)}
    return differences


# How far a float32 conversion of a float32 export may be from it: the five shipped exports came within 2.7e-5 (the
# kernels sum in other orders). An int8 (--quantize=dynamic) or mixed-precision one is not held to it.
FLOAT32_TOLERANCE = 1e-4


def left_out(saved_model):
    """The export's signatures the LiteRT model has none of, sorted: the log-likelihoods (evaluation's) and `sample`,
    whose stateless random numbers are no LiteRT built-in op (only TensorFlow's flex delegate runs them)."""
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model, tf.saved_model.SAVED_MODEL_FILENAME_PB), "rb") as f:
        proto.ParseFromString(f.read())
    return sorted(name for name in proto.meta_graphs[0].signature_def
                  if name not in SIGNATURES and not name.startswith("__") and name != "serving_default")


def labels_path(output):
    """Where `export_tflite` writes a conditional model's class names beside the .tflite file `output`."""
    return os.path.splitext(output)[0] + ".labels.txt"


def class_names(metadata):
    """A conditional export's class names in label order (what a LiteRT caller's `label` means: an image folder's
    class folders, a dataset's names, or the digits), or () for a model without labels."""
    classes = metadata.get("num_classes") or 0
    names = metadata.get("class_names") or data.CLASS_NAMES.get(metadata.get("dataset")) or ()
    return tuple(names) if len(names) == classes else tuple(str(label) for label in range(classes))


def export_tflite(saved_model, output, quantize="none", count=256):
    """The job of `scripts/export_tflite.py`. Returns (differences as `compare`, file size in bytes); writes nothing
    when a float32 conversion of a float32 export is further than `FLOAT32_TOLERANCE` from it. A conditional model's
    class names go to `labels_path(output)`, one per line, with the .tflite file or not at all: a .tflite file has
    no place for them, and the `label` input is their index."""
    tflite_model = convert(saved_model, quantize)
    differences = compare(tflite_model, saved_model, count)
    metadata = export.load_metadata(saved_model)
    precision = (metadata.get("config") or {}).get("mixed_precision", "none")
    worst, name, key = max((diff, name, key) for name, outputs in differences.items() for key, diff in outputs.items())
    if quantize == "none" and precision == "none" and not worst <= FLOAT32_TOLERANCE:  # NaN fails too.
        raise export.ExportError(
            f"the LiteRT model's {name}/{key} is {worst:.3g} from the SavedModel's on {count} inputs, more than "
            f"{FLOAT32_TOLERANCE:g} for a float32 conversion, so {output} was not written; the converter "
            f"(TensorFlow {tf.__version__}) got this model wrong: try another tensorflow or ai-edge-litert version")

    def write(path):
        with open(path, "wb") as f:
            f.write(tflite_model)

    def write_labels(path):
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(f"{name}\n" for name in names))

    names = class_names(metadata)
    artifacts.write_all_or_none([(output, write)] + ([(labels_path(output), write_labels)] if names else []))
    return differences, os.path.getsize(output)
