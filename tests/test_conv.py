"""The convolutional VAE: shapes for gray and RGB images, and its flagfile trained, exported and sampled from the
SavedModel alone, train and generate each in a fresh process (mnist and cifar10 through tfds.testing.mock_data)."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import REPO, run_script
from tfvae import config
from tfvae.models import build_model

# Runs scripts/train.py under TFDS mock data: real flags, pipeline and training, random images of the real shape.
TRAIN_ON_MOCK_DATA = """
import runpy, sys
import tensorflow_datasets as tfds
from tfvae import data
script = sys.argv[1]
sys.argv = [script] + sys.argv[2:]
# mock_data stands in for the download, so the check that the download hosts answer goes too (offline here).
data._check_download_reachable = lambda dataset, hosts: None
with tfds.testing.mock_data(num_examples=96):
    runpy.run_path(script, run_name="__main__")
"""


def _conv(**overrides):
    return config.RunConfig(**{"model": "conv", "latent_dim": 5, "likelihood": "bernoulli", "hidden_sizes": (),
                               **overrides})


@pytest.mark.parametrize("image_shape, filters", [((28, 28, 1), (32, 64)), ((32, 32, 3), (32, 64)),
                                                  ((28, 28, 1), (8, 16, 32))])
def test_shapes_of_conv_model(image_shape, filters):
    model = build_model(_conv(conv_filters=filters), image_shape)
    x = tf.random.uniform([3, *image_shape])
    z_mean, z_logvar = model.encode(x)
    assert z_mean.shape == (3, 5) and z_logvar.shape == (3, 5)
    assert model.decode(z_mean).shape == (3, *image_shape)
    strided = [layer for layer in model.encoder.layers if type(layer).__name__ == "Conv2D"]
    assert [layer.filters for layer in strided] == list(filters) and all(l.strides == (2, 2) for l in strided)
    assert not config.RunConfig(model="conv").flatten_inputs


# cifar10 also runs the other training flags end to end: learned Gaussian variance, IWAE, beta and KL warm-up.
MOCK_RUNS = {
    "mnist": ([28, 28, 1], []),
    "cifar10": ([32, 32, 3], ["--likelihood=gaussian", "--learn_variance", "--gaussian_stddev=0.3",
                              "--objective=iwae", "--num_importance_samples=3", "--beta=0.5",
                              "--kl_warmup_epochs=1"]),
}


@pytest.fixture(scope="module", params=sorted(MOCK_RUNS))
def mock_run(request, tmp_path_factory):
    dataset = request.param
    image_shape, extra = MOCK_RUNS[dataset]
    root = tmp_path_factory.mktemp(f"conv_{dataset}")
    export_dir = str(root / "export")
    result = run_script(None, TRAIN_ON_MOCK_DATA, os.path.join(REPO, "scripts", "train.py"),
                        f"--flagfile={REPO}/configs/conv_mnist.flags", f"--dataset={dataset}",
                        "--epochs=1", "--validation_size=32", "--batch_size=16", "--conv_filters=8,16",
                        "--hidden_sizes=32", "--latent_dim=4", "--noimage_summaries", *extra,
                        f"--model_dir={root / 'run'}", f"--export_dir={export_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return {"dataset": dataset, "export_dir": export_dir, "image_shape": image_shape, "stdout": result.stdout,
            "root": root}


def test_mock_run_trains_and_exports_images(mock_run):
    assert "Epoch: 1 Total Loss:" in mock_run["stdout"]
    metadata = json.load(open(os.path.join(mock_run["export_dir"], "tfvae.json")))
    assert metadata["model"] == "conv" and metadata["input_shape"] == mock_run["image_shape"]
    assert metadata["config"]["conv_filters"] == [8, 16]
    metrics = json.load(open(os.path.join(mock_run["export_dir"], "metrics.json")))
    assert all(np.isfinite(v) for v in metrics["test"].values())
    if mock_run["dataset"] == "mnist":
        # Bernoulli nats of random 0/1 pixels: under log 2 per pixel once trained a little, never negative.
        assert 0 < metrics["test"]["reconstruction"] < math.log(2) * np.prod(mock_run["image_shape"]) * 1.5
    else:
        assert (metadata["likelihood"], metadata["config"]["objective"]) == ("gaussian", "iwae")
        # 64 training examples in batches of 16: the weight before the last step of the 1-epoch warm-up is 3/4.
        assert metrics["history"]["kl_weight"] == [0.75]


def test_saved_model_input_is_an_image_batch(mock_run):
    loaded = tf.saved_model.load(mock_run["export_dir"])
    for name in ("encode", "reconstruct", "serving_default"):
        _, specs = loaded.signatures[name].structured_input_signature
        assert specs["input"].shape.as_list() == [None, *mock_run["image_shape"]]
    x = np.random.default_rng(0).random((2, *mock_run["image_shape"])).astype(np.float32)
    assert loaded.signatures["reconstruct"](input=tf.constant(x))["x_hat"].shape == (2, *mock_run["image_shape"])



def test_saved_model_takes_an_empty_batch(mock_run):
    # TensorFlow's oneDNN Conv2D shapes an empty batch's output wrongly; the export runs one zero example instead.
    loaded = tf.saved_model.load(mock_run["export_dir"])
    signatures = loaded.signatures
    latent_dim = signatures["decode"].structured_input_signature[1]["z"].shape[-1]
    image_shape = tuple(mock_run["image_shape"])
    x, z = tf.zeros((0, *image_shape)), tf.zeros((0, latent_dim))
    shapes = lambda outputs: {name: tuple(value.shape) for name, value in outputs.items()}  # noqa: E731
    assert shapes(signatures["reconstruct"](input=x)) == {"x_hat": (0, *image_shape)}
    assert shapes(signatures["encode"](input=x)) == {"z_mean": (0, latent_dim), "z_logvar": (0, latent_dim)}
    assert shapes(signatures["decode"](z=z)) == {"x_hat": (0, *image_shape), "logits": (0, *image_shape)}
    assert shapes(signatures["log_likelihood"](input=x, z=z)) == {"log_px_z": (0,)}
    assert shapes(signatures["log_likelihood_samples"](input=x, z=tf.zeros((3, 0, latent_dim)))) == {
        "log_px_z": (3, 0)}
    # A batch of one is computed as before: its own example, not the padding's.
    one = np.random.default_rng(1).random((2, *image_shape)).astype(np.float32)
    np.testing.assert_allclose(signatures["reconstruct"](input=tf.constant(one[:1]))["x_hat"],
                               signatures["reconstruct"](input=tf.constant(one))["x_hat"][:1], atol=1e-6)

# 28x28x1 samples from a SavedModel alone: test_shipped_conv_mnist_generates_digits_alone.
@pytest.mark.parametrize("mock_run", ["cifar10"], indirect=True)
def test_generate_from_the_saved_model_alone(mock_run):
    output = mock_run["root"] / "samples.png"
    result = run_script("generate.py", f"--saved_model={mock_run['export_dir']}", f"--output={output}",
                        "--rows=2", "--cols=3")
    assert result.returncode == 0, result.stderr[-2000:]
    image = np.asarray(Image.open(output).convert("RGB"))
    assert image.shape[0] > 50 and image.shape[1] > 50 and image.std() > 5


SHIPPED_CONV = os.path.join(REPO, "saved_models", "conv_mnist")


def test_shipped_conv_mnist_generates_digits_alone(tmp_path):
    metadata = json.load(open(os.path.join(SHIPPED_CONV, "tfvae.json")))
    assert metadata["input_shape"] == [28, 28, 1] and metadata["config"]["conv_filters"] == [32, 64]
    metrics = json.load(open(os.path.join(SHIPPED_CONV, "metrics.json")))
    assert metrics["test"]["loss"] < 105  # Nats per binarized test digit (102.0 measured).
    output = tmp_path / "conv.png"
    result = run_script("generate.py", f"--saved_model={SHIPPED_CONV}", f"--output={output}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert np.asarray(Image.open(output).convert("L"), np.float32).std() > 20
    # The shipped export was written with the empty-batch padding (export.py --saved_model rewrites older ones).
    empty = subprocess.run([sys.executable, "-c", "import sys, tensorflow as tf; print(tuple(tf.saved_model.load("
                            "sys.argv[1]).signatures['reconstruct'](input=tf.zeros((0, 28, 28, 1)))['x_hat'].shape))",
                            SHIPPED_CONV], capture_output=True, text=True, timeout=300)
    assert empty.stdout.strip() == "(0, 28, 28, 1)", empty.stderr[-2000:]
