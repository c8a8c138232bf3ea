"""A small convolutional classifier trained by the project, exported alone, that judges conditional samples."""

import json
import math
import os
import shutil

from tfvae.compat import keras
import numpy as np
import tensorflow as tf

from tfvae import artifacts, config, data, export

METADATA_FILE = "classifier.json"


class ClassifierError(ValueError):
    """A classifier export is missing or does not fit the images to classify; the message names the fix."""


def build_classifier(image_shape, num_classes=data.NUM_CLASSES, seed=0):
    """Conv 16 - pool - conv 32 - pool - dense 64 - logits: ~57k weights, 98.4% on MNIST after 3 epochs.

    Returns:
      A Keras model mapping images `[batch, H, W, C]` in [0, 1] to logits `[batch, num_classes]`.
    """
    seeds = iter(range(seed * 100, seed * 100 + 100))
    init = lambda: keras.initializers.GlorotUniform(seed=next(seeds))  # noqa: E731
    return keras.Sequential([
        keras.Input(tuple(image_shape)),
        keras.layers.Conv2D(16, 3, activation="relu", kernel_initializer=init()),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu", kernel_initializer=init()),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu", kernel_initializer=init()),
        keras.layers.Dense(num_classes, kernel_initializer=init()),
    ], name="classifier")


def _as_unit_float(images):
    return images.astype(np.float32) / 255.0


def train_classifier(cfg):
    """Trains the classifier on `cfg.dataset` (gray levels in [0, 1]) and exports it to `cfg.export_dir`.

    Returns:
      Metrics: validation accuracy per epoch and test accuracy, fractions in [0, 1].
    """
    keras.utils.set_random_seed(cfg.seed)
    arrays = data.load_arrays(cfg.dataset, cfg.data_dir, cfg.validation_size, cfg.image_size)
    data.refuse_batches_beyond(arrays, cfg.batch_size, cfg.dataset, cfg.validation_size)
    data.refuse_unlabelled(cfg.dataset, arrays.class_names, cfg.data_dir, "a classifier learns labels")
    model = build_classifier(arrays.train_images.shape[1:], data.num_classes(cfg.dataset, arrays.class_names),
                             seed=cfg.seed)
    _compiled(model, cfg.learning_rate)
    validation = ((_as_unit_float(arrays.validation_images), arrays.validation_labels)
                  if cfg.validation_size else None)
    history = model.fit(_as_unit_float(arrays.train_images), arrays.train_labels, batch_size=cfg.batch_size,
                        epochs=cfg.epochs, validation_data=validation, shuffle=True, verbose=2,
                        callbacks=[keras.callbacks.TerminateOnNaN()])
    losses = history.history.get("loss") or [math.nan]
    if not all(map(math.isfinite, losses)):
        # Its weights are NaN or inf: exported, it would give every image the same class without a word.
        raise ClassifierError(f"training diverged: the loss was {losses[-1]} in epoch {len(losses)}, and nothing was "
                              f"exported; lower --learning_rate (now {cfg.learning_rate:g}) and train again")
    _, test_accuracy = model.evaluate(_as_unit_float(arrays.test_images), arrays.test_labels, verbose=0)
    metrics = {
        "dataset": cfg.dataset,
        **({"class_names": list(arrays.class_names)} if arrays.class_names else {}),
        # How it was made, so a classifier that judges samples can be told apart from another.
        "data_source": data.describe_source(cfg.dataset, cfg.data_dir),
        "training": {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate,
                     "validation_size": cfg.validation_size, "seed": cfg.seed},
        "history": {k: [float(v) for v in values] for k, values in history.history.items()},
        "test_accuracy": float(test_accuracy),
        "test_examples": int(len(arrays.test_labels)),
    }
    print(f"Test accuracy: {test_accuracy:.4f}", flush=True)
    export_classifier(model, cfg.export_dir, {**metrics, "image_shape": list(arrays.train_images.shape[1:])})
    print(f"Exported classifier to {os.path.abspath(cfg.export_dir)}", flush=True)
    return metrics


