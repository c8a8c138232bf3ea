"""Image datasets as tf.data pipelines: the TF1 `MNIST_data/` IDX files or TFDS, split, binarized, batched."""

import contextlib
import dataclasses
import functools
import gzip
import hashlib
import os
import struct
import tempfile
import urllib.parse
import zlib

import numpy as np
import tensorflow as tf
from absl import logging

from tfvae import cli, corruption, image_folder
from tfvae.config import IMAGE_FOLDER  # Your own images: their size, channels and classes are the folder's.

# The four files of the TF1 `read_data_sets` layout, by split.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
# Datasets whose TF1 IDX layout we read directly when `data_dir` holds it.
IDX_DATASETS = ("mnist", "fashion_mnist")
DATASET_SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
# Labels of every named dataset tfvae reads are in [0, 10).
NUM_CLASSES = 10
PREVIEW_SIZE = 8


class DataError(ValueError):
    """A data file or directory is missing, truncated or malformed; the message names it and the fix."""


@dataclasses.dataclass(frozen=True)
class ImageArrays:
    """In-memory splits of one dataset. Images are uint8 `[n, H, W, C]`, labels int32 `[n]`; `class_names` are an
    image folder's (its class subfolders, () when it has none), () for the named datasets."""

    train_images: np.ndarray
    train_labels: np.ndarray
    validation_images: np.ndarray
    validation_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple = ()

    def split(self, name):
        return getattr(self, f"{name}_images"), getattr(self, f"{name}_labels")


@dataclasses.dataclass(frozen=True)
class Datasets:
    """Batched pipelines of dicts {"input", "target", "label"}, one fixed preview batch, and the source arrays.

    `train` yields one epoch, the one `train_epoch` (an int64 variable) holds when its batches are made;
    `train_from(first_step)` is the same epoch from batch `first_step` on (a resumed run's first epoch).
    `train_indices_from(first_step)` yields those batches as indices, and `batch_from_indices` makes each batch
    from them, in a train step (`make_train_index_pipeline`).
    """

    train: tf.data.Dataset
    train_epoch: tf.Variable
    train_from: callable
    train_indices_from: callable
    batch_from_indices: callable
    validation: tf.data.Dataset
    test: tf.data.Dataset
    preview: dict
    arrays: ImageArrays
    image_shape: tuple


