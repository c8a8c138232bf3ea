"""The IDX reader on the real files and on broken ones, the TFDS path on mock data, and the tf.data pipelines."""

import gzip
import http.server
import logging
import os
import shutil
import tempfile
import threading
import types

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from conftest import unused_port, write_idx
from tfvae import config, data


def test_real_mnist_splits(mnist_dir):
    arrays = data.load_arrays("mnist", mnist_dir, validation_size=5000)
    assert arrays.train_images.shape == (55000, 28, 28, 1)
    assert arrays.validation_images.shape == (5000, 28, 28, 1)
    assert arrays.test_images.shape == (10000, 28, 28, 1)
    assert arrays.train_images.dtype == np.uint8 and arrays.train_labels.dtype == np.int32
    assert set(np.unique(arrays.test_labels)) == set(range(10))
    # The first test digit of MNIST is a 7, as every tutorial shows.
    assert arrays.test_labels[0] == 7
    # Validation is the first 5000 training examples, train the rest, labels kept with their images: read here
    # straight from the IDX bytes (labels start after the 8-byte header).
    with gzip.open(os.path.join(mnist_dir, "train-labels-idx1-ubyte.gz")) as f:
        raw_labels = np.frombuffer(f.read(), np.uint8, offset=8)
    np.testing.assert_array_equal(arrays.validation_labels[:10], raw_labels[0:10])
    np.testing.assert_array_equal(arrays.train_labels[:10], raw_labels[5000:5010])
    np.testing.assert_array_equal(arrays.train_labels[-10:], raw_labels[-10:])


def _fake_mnist_dir(tmp_path, *, n_train=20, n_test=10, images_magic=2051, train_labels=None, truncate=0):
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images_magic, rng.integers(0, 256, (n_train, 28, 28)),
               truncate=truncate)
    labels = rng.integers(0, 10, n_train) if train_labels is None else train_labels
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", 2049, labels)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 2051, rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 2049, rng.integers(0, 10, n_test))
    return str(tmp_path)


def test_fake_idx_round_trip(tmp_path):
    arrays = data.load_arrays("mnist", _fake_mnist_dir(tmp_path), validation_size=5)
    assert arrays.train_images.shape == (15, 28, 28, 1) and arrays.validation_labels.shape == (5,)


def test_idx_files_unzipped_by_hand_read_as_the_gzipped_ones(tmp_path):
    (tmp_path / "gz").mkdir()
    gzipped = _fake_mnist_dir(tmp_path / "gz")
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in os.listdir(gzipped):
        with gzip.open(os.path.join(gzipped, name)) as f:
            (plain / name[:-len(".gz")]).write_bytes(f.read())
    a, b = data.load_arrays("mnist", gzipped, 5), data.load_arrays("mnist", str(plain), 5)
    assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("train_images", "train_labels", "test_images"))


def test_an_idx_split_without_examples_is_refused_when_read(tmp_path):
    folder = _fake_mnist_dir(tmp_path, n_test=0)
    with pytest.raises(data.DataError, match="t10k-images-idx3-ubyte.gz: holds no images; download it and"):
        data.load_arrays("mnist", folder, validation_size=5)


@pytest.mark.parametrize("breakage, message", [
    (dict(truncate=100), "truncated or corrupt"),
    (dict(images_magic=2049), "wrong IDX magic number 2049"),
    (dict(train_labels=np.zeros(19)), "has 20 images but train-labels-idx1-ubyte.gz has 19 labels"),
    (dict(train_labels=np.full(20, 12)), "label 12 outside [0, 10)"),
    (dict(train_labels=np.full(20, 10)), "label 10 outside [0, 10)"),  # The first label past the classes.
])
def test_broken_idx_files_name_the_file(tmp_path, breakage, message):
    with pytest.raises(data.DataError) as error:
        data.load_arrays("mnist", _fake_mnist_dir(tmp_path, **breakage), validation_size=5)
    assert message in str(error.value)
    assert "-ubyte.gz" in str(error.value)