class _ClassifierModule(tf.Module):
    def __init__(self, model, image_shape):
        super().__init__()
        self.model = model
        self.image_shape = list(image_shape)
        self.classify = tf.function(
            lambda image: self._classify(image),
            input_signature=[tf.TensorSpec([None, *image_shape], tf.float32, name="image")])

    def _classify(self, image):
        # Signature wrappers pass any shape through, and NaN or 0-255 pixels in is a confident class out: refuse
        # both by name.
        image = export.assert_images(tf.ensure_shape(image, [None, *self.image_shape], name="image_shape_check"),
                                     "image")
        logits = export.on_at_least_one_example(lambda images: self.model(images, training=False))(image)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits),
                "class": tf.argmax(logits, axis=-1, output_type=tf.int32)}


def is_classifier_export(path):
    return os.path.isfile(os.path.join(path, METADATA_FILE))


def export_classifier(model, export_dir, metadata):
    """Writes the classifier as a SavedModel with one `classify` signature (image -> logits, probabilities, class),
    and `classifier.json` (metadata, e.g. test accuracy), atomically."""
    if artifacts.holds_something_else(export_dir, METADATA_FILE):
        raise ClassifierError(f"--export_dir={export_dir} exists and is not a classifier export; "
                              f"remove it or choose another --export_dir")
    module = _ClassifierModule(model, metadata["image_shape"])
    tmp_dir = artifacts.make_temp_dir_beside(export_dir)
    try:
        tf.saved_model.save(module, tmp_dir, signatures={"serving_default": module.classify,
                                                         "classify": module.classify})
        artifacts.write_json(os.path.join(tmp_dir, METADATA_FILE), {"format": "tfvae_classifier", **metadata})
        artifacts.replace_dir(tmp_dir, export_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


def _compiled(model, learning_rate):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def default_classifier_dir(metadata):
    """evaluate_cvae.py's judge when --classifier is not given: train_classifier.py's default export for the
    model's dataset (config.classifier_export_dir). For an image folder none ships: the error says how to train it."""
    path = config.shipped_path(config.classifier_export_dir(metadata["dataset"]))
    if metadata["dataset"] == config.IMAGE_FOLDER and not os.path.isdir(path):
        folder = (metadata.get("config") or {}).get("data_dir") or "YOUR_FOLDER"
        raise ClassifierError(f"no classifier of this model's image folder at {path}; train one with python "
                              f"scripts/train_classifier.py --dataset=image_folder --data_dir={folder} (it goes "
                              f"there), or pass --classifier=DIR")
    return path


def _read_metadata(path):
    metadata_path = os.path.join(path, METADATA_FILE)
    if not os.path.isdir(path):
        raise ClassifierError(f"--classifier={path}: no such folder (from {os.getcwd()}); pass --classifier= a "
                              f"classifier export of the model's dataset (saved_models/mnist_classifier ships for "
                              f"MNIST), or train one with scripts/train_classifier.py --export_dir={path}")
    if not os.path.isfile(metadata_path):
        # Training into `path` would be refused where something is there already (a VAE export, say).
        where = "--export_dir=DIR" if os.listdir(path) else f"--export_dir={path}"
        raise ClassifierError(f"--classifier={path}: not a classifier export (no {METADATA_FILE}); pass one "
                              f"(saved_models/mnist_classifier ships for MNIST), or train one with "
                              f"scripts/train_classifier.py {where} and pass that")
    try:
        with open(metadata_path) as f:
            metadata = json.load(f)
    except (OSError, ValueError) as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors.
        metadata = e
    if not isinstance(metadata, dict) or not {"dataset", "image_shape"} <= metadata.keys():
        problem = metadata if isinstance(metadata, Exception) else "no dataset and image_shape in it"
        raise ClassifierError(f"--classifier={path}: its {METADATA_FILE} is not a classifier's ({problem}); copy it "
                              f"again, or train one with scripts/train_classifier.py")
    return metadata


def reexport_classifier(path, export_dir=None):
    """Writes a classifier export again with this version's signature (e.g. the input checks an older one lacks):
    the weights and Adam's state are read back into a rebuilt classifier, so every value carries over unchanged.
    In place unless `export_dir` is given; the old folder stays until the new one is complete.

    Returns:
      The absolute export path.
    """
    from tfvae import legacy, restore

    metadata = {k: v for k, v in _read_metadata(path).items() if k != "format"}
    # Adam's learning rate is a variable too: the export's own is read below.
    num_classes = data.num_classes(metadata["dataset"], tuple(metadata.get("class_names") or ()))
    model = _compiled(build_classifier(metadata["image_shape"], num_classes), learning_rate=1e-3)
    model.optimizer.build(model.trainable_variables)
    expected = [v for v in model.variables + model.optimizer.variables if tf.as_dtype(v.dtype).is_floating]
    fix = f"train it again with scripts/train_classifier.py --export_dir={path}"
    try:
        unread = restore.read_every_variable({"model": model}, expected, legacy.checkpoint_prefix(path))
    except ValueError as e:
        raise ClassifierError(f"--saved_model={path}: its variables do not fit the classifier its {METADATA_FILE} "
                              f"describes ({e}); {fix}") from None
    if unread:
        raise ClassifierError(f"--saved_model={path}: {len(unread)} variables of the classifier are not in it "
                              f"(e.g. {unread[0]}); {fix}")
    export_dir = export_dir or path
    export_classifier(model, export_dir, metadata)
    return os.path.abspath(export_dir)


def load_classifier(path):
    """Returns (classify function: images `[n, H, W, C]` in [0, 1] -> class int32 `[n]`, metadata dict)."""
    metadata = _read_metadata(path)
    try:
        signature = tf.saved_model.load(path).signatures["classify"]
    except (OSError, KeyError, *export.VARIABLE_READ_ERRORS) as e:  # Files cut short or missing; no signature.
        problem = "no classify signature" if isinstance(e, KeyError) else export.describe_read_error(e)
        raise ClassifierError(f"--classifier={path}: its SavedModel files are incomplete or corrupt ({problem}); "
                              f"copy it again, or train one with scripts/train_classifier.py") from None

    def classify(images, batch_size=500):
        return np.concatenate([signature(image=tf.constant(images[i:i + batch_size], tf.float32))["class"].numpy()
                               for i in range(0, len(images), batch_size)])

    return classify, metadata


# Below this test accuracy the classifier's errors, not the samples, would dominate evaluate_cvae.py's number.
TRUSTED_TEST_ACCURACY = 0.95


def evaluate_conditional_samples(saved, metadata, classify, classifier_metadata, samples_per_class, seed=0):
    """Decodes `samples_per_class` z ~ N(0, I) per class through the SavedModel's `decode` signature and measures
    how often the classifier names the requested class.

    Returns:
      {"accuracy": overall fraction, "per_class": {class: fraction}, "confusion": [requested][predicted] counts,
       ...}, JSON-able.
    """
    from tfvae import inference  # Pulls matplotlib; only this function needs it.

    num_classes = metadata.get("num_classes", 0)
    if not num_classes:
        raise ClassifierError(f"the SavedModel ({metadata['model']}) is not label-conditioned; pass a cvae export")
    if list(metadata["image_shape"]) != list(classifier_metadata["image_shape"]) or (
            metadata["dataset"] != classifier_metadata["dataset"]):
        raise ClassifierError(
            f"the SavedModel makes {metadata['dataset']} images {metadata['image_shape']} but the classifier was "
            f"trained on {classifier_metadata['dataset']} {classifier_metadata['image_shape']}; pass a matching "
            f"--classifier")
    if metadata.get("class_names") != classifier_metadata.get("class_names"):  # Two image folders' classes.
        raise ClassifierError(f"the SavedModel's classes are {metadata.get('class_names')} but the classifier's "
                              f"{classifier_metadata.get('class_names')}; train one on the same folder "
                              f"(scripts/train_classifier.py --dataset=image_folder) and pass it as --classifier")
    requested = np.repeat(np.arange(num_classes, dtype=np.int32), samples_per_class)
    predicted = np.concatenate([classify(images) for images in inference.decoded_sample_chunks(
        saved, metadata, len(requested), seed, requested)])
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (requested, predicted), 1)
    per_class = confusion.diagonal() / samples_per_class
    return {
        "accuracy": float(np.mean(predicted == requested)),
        "per_class": {str(c): float(per_class[c]) for c in range(num_classes)},
        "confusion": confusion.tolist(),
        "confusion_axes": "rows: the requested label; columns: the class the classifier saw",
        "samples_per_class": samples_per_class,
        "seed": seed,
        "images_judged": f"the {inference.decoded_images_are(metadata)} of each z ~ N(0, I), with the requested label",
        "classifier_test_accuracy": classifier_metadata.get("test_accuracy"),
    }