def _read_idx(path, expected_magic, item_shape):
    """Reads one gzipped IDX file (or the same file un-gzipped, without .gz) into a uint8 array, checking magic
    number, dimensions and length."""
    plain = path[:-len(".gz")]
    gzipped = os.path.exists(path) or not os.path.exists(plain)
    path = path if gzipped else plain
    name = os.path.basename(path)
    try:
        with (gzip.open if gzipped else open)(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; point --data_dir at a folder holding all four IDX .gz files "
                        f"(MNIST_data/ layout)")
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a readable {'gzip' if gzipped else 'IDX'} file ({e}); download {name} again")
    ndim = len(item_shape) + 1
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes); download {name} again")
    magic = struct.unpack(">i", raw[:4])[0]
    if magic != expected_magic:
        raise DataError(f"{path}: wrong IDX magic number {magic}, expected {expected_magic}; "
                        f"is {name} the right file?")
    dims = struct.unpack(f">{ndim}i", raw[4:header_size])
    if tuple(dims[1:]) != tuple(item_shape):
        raise DataError(f"{path}: item shape {tuple(dims[1:])}, expected {tuple(item_shape)}; "
                        f"is {name} the right file?")
    expected_bytes = header_size + int(np.prod(dims))
    if len(raw) != expected_bytes:
        raise DataError(f"{path}: {len(raw)} bytes, header promises {expected_bytes}; "
                        f"the file is truncated or corrupt, download {name} again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims)


def has_idx_files(data_dir):
    """True when `data_dir` holds at least one file of the TF1 IDX layout (then all four are required), gzipped or
    not (`_read_idx` asks for the .gz files by name)."""
    return bool(data_dir) and any(
        os.path.exists(os.path.join(data_dir, name)) for pair in IDX_FILES.values() for f in pair
        for name in (f, f[:-len(".gz")]))


def load_idx_split(data_dir, split):
    """Reads the images and labels of `split` ("train" or "test") from a TF1 `MNIST_data/` folder.

    Returns:
      images uint8 `[n, 28, 28, 1]`, labels int32 `[n]` in [0, 10).
    """
    images_file, labels_file = IDX_FILES[split]
    images = _read_idx(os.path.join(data_dir, images_file), IDX_IMAGES_MAGIC, (28, 28))
    labels = _read_idx(os.path.join(data_dir, labels_file), IDX_LABELS_MAGIC, ())
    if len(images) != len(labels):
        raise DataError(f"{data_dir}: {images_file} has {len(images)} images but {labels_file} has "
                        f"{len(labels)} labels; download both again")
    if not len(images):  # Training, validation or the test pass would have nothing to read, after minutes of work.
        raise DataError(f"{os.path.join(data_dir, images_file)}: holds no images; download it and {labels_file} "
                        f"again")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DataError(f"{os.path.join(data_dir, labels_file)}: label {labels.max()} outside [0, {NUM_CLASSES}); "
                        f"download {labels_file} again")
    return images[..., None], labels.astype(np.int32)


# TFDS fetches a dataset it has not prepared from its own mirror first, then from the dataset's source.
TFDS_MIRROR = "https://storage.googleapis.com"
REACHABILITY_TIMEOUT_SECONDS = 5


def _download_hosts(builder):
    """Scheme and host of every place TFDS may download `builder`'s files from: its mirror, then the sources."""
    hosts = [TFDS_MIRROR]
    for url in builder.url_infos or ():
        parts = urllib.parse.urlsplit(url)
        host = f"{parts.scheme}://{parts.netloc}"
        if host not in hosts:
            hosts.append(host)
    return hosts


def _offline_fix(dataset):
    if dataset in IDX_DATASETS:
        return "offline, pass --data_dir=PATH/MNIST_data holding the four IDX files" if dataset == "mnist" else (
            f"offline, pass --data_dir=a folder holding {dataset}'s four IDX files")
    return (f"offline, pass --data_dir=a TFDS data directory where {dataset} is prepared (README: Data: prepare "
            f"it online and copy the folder)")


def _dataset_folder_hint(data_dir):
    """A hint when `data_dir` is one dataset's own TFDS folder (NAME/ or NAME/VERSION/), not the data dir above."""
    candidates = [data_dir] + [os.path.join(data_dir, entry) for entry in sorted(os.listdir(data_dir))
                               if os.path.isdir(os.path.join(data_dir, entry))]
    if any(os.path.isfile(os.path.join(folder, "dataset_info.json")) for folder in candidates):
        return "; it looks like a dataset's own folder: pass the TFDS data dir above it, which holds NAME/VERSION/"
    return ""


def _check_download_reachable(dataset, hosts):
    """Fails at once when no host a download needs answers.

    TFDS retries an unreachable host ten times with exponential backoff, about 3.5 minutes of silence before its
    error. One request per host through the same HTTP stack (requests, so proxies from the environment count)
    tells in seconds; any HTTP answer, even an error status, means the host is reachable.
    """
    import requests  # Imported lazily, as TFDS: only a download needs it.

    errors = []
    for host in hosts:
        try:
            requests.head(host, timeout=REACHABILITY_TIMEOUT_SECONDS)
            return
        except requests.RequestException as e:
            errors.append(type(e).__name__)
    raise DataError(f"{dataset} is not downloaded yet and no download host answers ({', '.join(hosts)}: "
                    f"{', '.join(sorted(set(errors)))}); {_offline_fix(dataset)}")


@contextlib.contextmanager
def _quiet_tidy_tfds():
    """While TFDS makes a builder and looks for its prepared files: its warnings about a dataset not prepared yet stay
    quiet (the error that follows says what to do, in one line), and the temporary folder it makes to fetch the
    dataset's info from its bucket, which it does not remove when offline (TFDS 4.9), is removed."""
    verbosity, temp_root = logging.get_verbosity(), tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="tfvae-tfds-") as scratch:
        logging.set_verbosity(logging.ERROR)
        tempfile.tempdir = scratch
        try:
            yield
        finally:
            tempfile.tempdir = temp_root
            logging.set_verbosity(verbosity)