def test_trailing_bytes_after_the_promised_length_are_refused(tmp_path):
    # Bytes past what the header promises mean a corrupt or mismatched file, as missing ones do.
    folder = _fake_mnist_dir(tmp_path)
    path = os.path.join(folder, "t10k-labels-idx1-ubyte.gz")
    with gzip.open(path, "rb") as f:
        raw = f.read()
    assert len(raw) == 8 + 10  # Magic and count, then 10 labels.
    with gzip.open(path, "wb") as f:
        f.write(raw + b"\x03")
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte.gz: 19 bytes, header promises 18; "
                                             "the file is truncated or corrupt"):
        data.load_arrays("mnist", folder, validation_size=5)


def test_an_idx_folder_of_the_other_dataset_is_refused(tmp_path, mnist_dir):
    # MNIST and Fashion-MNIST share file names; read as the other, a run would silently learn the wrong images.
    with pytest.raises(data.DataError, match="holds mnist's IDX files, not fashion_mnist's"):
        data.load_arrays("fashion_mnist", mnist_dir)
    folder = _fake_mnist_dir(tmp_path)
    # Fashion-MNIST's first ten test labels: ankle boot, pullover, trouser, trouser, shirt, ...
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 2049, np.array([9, 2, 1, 1, 6, 1, 4, 6, 5, 7]))
    with pytest.raises(data.DataError, match="holds fashion_mnist's IDX files, not mnist's.*--dataset=fashion_mnist"):
        data.load_arrays("mnist", folder, validation_size=5)
    assert data.load_arrays("fashion_mnist", folder, validation_size=5).test_labels[0] == 9


def test_not_gzip_and_missing_files(tmp_path):
    folder = _fake_mnist_dir(tmp_path)
    with open(os.path.join(folder, "t10k-images-idx3-ubyte.gz"), "wb") as f:
        f.write(b"this is not gzip")
    with pytest.raises(data.DataError, match="t10k-images-idx3-ubyte.gz: not a readable gzip file"):
        data.load_arrays("mnist", folder, validation_size=5)
    os.remove(os.path.join(folder, "t10k-images-idx3-ubyte.gz"))
    with pytest.raises(data.DataError, match="t10k-images-idx3-ubyte.gz: file not found"):
        data.load_arrays("mnist", folder, validation_size=5)


def test_truncated_copy_of_real_file(tmp_path, mnist_dir):
    for name in os.listdir(mnist_dir):
        shutil.copy(os.path.join(mnist_dir, name), tmp_path / name)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte.gz"):
        data.load_arrays("mnist", str(tmp_path))


def test_missing_data_dir():
    with pytest.raises(data.DataError, match="no such directory"):
        data.load_arrays("mnist", "/nonexistent/MNIST_data")


@pytest.mark.parametrize("dataset, shape", [("mnist", (28, 28, 1)), ("fashion_mnist", (28, 28, 1))])
def test_tfds_path_on_mock_data(dataset, shape, monkeypatch):
    # mock_data stands in for the download, so the check that the download hosts answer goes too (offline here).
    monkeypatch.setattr(data, "_check_download_reachable", lambda dataset, hosts: None)
    with tfds.testing.mock_data(num_examples=30):
        arrays = data.load_arrays(dataset, None, validation_size=10)
    assert arrays.train_images.shape == (20, *shape) and arrays.validation_images.shape == (10, *shape)
    assert arrays.train_images.dtype == np.uint8 and arrays.test_labels.dtype == np.int32


def test_a_damaged_prepared_tfds_dataset_is_named_with_its_fix(tmp_path, monkeypatch):
    records = tmp_path / "mnist-train.tfrecord"
    with tf.io.TFRecordWriter(str(records)) as writer:
        writer.write(b"x" * 1000)
    records.write_bytes(records.read_bytes()[:500])  # Cut short, as a copy that stopped halfway.
    damaged = tf.data.TFRecordDataset(str(records)).map(lambda record: (record, 0))
    builder = types.SimpleNamespace(is_prepared=lambda: True, download_and_prepare=lambda: None,
                                    as_dataset=lambda split, as_supervised: damaged, data_dir=str(tmp_path))
    monkeypatch.setattr(tfds, "builder", lambda name, data_dir: builder)
    with pytest.raises(data.DataError) as error:
        data.load_arrays("mnist", str(tmp_path), validation_size=10)
    message = str(error.value)
    assert message.startswith(f"the prepared TFDS mnist in {tmp_path} is damaged (") and "truncated record" in message
    assert message.endswith("; delete that folder and prepare mnist again") and "function_node" not in message


