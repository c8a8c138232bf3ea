"""The convolutional VAE: shapes for gray and RGB images, and its flagfile trained, exported and sampled from the
SavedModel alone, train and generate each in a fresh process (mnist and cifar10 through tfds.testing.mock_data)."""

import json
import os

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
script = sys.argv[1]
sys.argv = [script] + sys.argv[2:]
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


def test_conv_flagfile_gives_the_recipe():
    text = open(os.path.join(REPO, "configs", "conv_mnist.flags")).read()
    assert "--model=conv" in text and "--conv_filters=32,64" in text and "# Expect:" in text


@pytest.fixture(scope="module", params=[("mnist", [28, 28, 1]), ("cifar10", [32, 32, 3])], ids=["mnist", "cifar10"])
def mock_run(request, tmp_path_factory):
    dataset, image_shape = request.param
    root = tmp_path_factory.mktemp(f"conv_{dataset}")
    export_dir = str(root / "export")
    result = run_script(None, TRAIN_ON_MOCK_DATA, os.path.join(REPO, "scripts", "train.py"), f"--flagfile={REPO}/configs/conv_mnist.flags", f"--dataset={dataset}",
                        "--epochs=1", "--validation_size=32", "--batch_size=16", "--conv_filters=8,16",
                        "--hidden_sizes=32", "--latent_dim=4", "--noimage_summaries",
                        f"--model_dir={root / 'run'}", f"--export_dir={export_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return {"export_dir": export_dir, "image_shape": image_shape, "stdout": result.stdout, "root": root}


def test_mock_run_trains_and_exports_images(mock_run):
    assert "Epoch: 1 Total Loss:" in mock_run["stdout"]
    metadata = json.load(open(os.path.join(mock_run["export_dir"], "tfvae.json")))
    assert metadata["model"] == "conv" and metadata["input_shape"] == mock_run["image_shape"]
    assert metadata["config"]["conv_filters"] == [8, 16]
    metrics = json.load(open(os.path.join(mock_run["export_dir"], "metrics.json")))
    # Bernoulli nats of random 0/1 pixels: about log 2 per pixel at worst, never negative.
    assert 0 < metrics["test"]["reconstruction"] < 1.0 * np.prod(mock_run["image_shape"])


def test_saved_model_input_is_an_image_batch(mock_run):
    loaded = tf.saved_model.load(mock_run["export_dir"])
    for name in ("encode", "reconstruct", "serving_default"):
        _, specs = loaded.signatures[name].structured_input_signature
        assert specs["input"].shape.as_list() == [None, *mock_run["image_shape"]]
    x = np.random.default_rng(0).random((2, *mock_run["image_shape"])).astype(np.float32)
    assert loaded.signatures["reconstruct"](input=tf.constant(x))["x_hat"].shape == (2, *mock_run["image_shape"])


def test_generate_from_the_saved_model_alone(mock_run):
    output = mock_run["root"] / "samples.png"
    result = run_script("generate.py", f"--saved_model={mock_run['export_dir']}", f"--output={output}",
                        "--rows=2", "--cols=3")
    assert result.returncode == 0, result.stderr[-2000:]
    image = np.asarray(Image.open(output).convert("RGB"))
    assert image.shape[0] > 50 and image.shape[1] > 50 and image.std() > 5