def _load_tfds_split(dataset, data_dir, split):
    import tensorflow_datasets as tfds  # Imported lazily: slow, and only the TFDS path needs it.

    try:
        with _quiet_tidy_tfds():
            builder = tfds.builder(dataset, data_dir=data_dir or None)
            prepared = builder.is_prepared()
        if not prepared:
            try:
                _check_download_reachable(dataset, _download_hosts(builder))
            except DataError as e:
                if not data_dir:
                    raise
                # The folder named is what is wrong, more likely than the network.
                holds = (f"neither {dataset}'s four IDX .gz files nor a prepared TFDS {dataset}"
                         if dataset in IDX_DATASETS else f"no prepared TFDS {dataset}")
                raise DataError(f"--data_dir={data_dir} holds {holds}{_dataset_folder_hint(data_dir)}, and {e}"
                                ) from None
        builder.download_and_prepare()
        # Batches of 10k rather than batch_size=-1, which aborts the process on tfds.testing.mock_data.
        batches = list(tfds.as_numpy(builder.as_dataset(split=split, as_supervised=True).batch(10000)))
        if not batches:
            raise DataError(f"TFDS {dataset} split {split!r} in {builder.data_dir} holds no examples; delete that "
                            f"folder and prepare {dataset} again")
        images = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
    except DataError:
        raise
    except tf.errors.DataLossError as e:  # A prepared file cut short or changed: preparing again mends it.
        raise DataError(f"the prepared TFDS {dataset} in {builder.data_dir} is damaged ({cli.op_error_reason(e)}); "
                        f"delete that folder and prepare {dataset} again") from None
    except Exception as e:  # TFDS raises many types; all mean the same thing to the user.
        raise DataError(f"could not load {dataset} split {split!r} through TFDS from data_dir={data_dir!r} "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                        f"{_offline_fix(dataset)}") from None
    return images.astype(np.uint8), labels.astype(np.int32)


def model_data_dir(metadata, data_dir):
    """The data folder to read a model's data from: `data_dir`, or when empty the `--data_dir` the model was trained
    from (its export's or run's config) if that folder exists here, else "" (TFDS's default)."""
    if data_dir:
        return data_dir
    recorded = _recorded_data_dir(metadata)
    return recorded if os.path.isdir(recorded) else ""


def _recorded_data_dir(metadata):
    return (metadata.get("config") or {}).get("data_dir") or ""


def load_model_arrays(metadata, data_dir, validation_size):
    """`load_arrays` of a model's dataset from `model_data_dir`. When the folder the model was trained from is not
    here, TFDS's default is read instead, which orders the examples differently: a warning says so, and so does the
    error when TFDS cannot load it either (offline, it would otherwise not name the folder looked for)."""
    folder = model_data_dir(metadata, data_dir)
    gone = "" if folder else _recorded_data_dir(metadata)
    if gone and metadata["dataset"] == IMAGE_FOLDER:
        raise DataError(f"this model was trained on the image folder {gone}, which is not here; pass --data_dir=the "
                        f"folder's new place")
    try:
        # In colour when the model was: a folder of gray GIFs read in colour before 2026-12-05 is read so again.
        channels = (metadata.get("image_shape") or [1])[-1] if metadata["dataset"] == IMAGE_FOLDER else 1
        arrays = load_arrays(metadata["dataset"], folder, validation_size,
                             tuple((metadata.get("config") or {}).get("image_size") or ()), channels)
    except DataError as e:
        if not gone:
            raise
        raise DataError(f"this model was trained from --data_dir={gone}, which is not here, so TFDS's default "
                        f"was tried: {e}") from None
    _refuse_other_images(metadata, arrays, folder)
    if gone:
        logging.warning("this model was trained from --data_dir=%s, which is not here: read %s from TFDS's default "
                        "data folder instead, in another order (pass --data_dir to choose)", gone, metadata["dataset"])
    return arrays