def test_a_datasets_own_tfds_folder_as_data_dir_points_to_the_folder_above(tmp_path, monkeypatch):
    def offline(dataset, hosts):
        raise data.DataError(f"{dataset} is not downloaded yet and no download host answers")

    monkeypatch.setattr(data, "_check_download_reachable", offline)
    version = tmp_path / "cifar10" / "3.0.2"
    version.mkdir(parents=True)
    (version / "dataset_info.json").write_text("{}")
    with pytest.raises(data.DataError, match="it looks like a dataset's own folder: pass the TFDS data dir above it"):
        data.load_arrays("cifar10", str(tmp_path / "cifar10"))
    assert data.describe_source("cifar10", str(tmp_path)) == f"TFDS cifar10 in {tmp_path}"
    assert data.describe_source("cifar10", "") == "TFDS cifar10 in TFDS's default data folder"


def _pipeline(images, labels, **kwargs):
    return data.make_pipeline(images, labels, 4, seed=3, **kwargs)


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_tfds_download_path_has_what_it_imports(dataset, tmp_path):
    # mock_data never prepares a download; a real one first locates the builder's code through
    # importlib_resources, which TFDS imports without requiring it (setup.cfg declares it).
    builder = tfds.builder(dataset, data_dir=str(tmp_path))
    assert os.path.isfile(str(builder.code_path)) and str(builder.code_path).endswith(".py")


@pytest.mark.parametrize("dataset, source", [("mnist", "https://storage.googleapis.com"),
                                             ("cifar10", "https://www.cs.toronto.edu")])
def test_download_hosts_are_the_mirror_and_the_sources(dataset, source, tmp_path):
    hosts = data._download_hosts(tfds.builder(dataset, data_dir=str(tmp_path)))
    assert hosts[0] == data.TFDS_MIRROR and source in hosts and len(hosts) == len(set(hosts))


@pytest.mark.parametrize("dataset, fix", [("mnist", "--data_dir=PATH/MNIST_data holding the four IDX files"),
                                          ("cifar10", "--data_dir=a TFDS data directory where cifar10 is prepared "
                                                      "(README: Data: prepare it online and copy the folder)")])
def test_unreachable_download_fails_before_tfds_starts_it(dataset, fix, tmp_path, monkeypatch, caplog):
    # TFDS would retry each file ten times with backoff (minutes); no host answering must end it at once.
    monkeypatch.setattr(data, "_download_hosts", lambda builder: [f"http://127.0.0.1:{unused_port()}"])
    started, made = [], []
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", lambda *a, **k: started.append(a))
    make_temp_dir = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: made.append(make_temp_dir(*a, **k)) or made[-1])
    caplog.set_level(logging.WARNING)
    with pytest.raises(data.DataError) as error:
        data.load_arrays(dataset, str(tmp_path))
    message = str(error.value)
    assert f"{dataset} is not downloaded yet and no download host answers" in message and "ConnectionError" in message
    # The folder named comes first: a wrong --data_dir is likelier than a wish to download.
    holds = f"neither {dataset}'s four IDX .gz files nor a prepared TFDS" if dataset == "mnist" else "no prepared TFDS"
    assert message.startswith(f"--data_dir={tmp_path} holds {holds} {dataset}, and {dataset} is not downloaded")
    assert message.endswith(fix) and "\n" not in message and not started
    # The one line is all the user sees: TFDS's warnings stay quiet, and the folder it makes to fetch the dataset's
    # info (and, offline, leaves) is gone.
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING], caplog.records
    assert made and not [folder for folder in made if os.path.exists(folder)]


