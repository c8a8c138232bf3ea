"""Flagfile headers, and configs/pytorch_tutorial.flags: the PyTorch tutorial's network, one real epoch, export
and samples alone."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, run_script
from tfvae import config
from tfvae.models import build_model


@pytest.mark.parametrize("name", ["pytorch_tutorial", "conv_mnist", "cvae_mnist"])
def test_flagfile_header_states_command_and_measured_result(name):
    lines = open(os.path.join(REPO, "configs", f"{name}.flags")).read().splitlines()
    header = [line for line in lines if line.startswith("#")]
    assert any(f"python scripts/train.py --flagfile=configs/{name}.flags" in line for line in header)
    assert any(line.startswith("# Expect (measured") for line in header)
    assert f"--name={name}" in lines and f"--export_dir=saved_models/{name}" in lines


@pytest.fixture(scope="module")
def tutorial_run(tmp_path_factory, mnist_dir):
    root = tmp_path_factory.mktemp("pytorch_tutorial")
    export_dir = str(root / "export")
    result = run_script("train.py", f"--flagfile={REPO}/configs/pytorch_tutorial.flags", f"--data_dir={mnist_dir}",
                        "--epochs=1", "--validation_size=1000", "--noimage_summaries",
                        f"--model_dir={root / 'run'}", f"--export_dir={export_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return {"export_dir": export_dir, "root": root, "stdout": result.stdout}


def test_flagfile_is_the_pytorch_tutorial(tutorial_run):
    cfg = json.load(open(os.path.join(tutorial_run["export_dir"], "tfvae.json")))["config"]
    assert (cfg["model"], cfg["hidden_sizes"], cfg["latent_dim"], cfg["likelihood"]) == ("mlp", [128, 64], 2,
                                                                                          "bernoulli")
    assert (cfg["batch_size"], cfg["learning_rate"], cfg["objective"], cfg["beta"]) == (128, 1e-3, "elbo", 1.0)
    model = build_model(config.RunConfig(**{**cfg, "hidden_sizes": tuple(cfg["hidden_sizes"]),
                                            "conv_filters": tuple(cfg["conv_filters"])}), (28, 28, 1))
    assert [tuple(v.shape) for v in model.trainable_variables] == [
        (784, 128), (128,), (128, 64), (64,), (64, 4), (4,), (2, 64), (64,), (64, 128), (128,), (128, 784), (784,)]


def test_one_epoch_reaches_the_tutorial_loss(tutorial_run):
    metrics = json.load(open(os.path.join(tutorial_run["export_dir"], "metrics.json")))
    # Binary cross entropy of gray digits + KL, nats per example: ~543 untrained.
    assert metrics["history"]["val_loss"][0] < 200 and metrics["test"]["loss"] < 200


def test_samples_from_the_saved_model_alone(tutorial_run):
    output = tutorial_run["root"] / "samples.png"
    result = run_script("generate.py", f"--saved_model={tutorial_run['export_dir']}", f"--output={output}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert np.asarray(Image.open(output).convert("L"), np.float32).std() > 20