def _refuse_other_images(metadata, arrays, folder):
    """Raises DataError when an image folder's images are not of the model's shape and classes: the model would fail
    on them, or score them against labels that mean other classes."""
    if metadata["dataset"] != IMAGE_FOLDER:
        return
    shape, names = list(arrays.train_images.shape[1:]), list(arrays.class_names)
    trained = list(metadata.get("image_shape") or shape), list(metadata.get("class_names") or [])
    if (shape, names) != trained:
        raise DataError(f"--data_dir={folder} holds {_describe_images(shape, names)}, but this model was trained on "
                        f"{_describe_images(*trained)} ({_recorded_data_dir(metadata) or 'another folder'}); pass "
                        f"that folder")


def _describe_images(shape, class_names):
    return "x".join(map(str, shape)) + (f" images of the classes {class_names}" if class_names
                                        else " images without classes")


def describe_source(dataset, data_dir):
    """Where `load_arrays(dataset, data_dir)` reads from, for a report: the IDX files of a folder or TFDS (the two
    hold the same images in other orders, so their validation and test examples differ one by one), or an image
    folder."""
    if dataset == IMAGE_FOLDER:
        return f"the image files in {os.path.abspath(data_dir)}"
    if dataset in IDX_DATASETS and has_idx_files(data_dir):
        return f"the IDX files in {os.path.abspath(data_dir)}"
    return f"TFDS {dataset} in " + (os.path.abspath(data_dir) if data_dir else "TFDS's default data folder")


