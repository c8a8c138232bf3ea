"""End to end through the scripts: flags, a short real run, its run folder, resume, export and generate."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import REPO, run_script
from tfvae import config


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, mnist_dir):
    """One epoch of the tutorial flagfile on real MNIST (1000 validation examples)."""
    root = tmp_path_factory.mktemp("run")
    model_dir, export_dir = str(root / "model_dir"), str(root / "export")
    args = [f"--flagfile={REPO}/configs/tf1_tutorial.flags", f"--data_dir={mnist_dir}", "--epochs=1",
            "--validation_size=1000", f"--model_dir={model_dir}", f"--export_dir={export_dir}"]
    result = run_script("train.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"model_dir": model_dir, "export_dir": export_dir, "args": args, "stdout": result.stdout,
            "mnist_dir": mnist_dir}


def test_epoch_line_like_the_tutorial(short_run):
    line = next(l for l in short_run["stdout"].splitlines() if l.startswith("Epoch: 1 "))
    loss = float(line.split("Total Loss: ")[1].split()[0])
    validation = float(line.split("Validation Loss: ")[1].split()[0])
    assert 40 < loss < 70 and 35 < validation < 55


def test_run_folder_holds_everything(short_run):
    model_dir = short_run["model_dir"]
    # Checkpoints are numbered by train step: 59,000 examples in batches of 100 make 590 steps an epoch.
    assert os.path.exists(os.path.join(model_dir, "checkpoints", "ckpt-590.index"))
    metrics = json.load(open(os.path.join(model_dir, "metrics.json")))
    assert metrics["epochs_run"] == [1] and 30 < metrics["test"]["loss"] < 55
    assert set(metrics["history"]) >= {"loss", "reconstruction", "kl", "val_loss", "val_reconstruction", "val_kl"}
    # The flags used re-read into the same configuration.
    flags_txt = open(os.path.join(model_dir, "flags.txt")).read()
    assert "--latent_dim=20" in flags_txt and "--likelihood=sse" in flags_txt and "--adam_epsilon=1e-08" in flags_txt


def _event_tags(folder):
    tags = {}
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.setdefault(value.tag, value)
    return tags


def test_tensorboard_scalars_and_images(short_run):
    model_dir = short_run["model_dir"]
    for split in ("train", "validation"):
        assert {"epoch_loss", "epoch_reconstruction", "epoch_kl"} <= set(_event_tags(os.path.join(model_dir, split)))
    assert "epoch_learning_rate" in _event_tags(os.path.join(model_dir, "train"))
    images = _event_tags(os.path.join(model_dir, "images"))
    assert {"samples", "originals_over_reconstructions"} <= set(images)
    encoded = tf.make_ndarray(images["samples"].tensor)[2]  # [width, height, png bytes]
    grid = tf.io.decode_png(encoded).numpy()
    assert grid.shape[:2] == (4 * 29 - 1, 4 * 29 - 1)


def test_resume_continues_at_the_saved_epoch(short_run, tmp_path):
    first = json.load(open(os.path.join(short_run["model_dir"], "metrics.json")))["history"]
    result = run_script("train.py", *short_run["args"], "--epochs=2", "--resume",
                        f"--export_dir={tmp_path / 'export2'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming from" in result.stdout and "at epoch 2" in result.stdout
    assert "Epoch: 2 " in result.stdout and "Epoch: 1 " not in result.stdout
    metrics = json.load(open(os.path.join(short_run["model_dir"], "metrics.json")))
    assert metrics["epochs_run"] == [2]
    assert os.path.exists(os.path.join(short_run["model_dir"], "checkpoints", "ckpt-1180.index"))
    # The whole run's curves, in the run folder and the export: epoch 1 from the first process, 2 from this one.
    exported = json.load(open(tmp_path / "export2" / "metrics.json"))
    for history in (metrics["history"], exported["history"]):
        assert set(history) == set(first)
        assert history["loss"][0] == first["loss"][0] and history["val_loss"][0] == first["val_loss"][0]
        assert len(history["loss"]) == 2 and history["val_loss"][1] < history["val_loss"][0]


LOAD_WITHOUT_TFVAE = """
import sys, json
sys.modules["tfvae"] = None  # This process must not be able to import tfvae.
import numpy as np, tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
x = np.load(sys.argv[2])
out = {k: v.numpy() for k, v in loaded.signatures["encode"](input=tf.constant(x)).items()}
out["x_hat"] = loaded.signatures["serving_default"](input=tf.constant(x))["x_hat"].numpy()
decoded = loaded.signatures["decode"](z=tf.constant(out["z_mean"]))
out["decode_outputs"] = np.array(sorted(decoded))
out["decoded"], out["decoded_logits"] = decoded["x_hat"].numpy(), decoded["logits"].numpy()
np.savez(sys.argv[3], **out)
"""


def test_export_loads_in_a_fresh_process_without_tfvae(short_run, tmp_path):
    from tfvae import data, export
    from tfvae.models import build_model

    export_dir = short_run["export_dir"]
    metadata = export.load_metadata(export_dir)
    assert metadata["input_shape"] == [784] and metadata["latent_dim"] == 20
    x = data.load_arrays("mnist", short_run["mnist_dir"]).test_images[:16].reshape(16, 784).astype(np.float32) / 255
    np.save(tmp_path / "x.npy", x)
    result = run_script(None, LOAD_WITHOUT_TFVAE, export_dir, str(tmp_path / "x.npy"), str(tmp_path / "out.npz"))
    assert result.returncode == 0, result.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    assert out["z_mean"].shape == (16, 20) and out["x_hat"].shape == (16, 784)
    # The live model restored from the run's checkpoint gives the same numbers.
    cfg = config.RunConfig(model="tf1_tutorial", likelihood="sse")
    model = build_model(cfg, (28, 28, 1))
    # ckpt-590 holds the weights of the one-epoch run that was exported (a resume test may add ckpt-1180).
    tf.train.Checkpoint(model=model).restore(
        os.path.join(short_run["model_dir"], "checkpoints", "ckpt-590")).expect_partial()
    z_mean, z_logvar = model.encode(x)
    np.testing.assert_allclose(out["z_mean"], z_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(out["z_logvar"], z_logvar.numpy(), atol=1e-6)
    np.testing.assert_allclose(out["x_hat"], model(x).numpy(), atol=1e-6)
    np.testing.assert_allclose(out["decoded"], out["x_hat"], atol=1e-6)
    # decode gives the TF1 tutorial's x_hat and the logits it is the sigmoid of (the tutorial's SSE likelihood).
    assert out["decode_outputs"].tolist() == ["logits", "x_hat"]
    np.testing.assert_allclose(out["decoded"], 1 / (1 + np.exp(-out["decoded_logits"].astype(np.float64))), atol=1e-6)


def test_saved_model_cli_shows_the_tutorial_interface(short_run):
    import subprocess

    result = subprocess.run(["saved_model_cli", "show", "--dir", short_run["export_dir"], "--all"],
                            capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    for text in ("signature_def['encode']", "signature_def['decode']", "signature_def['reconstruct']",
                 "signature_def['serving_default']", "inputs['input']", "outputs['z_mean']",
                 "outputs['z_logvar']", "outputs['x_hat']", "shape: (-1, 784)"):
        assert text in result.stdout


@pytest.mark.parametrize("extra, size_check", [([], "samples"), (["--reconstruct", "--cols=8"], "pairs")])
def test_generate_writes_a_png(short_run, tmp_path, extra, size_check):
    output = tmp_path / "out.png"
    result = run_script("generate.py", f"--saved_model={short_run['export_dir']}", f"--output={output}",
                        f"--data_dir={short_run['mnist_dir']}", *extra)
    assert result.returncode == 0, result.stderr[-2000:]
    image = np.asarray(Image.open(output).convert("L"), np.float32)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 20  # Digits on black, not a blank canvas.


THREAD_POOLS = """
import dataclasses, json
import tensorflow as tf
from tfvae import config, training
training.set_thread_pools(dataclasses.replace(config.RunConfig(), intra_op_threads=1, inter_op_threads=3))
tf.constant(1.0) + 1.0  # The runtime starts with those pools.
sized = [tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads()]
training.set_thread_pools(dataclasses.replace(config.RunConfig(), intra_op_threads=2))  # Too late: warns, no raise.
print(json.dumps({"sized": sized, "after": tf.config.threading.get_intra_op_parallelism_threads()}))
"""


def test_thread_pool_flags_size_tensorflows_pools_before_it_starts():
    result = subprocess.run([sys.executable, "-c", THREAD_POOLS], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {"sized": [1, 3], "after": 1}
    assert "--intra_op_threads=2 ignored: TensorFlow already runs in this process, with 1" in result.stderr