def test_any_http_answer_means_reachable():
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        data._check_download_reachable("mnist", [f"http://127.0.0.1:{unused_port()}",
                                                 f"http://127.0.0.1:{server.server_address[1]}"])
        with pytest.raises(data.DataError, match="no download host answers"):
            data._check_download_reachable("mnist", [f"http://127.0.0.1:{unused_port()}"])
    finally:
        server.shutdown()


def test_pipeline_batches_flat_and_image(tmp_path):
    arrays = data.load_arrays("mnist", _fake_mnist_dir(tmp_path), validation_size=5)
    images, labels = arrays.split("train")
    batch = next(iter(_pipeline(images, labels, flatten=True, drop_remainder=True)))
    assert batch["input"].shape == (4, 784) and batch["label"].shape == (4,)
    x = batch["input"].numpy()
    # uint8 gray levels scaled to [0, 1] exactly: multiples of 1/255, the images' full range reached.
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_allclose(x * 255, np.round(x * 255), atol=1e-4)
    image_batches = _pipeline(images, labels, drop_remainder=True)
    assert image_batches.element_spec["input"].shape == (4, 28, 28, 1)  # Static batch shapes for training.


def test_evaluation_pipeline_keeps_order_and_ignores_the_global_seed(tmp_path):
    arrays = data.load_arrays("mnist", _fake_mnist_dir(tmp_path), validation_size=0)
    images, labels = arrays.split("train")

    def one_pass(dataset):
        batches = list(dataset)
        return [np.concatenate([b[key].numpy() for b in batches]) for key in ("label", "input")]

    dataset = _pipeline(images, labels, binarize="dynamic")
    labels_seen, binary = one_pass(dataset)
    np.testing.assert_array_equal(labels_seen, labels)  # In the arrays' order, every example once.
    # Every pass draws the same sample, whatever TensorFlow's global seed: only `seed` and the batch choose it.
    try:
        for global_seed in (1, 2):
            tf.random.set_seed(global_seed)
            np.testing.assert_array_equal(one_pass(dataset)[1], binary)
            np.testing.assert_array_equal(one_pass(_pipeline(images, labels, binarize="dynamic"))[1], binary)
    finally:
        tf.random.set_seed(None)  # Unseeded again for the tests after this one in the process.
    other_seed = one_pass(data.make_pipeline(images, labels, 4, seed=4, binarize="dynamic"))[1]
    assert np.mean(other_seed != binary) > 0.05
    # Batches get seeds of their own: the second batch's sample is not the first one's noise again.
    same_images = np.repeat(images[:1], 8, axis=0)
    twice = one_pass(data.make_pipeline(same_images, labels[:8], 4, seed=3, binarize="dynamic"))[1]
    assert np.mean(twice[:4] != twice[4:]) > 0.05


def test_evaluation_pipeline_keeps_a_last_smaller_batch_unless_told_to_drop_it():
    images, labels = np.zeros((10, 28, 28, 1), np.uint8), np.arange(10, dtype=np.int32)
    kept = [b["label"].numpy().tolist() for b in data.make_pipeline(images, labels, 4, seed=0)]
    assert kept == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # Every test example is scored.
    dropped = data.make_pipeline(images, labels, 4, seed=0, drop_remainder=True)
    assert [len(b["label"]) for b in dropped] == [4, 4]


def test_corruption_draws_apart_from_the_binarization_of_the_same_batch():
    """corrupt_fn gets a seed of its own: drawn with the binarization's, a mask would fall exactly on the pixels
    that came out white. Here corrupt_fn returns the uniform draws it would use."""
    gray = np.full((8, 28, 28, 1), 128, np.uint8)
    labels = np.zeros(8, np.int32)
    draws = lambda x, seed: tf.random.stateless_uniform(tf.shape(x), seed)  # noqa: E731
    epoch = tf.Variable(0, dtype=tf.int64)
    for pipeline in (data.make_pipeline(gray, labels, 4, seed=5, binarize="dynamic", corrupt_fn=draws),
                     data.make_train_pipeline(gray, labels, 4, seed=5, epoch=epoch, binarize="dynamic",
                                              corrupt_fn=draws)):
        for batch in pipeline:
            as_if_binarized = (batch["input"].numpy() < 128 / 255).astype(np.float32)
            assert np.mean(as_if_binarized != batch["target"].numpy()) > 0.3  # Independent draws: about 0.5.