# What each label means, for plots (MNIST's labels are the digits themselves).
CLASS_NAMES = {
    "fashion_mnist": ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                      "ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}


def class_label(metadata, label):
    """A label of a model's data (`metadata`: an export's tfvae.json) as plots show it: "7" for MNIST, "9 ankle
    boot" where the dataset names its classes, an image folder's class folder name."""
    names = metadata.get("class_names") or CLASS_NAMES.get(metadata.get("dataset"))
    return f"{label} {names[label]}" if names and 0 <= label < len(names) else str(label)


def refuse_unlabelled(dataset, class_names, data_dir, needs, other_fix=""):
    """Raises DataError when an image folder has fewer than two classes for what `needs` them (e.g. "--model=cvae
    learns from labels"); `other_fix` is appended to the fix."""
    if dataset == IMAGE_FOLDER and len(class_names) < 2:
        raise DataError(f"{needs}, and {data_dir} has {'one class folder' if class_names else 'no class folders'}; "
                        f"put each class's images in a subfolder of train/ and of test/{other_fix}")


def num_classes(dataset, class_names):
    """How many labels a conditional model of `dataset` takes: 10 for the named datasets, an image folder's classes."""
    return len(class_names) if dataset == IMAGE_FOLDER else NUM_CLASSES


def _image_folder_dir(data_dir):
    if not data_dir:
        raise DataError(f"--dataset={IMAGE_FOLDER} reads --data_dir: pass {image_folder.LAYOUT_HINT}")
    return data_dir


# The first test labels of each IDX dataset: both use the same file names, so a folder is told apart by them.
FIRST_TEST_LABELS = {"mnist": (7, 2, 1, 0, 4, 1, 4, 9, 5, 9), "fashion_mnist": (9, 2, 1, 1, 6, 1, 4, 6, 5, 7)}


def _check_idx_dataset(dataset, data_dir, test_labels):
    """Refuses an IDX folder that holds the other IDX dataset's files (MNIST's read as fashion_mnist, or back)."""
    first = tuple(int(label) for label in test_labels[:10])
    for other, labels in FIRST_TEST_LABELS.items():
        if other != dataset and first == labels:
            raise DataError(f"--data_dir={data_dir} holds {other}'s IDX files, not {dataset}'s (they share file "
                            f"names); point --data_dir at a {dataset} folder or pass --dataset={other}")


def load_arrays(dataset, data_dir, validation_size=5000, image_size=(), channels=1):
    """Loads the train / validation / test splits into memory.

    The validation split is the first `validation_size` training examples, as in TF1's `read_data_sets`.
    When `data_dir` holds the TF1 IDX files they are read directly; otherwise TFDS loads `dataset`. An image folder's
    images are brought to `image_size` (height, width) when it is given, with at least `channels` channels
    (`image_folder.load`).
    """
    if data_dir and not os.path.isdir(data_dir):
        expected = image_folder.LAYOUT_HINT if dataset == IMAGE_FOLDER else (
            "a folder holding the IDX files (MNIST_data/ layout, mnist and fashion_mnist) or a TFDS data directory")
        raise DataError(f"--data_dir={data_dir}: no such directory; pass {expected}")
    class_names = ()
    if dataset == IMAGE_FOLDER:
        try:
            splits, class_names = image_folder.load(_image_folder_dir(data_dir), image_size, channels)
        except image_folder.FolderError as e:
            raise DataError(str(e)) from None
        (train_images, train_labels), (test_images, test_labels) = splits["train"], splits["test"]
    elif dataset in IDX_DATASETS and has_idx_files(data_dir):
        train_images, train_labels = load_idx_split(data_dir, "train")
        test_images, test_labels = load_idx_split(data_dir, "test")
        _check_idx_dataset(dataset, data_dir, test_labels)
    else:
        train_images, train_labels = _load_tfds_split(dataset, data_dir, "train")
        test_images, test_labels = _load_tfds_split(dataset, data_dir, "test")
    if not 0 <= validation_size < len(train_images):
        # E.g. the default 5,000 of a small image folder: a tenth of its training images is a usual choice.
        raise DataError(f"--validation_size={validation_size} must be in [0, {len(train_images)}) for {dataset}; "
                        f"pass e.g. --validation_size={len(train_images) // 10}")
    return ImageArrays(
        train_images=train_images[validation_size:], train_labels=train_labels[validation_size:],
        validation_images=train_images[:validation_size], validation_labels=train_labels[:validation_size],
        test_images=test_images, test_labels=test_labels, class_names=tuple(class_names))


def fingerprint(arrays):
    """A short hash of every example and label of `arrays` in their order: a run's record of what it trained and
    validated on, so a --resume can tell other data (another folder's files, TFDS's order) from the same files
    moved elsewhere."""
    digest = hashlib.sha256()
    for field in dataclasses.fields(arrays):
        if field.name.endswith(("_images", "_labels")):
            digest.update(np.ascontiguousarray(getattr(arrays, field.name)).tobytes())
    return digest.hexdigest()[:16]


def to_unit_float(images):
    """uint8 images -> float32 in [0, 1]: x / 255, rounded as NumPy rounds it, eagerly, in tf.data and in a step.

    Not `cast(x) / 255`: inside a tf.function Grappler turns a division by a constant into a multiplication by its
    reciprocal, an ulp off for half the values, so batches gathered in the train step would differ from tf.data's.
    It leaves DivNoNan alone.
    """
    return tf.math.divide_no_nan(tf.cast(images, tf.float32), 255.0)


def seeded_subset(num_examples, total, seed):
    """Indices of `num_examples` of `total` examples, chosen at random with `seed` and kept in order; all of them
    when `num_examples` is 0 or `total`. A split's first examples are not a fair sample (MNIST's first 500 test
    digits score ~2 nats better than all 10,000)."""
    if not num_examples or num_examples >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, num_examples, replace=False))


def binarize_static(images, seed):
    """One fixed Bernoulli sample per pixel (the 'statically binarized' protocol), uint8 in {0, 255}."""
    rng = np.random.default_rng(seed)
    return (rng.random(images.shape, dtype=np.float32) < images / 255.0).astype(np.uint8) * 255


def hold_on_host(array):
    """A host-side variable holding `array` (returned as is if it is one already), for pipelines to gather from.

    Not a constant: tf.data copies a captured constant into the dataset's graph when it makes an iterator, and a
    variable goes in by handle. For MNIST's 55,000 training images (43 MB) a constant cost one more copy (peak RSS
    799 against 754 MB) and a slower first iterator (0.05-0.23 s against 0.02-0.06 s).
    Create it outside any distribution strategy's scope (`make_datasets` does), or it becomes a replicated one.
    """
    if isinstance(array, tf.Variable):
        return array
    with tf.device("/cpu:0"):
        return tf.Variable(array, trainable=False)


def _private_threads(dataset, threads):
    # On few cores tf.data's autotuned pool competes with the training threads; a small private pool does not.
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.deterministic = True
    # Parallelism and prefetch are fixed, so autotuning has nothing to tune; its background thread sleeps with
    # an exponential backoff, and deleting an iterator (each epoch, each evaluate) waited for it to wake: up to
    # seconds per epoch, epochs ending on 5.11 s or 10.23 s (10 ms * (2^k - 1)).
    options.autotune.enabled = False
    # Across workers (MultiWorkerMirroredStrategy) each one builds the whole pipeline and keeps its share of
    # every global batch; in-memory data has no files to shard by.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _batch_maker(images, labels, binarize, flatten, corrupt_fn):
    """`make_batch(indices, batch_seed) -> {"input", "target", "label"}`: the examples `indices` of held arrays,
    binarized and corrupted with draws seeded by `batch_seed`; TensorFlow ops only, for tf.data and tf.function."""
    num_pixels = int(np.prod(images.shape[1:]))
    # Held, not captured: a tf.function or tf.data function would copy a captured array into its graph.
    images, labels = hold_on_host(images), hold_on_host(labels)

    def make_batch(indices, batch_seed):
        x = to_unit_float(tf.gather(images, indices))
        if binarize == "dynamic":
            x = tf.cast(tf.random.stateless_uniform(tf.shape(x), batch_seed) < x, tf.float32)
        if flatten:
            x = tf.reshape(x, [-1, num_pixels])
        # Its own seed: drawn with the binarization's, a mask would fall exactly on the pixels that came out white.
        inputs = corrupt_fn(x, batch_seed + 1) if corrupt_fn else x
        return {"input": inputs, "target": x, "label": tf.gather(labels, indices)}

    return make_batch


def make_pipeline(images, labels, batch_size, *, seed, binarize="none", flatten=False, drop_remainder=False,
                  corrupt_fn=None, threads=1):
    """Builds a tf.data pipeline of dicts {"input", "target", "label"} in the arrays' order (validation, test).

    Each batch's binarization and corruption is a pure function of (seed, batch index): every pass, process and
    TensorFlow global seed gives the same batches. Training, which reshuffles, uses `make_train_pipeline`.

    Args:
      images: uint8 `[n, H, W, C]`, a NumPy array or a `hold_on_host` variable.
      labels: int32 `[n]`, likewise.
      batch_size: examples per batch.
      seed: seeds dynamic binarization and corruption.
      binarize: "none", "dynamic" (a fresh Bernoulli sample each time) or "static" (images already sampled).
      flatten: yield `[batch, H*W*C]` instead of `[batch, H, W, C]`.
      drop_remainder: drop a last smaller batch, for static batch shapes.
      corrupt_fn: optional `(target, seed[2]) -> input` applied per batch (denoising models).
      threads: size of the pipeline's private thread pool.

    Returns:
      A dataset of dicts: "input" and "target" float32 in [0, 1], "label" int32 `[batch]`.
    """
    make_batch = _batch_maker(images, labels, binarize, flatten, corrupt_fn)
    # Batches of indices, gathered from the in-memory arrays: nothing to cache, nothing copied per epoch.
    dataset = tf.data.Dataset.range(int(images.shape[0])).batch(batch_size, drop_remainder=drop_remainder).enumerate()

    def to_example(batch_index, indices):
        # A stateless seed pair per batch (`Dataset.random` would also depend on the global seed).
        return make_batch(indices, tf.random.experimental.stateless_fold_in(tf.constant([seed, 1], tf.int64),
                                                                            batch_index))

    dataset = dataset.map(to_example, num_parallel_calls=threads, deterministic=True)
    return _private_threads(dataset.prefetch(2), threads)