def test_dynamic_binarization_is_binary_with_the_right_mean(mnist_dir):
    arrays = data.load_arrays("mnist", mnist_dir)
    images, labels = arrays.test_images[:2000], arrays.test_labels[:2000]
    batch = next(iter(data.make_pipeline(images, labels, 2000, seed=0, binarize="dynamic")))
    x = batch["input"].numpy()
    assert set(np.unique(x)) == {0.0, 1.0}
    # A Bernoulli sample keeps the mean gray level.
    assert abs(x.mean() - images.mean() / 255.0) < 0.005
    again = next(iter(data.make_pipeline(images, labels, 2000, seed=0, binarize="dynamic")))
    np.testing.assert_array_equal(x, again["input"].numpy())


def test_static_binarization_eagerly_and_fixed():
    images = np.full((2, 28, 28, 1), 128, np.uint8)
    a, b = data.binarize_static(images, 1), data.binarize_static(images, 1)
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) == {0, 255}
    # A gray level of 51 is white with probability 51/255 = 0.2 (6272 pixels: a standard error of 0.005).
    dim = data.binarize_static(np.full((8, 28, 28, 1), 51, np.uint8), 2)
    assert abs((dim == 255).mean() - 0.2) < 0.03


def test_to_unit_float_is_numpys_division_eagerly_in_tf_data_and_in_a_tf_function():
    # In a tf.function Grappler made `cast(x) / 255` a multiplication: 126 of the 256 values were an ulp off.
    images = np.arange(256, dtype=np.uint8)[None]
    expected = images.astype(np.float32) / np.float32(255)
    eager = data.to_unit_float(images).numpy()
    in_pipeline = next(iter(tf.data.Dataset.from_tensors(images).map(data.to_unit_float))).numpy()
    in_function = tf.function(lambda x: data.to_unit_float(x + tf.zeros_like(x)))(tf.constant(images)).numpy()
    np.testing.assert_allclose(eager[0, [0, 255, 51]], [0.0, 1.0, 0.2], atol=1e-7)
    for made in (eager, in_pipeline, in_function):
        np.testing.assert_array_equal(made, expected)


def test_each_step_of_an_epoch_draws_its_own_binarization_in_tf_data_and_in_a_step():
    gray = np.full((8, 28, 28, 1), 128, np.uint8)
    labels = np.zeros(8, np.int32)
    epoch = tf.Variable(0, dtype=tf.int64)
    pipeline = data.make_train_pipeline(gray, labels, 4, seed=5, epoch=epoch, binarize="dynamic")
    batch_from_indices = tf.function(data.make_batch_from_indices(gray, labels, binarize="dynamic"))
    made_in_step = [batch_from_indices(b) for b in data.make_train_index_pipeline(8, 4, seed=5, epoch=epoch)]
    for first, second in (list(pipeline), made_in_step):
        # The same gray images: only the seed of each step tells the two samples apart.
        assert np.mean(first["input"].numpy() != second["input"].numpy()) > 0.3