def make_train_pipeline(images, labels, batch_size, *, seed, epoch, first_step=0, binarize="none", flatten=False,
                        corrupt_fn=None, threads=1):
    """Builds the training pipeline of one epoch, each batch a pure function of (seed, epoch, step).

    Nothing depends on how often the pipeline was iterated before, so a run restarted in a new process at
    (epoch, step) gets exactly the batches the uninterrupted run got there; no iterator state is needed.

    Args:
      images: uint8 `[n, H, W, C]`, a NumPy array or a `hold_on_host` variable.
      labels: int32 `[n]`, likewise.
      batch_size: examples per batch; the `n % batch_size` left over by the epoch's shuffle are dropped.
      seed: seeds the shuffle and the binarization and corruption of each batch.
      epoch: int, or an int64 tf.Variable read when the epoch's first batch is made: which permutation.
      first_step: skip the epoch's first batches; `steps - first_step` batches remain.
      binarize, flatten, corrupt_fn, threads: as in `make_pipeline` (`binarize="dynamic"` draws a new
        sample of every image each epoch).

    Returns:
      A dataset of `n // batch_size - first_step` dicts: "input" and "target" float32 in [0, 1] (`[batch, ...]`,
      static shapes), "label" int32 `[batch]`.
    """
    batch_from_indices = make_batch_from_indices(images, labels, binarize=binarize, flatten=flatten,
                                                 corrupt_fn=corrupt_fn)
    dataset = _index_batches(int(images.shape[0]), batch_size, seed, epoch, first_step)
    dataset = dataset.map(batch_from_indices, num_parallel_calls=threads, deterministic=True)
    return _private_threads(dataset.prefetch(2), threads)


def make_train_index_pipeline(num_examples, batch_size, *, seed, epoch, first_step=0, threads=1):
    """The batches of `make_train_pipeline` as the indices of their examples, for `make_batch_from_indices`.

    On few cores each op of a tf.data function costs tens of microseconds of thread hand-offs (~180 us a batch for
    a gather and a cast, ~20 us inside a train step), so a train step that gathers its own batch from these is
    faster (docs/performance.md); `make_train_pipeline` maps the same function over them.

    Args:
      num_examples: how many examples the indices point into.
      batch_size, seed, epoch, first_step, threads: as in `make_train_pipeline`.

    Returns:
      A dataset of `num_examples // batch_size - first_step` dicts: "indices" int64 `[batch]`, the examples of the
      batch, and "epoch_key" int64 `[2]` and "step" int64 `[]`, which seed its binarization and corruption.
    """
    return _private_threads(_index_batches(num_examples, batch_size, seed, epoch, first_step).prefetch(2), threads)


def _index_batches(num_examples, batch_size, seed, epoch, first_step):
    steps = num_examples // batch_size

    def epoch_batches(_):
        # Runs once per iteration, when the first batch is asked for: the epoch is read then, not at build time.
        epoch_key = tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64),
                                                             tf.cast(epoch, tf.int64))
        order = tf.random.experimental.stateless_shuffle(tf.range(num_examples, dtype=tf.int64), seed=epoch_key)
        # Unbatching a static [steps, ...] tensor keeps the cardinality known, which Keras needs to count epochs.
        return {"indices": tf.reshape(order[:steps * batch_size], [steps, batch_size]),
                "epoch_key": tf.tile(epoch_key[None], [steps, 1]),
                "step": tf.range(steps, dtype=tf.int64)}

    return tf.data.Dataset.range(1).map(epoch_batches).unbatch().skip(first_step)


def make_batch_from_indices(images, labels, *, binarize="none", flatten=False, corrupt_fn=None):
    """The function from a batch of `make_train_index_pipeline` to the batch `make_train_pipeline` yields there.

    Args:
      images, labels: the examples the indices point into, as in `make_pipeline`.
      binarize, flatten, corrupt_fn: as in `make_pipeline`.

    Returns:
      `batch_from_indices(index_batch) -> {"input", "target", "label"}`, TensorFlow ops only (for tf.data and
      tf.function alike).
    """
    make_batch = _batch_maker(images, labels, binarize, flatten, corrupt_fn)

    def batch_from_indices(index_batch):
        return make_batch(index_batch["indices"], tf.random.experimental.stateless_fold_in(index_batch["epoch_key"],
                                                                                          index_batch["step"]))

    return batch_from_indices