@pytest.mark.parametrize("binarize, corruption", [("none", "none"), ("dynamic", "mixed")])
def test_batches_made_from_indices_in_a_step_are_the_pipelines(mnist_dir, binarize, corruption):
    """training.training_batches lets the train step make its batches from index batches: exactly the batches
    tf.data makes, from any first step, in a tf.function as in the pipeline, corruption and binarization too."""
    from tfvae import corruption as corruption_lib

    cfg = config.RunConfig(data_dir=mnist_dir, batch_size=50, validation_size=59500, binarize=binarize,
                           corruption=corruption, corruption_strength=0.5 if corruption != "none" else 0.0)
    datasets = data.make_datasets(cfg, corrupt_fn=corruption_lib.make_corrupt_fn(
        cfg.corruption, cfg.corruption_strength, (28, 28, 1)))
    datasets.train_epoch.assign(2)
    made_in_step = tf.function(datasets.batch_from_indices)
    index_batches = datasets.train_indices_from(first_step=3)
    assert index_batches.cardinality() == datasets.train_from(first_step=3).cardinality() == 7
    assert index_batches.element_spec["indices"].shape == (50,) and index_batches.element_spec["step"].shape == ()
    pairs = list(zip(index_batches, datasets.train_from(first_step=3)))
    assert len(pairs) == 7
    for index_batch, batch in pairs:
        made = made_in_step(index_batch)
        for key in ("input", "target", "label"):
            assert made[key].shape == batch[key].shape
            np.testing.assert_array_equal(made[key].numpy(), batch[key].numpy(), err_msg=key)
    if corruption != "none":  # Not trivially equal: the input is a corrupted target.
        assert not np.array_equal(pairs[0][1]["input"].numpy(), pairs[0][1]["target"].numpy())


def test_make_datasets_from_config(mnist_dir):
    cfg = config.RunConfig(data_dir=mnist_dir, batch_size=100)
    datasets = data.make_datasets(cfg)
    assert datasets.image_shape == (28, 28, 1)
    assert datasets.train.element_spec["input"].shape == (100, 784)
    assert datasets.preview["input"].shape == (data.PREVIEW_SIZE, 784)
    assert sum(1 for _ in datasets.validation) == 50


def test_a_resumed_epoch_made_in_a_strategy_scope_gathers_from_the_held_arrays(mnist_dir):
    # training.train makes a resumed run's first epoch inside the strategy's scope, where a new variable would be
    # a replicated one; make_datasets held the training arrays on the host before, so none is made there.
    cfg = config.RunConfig(data_dir=mnist_dir, batch_size=100, validation_size=59000)
    datasets = data.make_datasets(cfg)
    created = []

    def record(next_creator, **kwargs):
        created.append(kwargs.get("name"))
        return next_creator(**kwargs)

    with tf.distribute.OneDeviceStrategy("/cpu:0").scope(), tf.variable_creator_scope(record):
        resumed = datasets.train_from(first_step=3)
    assert created == []
    whole_epoch = [batch["label"].numpy() for batch in datasets.train]
    assert len(whole_epoch) == 10
    np.testing.assert_array_equal(np.concatenate([batch["label"].numpy() for batch in resumed]),
                                  np.concatenate(whole_epoch[3:]))


def _epoch(dataset):
    batches = list(dataset)
    return np.concatenate([b["label"].numpy() for b in batches]), np.concatenate([b["input"].numpy() for b in batches])


def test_train_pipeline_is_a_function_of_seed_epoch_and_step():
    # Labels 0..42 name the examples: 43 examples in batches of 4 make 10 steps, 3 examples dropped per epoch.
    images = np.random.default_rng(0).integers(0, 256, (43, 28, 28, 1), dtype=np.uint8)
    labels = np.arange(43, dtype=np.int32)
    epoch = tf.Variable(0, dtype=tf.int64)
    make = lambda **kwargs: data.make_train_pipeline(images, labels, 4, seed=3, epoch=epoch,  # noqa: E731
                                                     binarize="dynamic", flatten=True, **kwargs)
    dataset = make()
    assert dataset.cardinality() == 10 and dataset.element_spec["input"].shape == (4, 784)
    order_0, x_0 = _epoch(dataset)
    assert len(set(order_0)) == 40 and set(np.unique(x_0)) == {0.0, 1.0}
    # Iterating again, or in a new pipeline (a restarted process), gives the same epoch: no hidden state.
    for again in (dataset, make()):
        order, x = _epoch(again)
        np.testing.assert_array_equal(order, order_0)
        np.testing.assert_array_equal(x, x_0)
    # The variable is read when an epoch starts: another permutation, and another binarization of each image.
    epoch.assign(1)
    order_1, x_1 = _epoch(dataset)
    assert not np.array_equal(order_1, order_0)
    same = [i for i in order_1 if i in order_0]
    assert not np.array_equal(x_1[[list(order_1).index(i) for i in same]], x_0[[list(order_0).index(i) for i in same]])
    # first_step: exactly the rest of the epoch.
    tail_order, tail_x = _epoch(make(first_step=7))
    np.testing.assert_array_equal(tail_order, order_1[28:])
    np.testing.assert_array_equal(tail_x, x_1[28:])
    # Another seed, another order.
    other = data.make_train_pipeline(images, labels, 4, seed=4, epoch=1)
    assert not np.array_equal(_epoch(other)[0], order_1)