def refuse_batches_beyond(arrays, batch_size, dataset, validation_size):
    """Refuses a `--batch_size` larger than the training examples: train.py, which drops partial batches, would have
    none, and Keras' fit (the classifier) one partial batch an epoch, which trains next to nothing."""
    if len(arrays.train_images) < batch_size:
        raise DataError(f"--batch_size={batch_size} is more than the {len(arrays.train_images)} training examples "
                        f"of {dataset} (--validation_size={validation_size} held out); pass a smaller --batch_size")


def make_datasets(cfg, corrupt_fn=None, channels=1):
    """Loads `cfg.dataset` and returns train / validation / test pipelines; a restoration model's (`cfg.corruption`)
    corrupt their inputs with `corruption.make_corrupt_fn`, unless `corrupt_fn` is given.

    Validation and test are batched without dropping, and with dynamic binarization they draw from a fixed seed,
    so every evaluation sees the same binary images.
    """
    arrays = load_arrays(cfg.dataset, cfg.data_dir, cfg.validation_size, cfg.image_size, channels=channels)
    # Made once the images are read: an image folder's shape is known only then.
    corrupt_fn = corrupt_fn or corruption.make_corrupt_fn(cfg.corruption, cfg.corruption_strength,
                                                          arrays.train_images.shape[1:])
    refuse_batches_beyond(arrays, cfg.batch_size, cfg.dataset, cfg.validation_size)  # Training drops partial batches.
    if cfg.binarize == "static":
        arrays = ImageArrays(**{
            field.name: binarize_static(getattr(arrays, field.name), cfg.seed + i)
            if field.name.endswith("_images") else getattr(arrays, field.name)
            for i, field in enumerate(dataclasses.fields(arrays))})
    common = dict(binarize=cfg.binarize, flatten=cfg.flatten_inputs, corrupt_fn=corrupt_fn,
                  threads=cfg.data_threads)
    # Outside any distribution strategy and on the host, where tf.data reads it.
    with tf.device("/cpu:0"):
        train_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="train_epoch")
    # Held now: a resumed run makes its first epoch's pipeline inside the strategy's scope.
    train_split = [hold_on_host(array) for array in arrays.split("train")]
    train_from = functools.partial(make_train_pipeline, *train_split, cfg.batch_size, seed=cfg.seed,
                                   epoch=train_epoch, **common)
    train_indices_from = functools.partial(make_train_index_pipeline, len(arrays.train_images), cfg.batch_size,
                                           seed=cfg.seed, epoch=train_epoch, threads=cfg.data_threads)
    batch_from_indices = make_batch_from_indices(*train_split, binarize=cfg.binarize, flatten=cfg.flatten_inputs,
                                                 corrupt_fn=corrupt_fn)
    validation = make_pipeline(*arrays.split("validation"), cfg.batch_size, seed=cfg.seed + 1, **common)
    test = make_pipeline(*arrays.split("test"), cfg.batch_size, seed=cfg.seed + 2, **common)
    # A fixed handful of validation examples for pictures, built apart so no pipeline's cache is left half-read.
    preview_arrays = [a[:PREVIEW_SIZE] for a in arrays.split("validation" if cfg.validation_size else "test")]
    preview = next(iter(make_pipeline(*preview_arrays, PREVIEW_SIZE, seed=cfg.seed + 1, **common)))
    return Datasets(train=train_from(first_step=0), train_epoch=train_epoch, train_from=train_from,
                    train_indices_from=train_indices_from, batch_from_indices=batch_from_indices,
                    validation=validation, test=test, preview=preview, arrays=arrays,
                    image_shape=tuple(arrays.train_images.shape[1:]))