def test_model_data_dir_is_the_flag_or_the_recorded_folder_if_it_is_here(tmp_path):
    recorded = {"config": {"data_dir": str(tmp_path)}}
    assert data.model_data_dir(recorded, "/given") == "/given"
    assert data.model_data_dir(recorded, "") == str(tmp_path)
    # Trained on another machine: its folder is not here, so TFDS's default.
    assert data.model_data_dir({"config": {"data_dir": str(tmp_path / "gone")}}, "") == ""
    assert data.model_data_dir({}, "") == ""


def test_a_models_data_folder_that_is_gone_is_named_in_the_warning_and_in_the_error(tmp_path, monkeypatch, caplog,
                                                                                    mnist_dir):
    gone = str(tmp_path / "gone" / "MNIST_data")
    metadata = {"dataset": "mnist", "config": {"data_dir": gone}}

    def offline(dataset, hosts):
        raise data.DataError(f"{dataset} is not downloaded yet and no download host answers; offline, pass X")

    monkeypatch.setattr(data, "_check_download_reachable", offline)
    caplog.set_level(logging.WARNING)
    with pytest.raises(data.DataError) as error:
        data.load_model_arrays(metadata, "", validation_size=10)
    assert str(error.value).startswith(f"this model was trained from --data_dir={gone}, which is not here, so TFDS's "
                                       f"default was tried: mnist is not downloaded yet")
    # Online, TFDS's copy is read (mock_data stands in), and the warning says it is not the recorded folder.
    monkeypatch.setattr(data, "_check_download_reachable", lambda dataset, hosts: None)
    caplog.clear()
    with tfds.testing.mock_data(num_examples=30):
        arrays = data.load_model_arrays(metadata, "", validation_size=10)
    assert arrays.train_images.shape == (20, 28, 28, 1)
    assert any(gone in record.getMessage() and "TFDS's default" in record.getMessage() for record in caplog.records)
    # A folder that is here, or one given: read as before, without a warning.
    caplog.clear()
    arrays = data.load_model_arrays({"dataset": "mnist", "config": {"data_dir": mnist_dir}}, "", validation_size=10)
    assert len(arrays.test_images) == 10000 and not caplog.records


def test_idx_images_of_another_size_are_refused(tmp_path):
    # Else 32x32 images would train as MNIST's 28x28, rows wrapped.
    rng = np.random.default_rng(0)
    folder = _fake_mnist_dir(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", 2051, rng.integers(0, 256, (20, 32, 32)))
    with pytest.raises(data.DataError, match=r"item shape \(32, 32\), expected \(28, 28\)"):
        data.load_arrays("mnist", folder, validation_size=5)


def test_each_split_draws_its_own_binarization(tmp_path):
    # Identical gray images everywhere: a split reusing another's seed would give it the same binary images.
    folder = _fake_mnist_dir(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", 2051, np.full((20, 28, 28), 128))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 2051, np.full((10, 28, 28), 128))
    static = data.make_datasets(config.RunConfig(model="mlp", data_dir=folder, validation_size=5, batch_size=5,
                                                 binarize="static")).arrays
    assert set(np.unique(static.train_images)) == {0, 255}
    assert not np.array_equal(static.validation_images, static.train_images[:5])
    assert not np.array_equal(static.test_images[:5], static.train_images[:5])
    dynamic = data.make_datasets(config.RunConfig(model="mlp", data_dir=folder, validation_size=5, batch_size=5,
                                                  binarize="dynamic"))
    validation, test = (next(iter(pipeline))["input"].numpy() for pipeline in (dynamic.validation, dynamic.test))
    assert not np.array_equal(validation, test[:5])
