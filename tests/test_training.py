"""End to end through the scripts: flags, a short real run, its run folder, resume, export and generate."""

import dataclasses
import glob
import json
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import REPO, run_script, session_start
from tfvae import cli, config, data, training


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
    # What it read: the folder and a fingerprint of the examples, recomputed here from the files.
    record = json.load(open(os.path.join(model_dir, "data.json")))
    assert record["source"] == f"the IDX files in {os.path.abspath(short_run['mnist_dir'])}"
    assert record["fingerprint"] == data.fingerprint(data.load_arrays("mnist", short_run["mnist_dir"], 1000))


def _event_tags(folder):
    tags = {}
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.setdefault(value.tag, value)
    return tags


def _tag_steps(folder, tag):
    """The steps of every `tag` event in the event files directly in `folder`, in the order of the files' names."""
    return [event.step for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*")))
            for event in tf.compat.v1.train.summary_iterator(path) for value in event.summary.value if value.tag == tag]


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


def test_a_restoration_models_images_show_corrupted_restored_and_clean_rows(tmp_path):
    from tfvae.models import build_model

    model = build_model(config.RunConfig(model="mlp", hidden_sizes=(8,), latent_dim=2, likelihood="bernoulli"),
                        (28, 28, 1))
    clean = np.random.default_rng(0).random((5, 784), np.float32)
    corrupted = np.where(clean > 0.9, 1.0, clean * 0.5).astype(np.float32)
    originals = {"input": tf.constant(corrupted), "target": tf.constant(clean), "label": tf.zeros([5], tf.int32)}
    callback = training.ImageSummaries(str(tmp_path), (28, 28, 1), originals, seed=0, corruption_kind="mask")
    callback.set_model(model)
    callback.on_epoch_end(0)
    images = _event_tags(str(tmp_path))
    assert set(images) == {"samples", "corrupted_over_restored_over_clean"}
    grid = tf.io.decode_png(tf.make_ndarray(images["corrupted_over_restored_over_clean"].tensor)[2]).numpy()
    assert grid.shape[:2] == (3 * 29 - 1, 5 * 29 - 1)
    rows = [grid[29 * r:29 * r + 28, :28, 0] for r in (0, 2)]  # The first column's corrupted and clean digits.
    np.testing.assert_allclose(rows[0], np.round(corrupted[0].reshape(28, 28) * 255), atol=1)
    np.testing.assert_allclose(rows[1], np.round(clean[0].reshape(28, 28) * 255), atol=1)


def test_a_mixed_restoration_models_image_shows_each_kind_in_turn_and_names_the_columns(tmp_path):
    from tfvae.models import build_model

    model = build_model(config.RunConfig(model="mlp", hidden_sizes=(8,), latent_dim=2, likelihood="bernoulli"),
                        (28, 28, 1))
    clean = np.random.default_rng(0).random((6, 784), np.float32)
    # The pipeline's random draw of kinds, which the image replaces with one kind per column in turn.
    originals = {"input": tf.zeros([6, 784]), "target": tf.constant(clean), "label": tf.zeros([6], tf.int32)}
    callback = training.ImageSummaries(str(tmp_path), (28, 28, 1), originals, seed=0, corruption_kind="mixed",
                                       corruption_strength=1.0)
    callback.set_model(model)
    callback.on_epoch_end(0)
    image = _event_tags(str(tmp_path))["corrupted_over_restored_over_clean"]
    assert image.metadata.summary_description == ("Columns, left to right: left clean, gaussian_noise, gaussian_blur, "
                                                  "mask, downsample, left clean")
    grid = tf.io.decode_png(tf.make_ndarray(image.tensor)[2]).numpy()[..., 0].astype(int)
    corrupted = [grid[:28, 29 * c:29 * c + 28] for c in range(6)]
    as_png = [np.round(image_.reshape(28, 28) * 255) for image_ in clean]
    for column in (0, 5):  # Left clean.
        np.testing.assert_allclose(corrupted[column], as_png[column], atol=1)
    for column in (1, 2, 3, 4):
        assert np.abs(corrupted[column] - as_png[column]).mean() > 10, column


def test_an_autoregressive_models_images_add_the_grid_drawn_from_p_x_given_z(tmp_path):
    from tfvae.models import build_model

    model = build_model(config.RunConfig(model="mlp", hidden_sizes=(8,), latent_dim=2,
                                         likelihood="autoregressive_bernoulli"), (28, 28, 1))
    originals = {"input": tf.zeros([3, 784]), "target": tf.zeros([3, 784]), "label": tf.zeros([3], tf.int32)}
    callback = training.ImageSummaries(str(tmp_path), (28, 28, 1), originals, seed=5)
    callback.set_model(model)
    callback.on_epoch_end(0)
    callback.on_epoch_end(1)
    images = _event_tags(str(tmp_path))
    assert set(images) == {"samples", "samples_drawn", "originals_over_reconstructions"}
    assert images["samples"].metadata.summary_description.startswith("The mean-field images of the autoregressive")
    assert images["samples_drawn"].metadata.summary_description.startswith("Drawn from p(x|z) pixel by pixel")
    grids = {tag: tf.io.decode_png(tf.make_ndarray(images[tag].tensor)[2]).numpy()[..., 0]
             for tag in ("samples", "samples_drawn")}
    assert grids["samples_drawn"].shape == grids["samples"].shape == (4 * 29 - 1, 4 * 29 - 1)
    tiles = [grids[tag][:28, :28].astype(int) for tag in ("samples", "samples_drawn")]
    assert set(np.unique(tiles[1])) == {0, 255}  # Drawn pixels are black or white; the means are gray levels.
    assert 0 < tiles[0].min() and tiles[0].max() < 255
    # The first tile is the draw from the grid's first z with the callback's seed, whatever the epoch.
    z = np.random.default_rng(5).standard_normal((16, 2)).astype(np.float32)
    expected = model.likelihood.sample(model.decode(tf.constant(z), tf.zeros([16], tf.int32)),
                                       tf.constant([5, 4], tf.int64))[0].numpy().reshape(28, 28)
    np.testing.assert_array_equal(tiles[1], np.round(expected * 255))
    steps = _tag_steps(str(tmp_path), "samples_drawn")
    assert steps == [0, 1]


def test_a_conditional_models_sample_image_has_one_row_per_class(tmp_path):
    from tfvae.models import build_model

    model = build_model(config.RunConfig(model="cvae", hidden_sizes=(8,), latent_dim=2, likelihood="bernoulli"),
                        (28, 28, 1))
    originals = {"input": tf.zeros([3, 784]), "target": tf.zeros([3, 784]), "label": tf.constant([0, 1, 2])}
    callback = training.ImageSummaries(str(tmp_path / "mnist"), (28, 28, 1), originals, seed=0,
                                       data_labels={"dataset": "mnist"})
    callback.set_model(model)
    callback.on_epoch_end(0)
    samples = _event_tags(str(tmp_path / "mnist"))["samples"]
    grid = tf.io.decode_png(tf.make_ndarray(samples.tensor)[2]).numpy()
    assert grid.shape[:2] == (10 * 29 - 1, 4 * 29 - 1)  # Rows of classes 0-9, labels never wrapping mid-row.
    assert samples.metadata.summary_description == "One row per class, top to bottom: " + ", ".join(
        str(digit) for digit in range(10))
    # An image folder's rows are named by its class folders.
    model = build_model(config.RunConfig(model="cvae", hidden_sizes=(8,), latent_dim=2, likelihood="bernoulli"),
                        (28, 28, 1), num_classes=2)
    originals = dict(originals, label=tf.constant([0, 1, 1]))
    callback = training.ImageSummaries(str(tmp_path / "folder"), (28, 28, 1), originals, seed=0,
                                       data_labels={"dataset": "image_folder", "class_names": ("cats", "dogs")})
    callback.set_model(model)
    callback.on_epoch_end(0)
    samples = _event_tags(str(tmp_path / "folder"))["samples"]
    assert samples.metadata.summary_description == "One row per class, top to bottom: 0 cats, 1 dogs"


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
    # TensorBoard's HParams row shows the resumed process's flags (TensorBoard reads only the first it finds).
    hparams_files = [name for name in os.listdir(short_run["model_dir"]) if name.endswith(".hparams")]
    assert len(hparams_files) == 1, hparams_files
    assert session_start(short_run["model_dir"]).hparams["epochs"].number_value == 2


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


def test_generate_reconstruct_draws_rows_pairs_of_rows(short_run, tmp_path):
    # --rows with --reconstruct is the number of original-over-reconstruction pairs; the default is one pair.
    def draw(*rows):
        output = tmp_path / f"recon{''.join(rows)}.png"
        result = run_script("generate.py", f"--saved_model={short_run['export_dir']}", f"--output={output}",
                            f"--data_dir={short_run['mnist_dir']}", "--reconstruct", "--cols=3", *rows)
        assert result.returncode == 0, result.stderr[-2000:]
        return np.asarray(Image.open(output).convert("L"), np.float32)

    default, one, three = draw(), draw("--rows=1"), draw("--rows=3")
    np.testing.assert_array_equal(default, one)
    assert three.shape[0] / three.shape[1] > 2 * one.shape[0] / one.shape[1]  # Three times the rows, as wide.


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


# Callbacks and run-folder helpers, driven directly (no training run): fast checks of what the end-to-end tests
# above only see in aggregate.

def _fake_clock(monkeypatch, times):
    ticks = iter(times)
    monkeypatch.setattr(training.time, "perf_counter", lambda: next(ticks))


def test_epoch_line_counts_the_examples_of_the_steps_run(monkeypatch, capsys):
    # A clock that reads 10 s, 12 s as validation begins, then 13 s: the epoch took 3 s, its training steps 2 s.
    _fake_clock(monkeypatch, [10.0, 12.0, 13.0])
    line = training.EpochLine(batch_size=10)
    line.set_params({"steps": 5})
    line.on_epoch_begin(0)
    line.on_train_batch_end(1)  # steps_per_execution=2: batch 1 ends steps 0 and 1 ...
    line.on_train_batch_end(4)  # ... and batch 4 the epoch's last, the 5th step.
    line.on_test_begin()
    logs = {"loss": 1.23456, "val_loss": 2.0}
    line.on_epoch_end(0, logs)
    assert logs["examples_per_second"] == pytest.approx(5 * 10 / 2.0)
    assert line.epoch_seconds == {1: pytest.approx(3.0)}
    assert capsys.readouterr().out == "Epoch: 1 Total Loss: 1.2346 Validation Loss: 2.0000 (3.0 s, 25 examples/s)\n"
    line.on_test_begin()  # The test pass after fit: no epoch to time.


def test_epoch_line_of_an_epoch_stopped_early_counts_only_its_steps(monkeypatch, capsys):
    _fake_clock(monkeypatch, [0.0, 4.0])
    line = training.EpochLine(batch_size=100)
    line.set_params({"steps": 600})
    line.on_epoch_begin(2)
    line.on_train_batch_end(199)  # Stopped after 200 of 600 steps.
    logs = {"loss": 3.0}
    line.on_epoch_end(2, logs)
    assert logs["examples_per_second"] == pytest.approx(200 * 100 / 4.0)
    assert capsys.readouterr().out == "Epoch: 3 (stopped after 200 of 600 steps) Total Loss: 3.0000 (4.0 s, 5000 " \
                                      "examples/s)\n"


def test_data_epoch_points_the_pipeline_at_the_epoch_about_to_run():
    epoch = tf.Variable(0, dtype=tf.int64)
    callback = training.DataEpoch(epoch)
    callback.on_epoch_begin(4)
    assert int(epoch.numpy()) == 4
    callback.on_epoch_end(4)  # tf-keras makes the next epoch's iterator before its on_epoch_begin.
    assert int(epoch.numpy()) == 5


def test_epoch_tensorboard_writes_no_evaluation_vs_iterations_scalars(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator
    from tfvae.models import build_model

    cfg = config.RunConfig(model="mlp", hidden_sizes=(8,), latent_dim=2, likelihood="bernoulli", adam="keras")
    model = build_model(cfg, (28, 28, 1))
    model.compile(optimizer=training.make_optimizer(cfg))
    x = np.random.default_rng(0).random((20, 784)).astype(np.float32)
    batches = tf.data.Dataset.from_tensor_slices({"input": x, "target": x, "label": np.zeros(20, np.int32)}).batch(10)
    model.fit(batches, validation_data=batches, epochs=1, verbose=0, shuffle=False,
              callbacks=[training.EpochTensorBoard(log_dir=str(tmp_path), write_graph=False, profile_batch=0)])
    tags = []
    for subdir in ("train", "validation"):
        accumulator = event_accumulator.EventAccumulator(str(tmp_path / subdir),
                                                         size_guidance={event_accumulator.TENSORS: 0})
        accumulator.Reload()
        tags += accumulator.Tags()["tensors"]
    assert "epoch_loss" in tags
    assert not [tag for tag in tags if tag.startswith("evaluation_")], tags


def test_export_metadata_shapes_follow_the_model_kind():
    model = types.SimpleNamespace(num_classes=10)
    flat = training.export_metadata(config.RunConfig(model="cvae", latent_dim=3, likelihood="bernoulli",
                                                     binarize="dynamic"), (28, 28, 1), model)
    assert flat["input_shape"] == [784] and flat["image_shape"] == [28, 28, 1]  # 28 * 28 * 1
    assert (flat["latent_dim"], flat["num_classes"], flat["likelihood_is_density"]) == (3, 10, True)
    conv = training.export_metadata(config.RunConfig(model="conv", likelihood="gaussian"), (32, 32, 3),
                                    types.SimpleNamespace())
    assert conv["input_shape"] == [32, 32, 3] and conv["num_classes"] == 0 and conv["likelihood_is_density"]
    # A Bernoulli of gray levels is a cross-entropy, not a density of the data (as the denoising recipe trains).
    gray = training.export_metadata(config.RunConfig(model="mlp", likelihood="bernoulli", binarize="none"),
                                    (28, 28, 1), types.SimpleNamespace())
    assert not gray["likelihood_is_density"]


def test_prepare_model_dir_clears_an_existing_folder_only_with_overwrite(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("an earlier run's file")
    training.prepare_model_dir(config.RunConfig(model_dir=str(run)))  # --resume: the folder is kept.
    assert sorted(os.listdir(run)) == ["flags.txt", "keep.txt"]
    training.prepare_model_dir(config.RunConfig(model_dir=str(run), overwrite=True))
    assert os.listdir(run) == ["flags.txt"]
    assert "--model_dir=" + str(run) in (run / "flags.txt").read_text().splitlines()


# metrics.json of resumed runs, through training.train in this process: a tiny MLP on synthetic digits, 6 steps an
# epoch, a couple of seconds a run. Each process's own epochs are also in the lines it prints.
TINY_TRAIN, TINY_VALIDATION, TINY_TEST, TINY_BATCH = 60, 20, 20, 10
TINY_STEPS = TINY_TRAIN // TINY_BATCH


needs_flock = pytest.mark.skipif(training.fcntl is None, reason="no flock here: runs are not locked")


def _second_holder(model_dir):
    """Returns "taken", or the line a second holder of the run folder is refused with. flock locks belong to an open
    folder, not a process, so a second hold in this process meets the first as a second train.py would."""
    try:
        with training.hold_model_dir(model_dir):
            return "taken"
    except training.RunConfigError as e:
        return str(e)


def _in_use(model_dir):
    return (f"--model_dir={model_dir} is in use by another train.py that is still running; wait for it to end (or "
            f"stop it), or pass another --model_dir")


@needs_flock
def test_hold_model_dir_refuses_a_second_holder_until_its_block_ends_even_by_an_exception(tmp_path):
    model_dir = str(tmp_path / "run")
    with pytest.raises(training.TrainingInterrupted):
        with training.hold_model_dir(model_dir):
            assert _second_holder(model_dir) == _in_use(model_dir)
            raise training.TrainingInterrupted("stopped by SIGTERM", 15)
    assert _second_holder(model_dir) == "taken"


@needs_flock
def test_a_run_folder_that_cannot_be_locked_is_used_unlocked_with_a_warning(tmp_path, monkeypatch, caplog):
    def flock_as_on_nfs(fd, operation):  # NFS emulates flock with POSIX locks: exclusive ones need a writable file.
        raise OSError(9, "Bad file descriptor")

    monkeypatch.setattr(training.fcntl, "flock", flock_as_on_nfs)
    model_dir = str(tmp_path / "run")
    with training.hold_model_dir(model_dir):
        training.prepare_model_dir(config.RunConfig(model_dir=model_dir))
    assert os.listdir(model_dir) == ["flags.txt"]
    assert f"--model_dir={model_dir} cannot be locked here (Bad file descriptor)" in caplog.text


@needs_flock
def test_prepare_model_dir_with_overwrite_keeps_the_held_folder_and_what_its_links_point_to(tmp_path):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "data.bin").write_text("not the run's")
    run.mkdir()
    (run / "old.txt").write_text("an earlier run's")
    (run / "linked").symlink_to(elsewhere)
    with training.hold_model_dir(str(run)):
        training.prepare_model_dir(config.RunConfig(model_dir=str(run), overwrite=True))
        assert os.listdir(run) == ["flags.txt"]
        assert _second_holder(str(run)) == _in_use(str(run))  # Still the folder this process holds.
    assert (elsewhere / "data.bin").read_text() == "not the run's"


def _synthetic_arrays(dataset, data_dir, validation_size=5000, image_size=(), channels=1):  # As load_arrays.
    images = np.random.default_rng(0).integers(0, 256, (TINY_TRAIN + validation_size + TINY_TEST, 28, 28, 1),
                                               dtype=np.uint8)
    labels = np.arange(len(images), dtype=np.int32) % 10
    v, t = validation_size, validation_size + TINY_TRAIN
    return data.ImageArrays(images[v:t], labels[v:t], images[:v], labels[:v], images[t:], labels[t:])


def _train_tiny(model_dir, monkeypatch, **flags):
    """One train.py process's work (its run folder, then training.train), returning its metrics."""
    from tfvae.models import build_model

    monkeypatch.setattr(data, "load_arrays", _synthetic_arrays)
    cfg = config.RunConfig(model="mlp", hidden_sizes=(8,), latent_dim=2, likelihood="bernoulli", adam="keras",
                           batch_size=TINY_BATCH, validation_size=TINY_VALIDATION, image_summaries=False,
                           model_dir=str(model_dir), **flags)
    training.prepare_model_dir(cfg)
    datasets = data.make_datasets(cfg)
    metrics = training.train(build_model(cfg, datasets.image_shape), datasets, cfg)
    assert json.load(open(os.path.join(model_dir, "metrics.json")))["history"] == metrics["history"]
    return metrics


def test_metrics_say_when_the_test_loss_is_not_the_negative_elbo(tmp_path, monkeypatch):
    metrics = _train_tiny(tmp_path, monkeypatch, epochs=1, beta=4.0, binarize="dynamic")
    test = metrics["test"]
    assert metrics["units"].startswith("nats per example; loss is the objective trained with beta=4, not the "
                                       "negative ELBO")
    assert test["loss"] == pytest.approx(test["reconstruction"] + 4.0 * test["kl"], rel=1e-5)
    # The negative ELBO beside it, in validation and test: the column a beta sweep compares.
    assert test["negative_elbo"] == pytest.approx(test["reconstruction"] + test["kl"], rel=1e-5)
    assert test["negative_elbo"] < test["loss"]
    history = metrics["history"]
    assert history["val_negative_elbo"][0] == pytest.approx(history["val_reconstruction"][0] + history["val_kl"][0],
                                                            rel=1e-5)
    assert "negative_elbo" not in history  # The train step computes only what it trains on.


@pytest.mark.parametrize("stop", [KeyboardInterrupt, cli.Terminated])
def test_a_run_stopped_while_its_model_is_built_leaves_no_run_folder(stop, tmp_path, monkeypatch):
    # Ctrl-C or SIGTERM after flags.txt is written, before training starts: the same command must not be refused
    # for an existing run folder afterwards.
    import tfvae.models

    def interrupted(cfg, image_shape, num_classes=None):
        assert os.path.isfile(os.path.join(cfg.model_dir, "flags.txt"))
        raise stop()

    monkeypatch.setattr(data, "load_arrays", _synthetic_arrays)
    monkeypatch.setattr(tfvae.models, "build_model", interrupted)
    cfg = config.RunConfig(model="mlp", hidden_sizes=(8,), latent_dim=2, batch_size=TINY_BATCH,
                           validation_size=TINY_VALIDATION, model_dir=str(tmp_path / "runs" / "run"),
                           export_dir=str(tmp_path / "export"))
    with pytest.raises(stop):
        training.run(cfg)
    assert os.listdir(tmp_path) == []


def _epoch_lines(stdout):
    """{epoch: (loss, validation loss)} of the `Epoch: ...` lines a process printed."""
    return {int(epoch): (float(loss), float(val_loss)) for epoch, loss, val_loss in
            re.findall(r"^Epoch: (\d+) Total Loss: (\S+) Validation Loss: (\S+) ", stdout, re.M)}


def _assert_epochs_from_lines(history, lines):
    for epoch, (loss, val_loss) in lines.items():
        assert history["loss"][epoch - 1] == pytest.approx(loss, abs=1e-4), epoch
        assert history["val_loss"][epoch - 1] == pytest.approx(val_loss, abs=1e-4), epoch


def test_resumed_metrics_keep_the_earlier_epochs_and_a_metric_new_since_the_resume_is_none_before(
        tmp_path, monkeypatch, capsys):
    first = _train_tiny(tmp_path, monkeypatch, epochs=2)
    capsys.readouterr()
    # Resumed with more epochs and a KL warm-up, whose weight (kl_weight) the first process never logged.
    resumed = _train_tiny(tmp_path, monkeypatch, epochs=4, resume=True, kl_warmup_epochs=4)
    lines = _epoch_lines(capsys.readouterr().out)
    assert sorted(lines) == [3, 4]
    assert resumed["epochs_run"] == [3, 4] and sorted(resumed["epoch_seconds"]) == [1, 2, 3, 4]
    # The first process's seconds, as its metrics.json kept them; this process's beside them.
    assert {epoch: resumed["epoch_seconds"][epoch] for epoch in (1, 2)} == first["epoch_seconds"]
    history = resumed["history"]
    assert "kl_weight" not in first["history"] and set(history) == {*first["history"], "kl_weight"}
    for name, values in first["history"].items():
        assert len(values) == 2 and None not in values
        assert history[name][:2] == values, name  # The first process's epochs, as it wrote them.
        assert len(history[name]) == 4 and None not in history[name], name
    _assert_epochs_from_lines(history, lines)
    # The weight of each epoch's last step of a 4-epoch warm-up, from the resume on; none before.
    assert history["kl_weight"] == [None, None, pytest.approx((3 - 1 / TINY_STEPS) / 4),
                                    pytest.approx((4 - 1 / TINY_STEPS) / 4)]


def test_a_metric_dropped_on_resume_and_a_finished_run_resumed_keep_every_epoch(tmp_path, monkeypatch, capsys):
    first = _train_tiny(tmp_path, monkeypatch, epochs=1, kl_warmup_epochs=2)
    assert first["history"]["kl_weight"] == [pytest.approx((1 - 1 / TINY_STEPS) / 2)]
    # The warm-up's weights are the train step's own: the checkpoint holds the KL weight validation, test and a
    # run without warm-up use (it held the warm-up line's start, ~0, which the resume below trained with).
    assert _checkpoint_kl_weight(tmp_path) == 1.0
    capsys.readouterr()
    assert _tag_steps(tmp_path, "test/loss") == [0]
    second = _train_tiny(tmp_path, monkeypatch, epochs=2, resume=True)  # No warm-up now: no kl_weight.
    # One test point in TensorBoard, of the final model: not the first process's beside it, joined by a line.
    assert _tag_steps(tmp_path, "test/loss") == [1]
    assert _tag_steps(tmp_path / "train", "epoch_loss") == [0, 1]
    lines = _epoch_lines(capsys.readouterr().out)
    assert sorted(lines) == [2] and second["epochs_run"] == [2]
    assert second["history"]["kl_weight"] == [first["history"]["kl_weight"][0], None]
    assert set(second["history"]) == set(first["history"])
    for name, values in first["history"].items():
        assert second["history"][name][0] == values[0], name
        assert len(second["history"][name]) == 2 and (name == "kl_weight" or None not in second["history"][name])
    _assert_epochs_from_lines(second["history"], lines)
    # --epochs lowered below the epochs done is refused: tested and exported, the model would be recorded as a run
    # of fewer epochs than it trained.
    with pytest.raises(training.RunConfigError, match=r"^--epochs=1 is fewer than the run in --model_dir=.* has "
                                                      r"trained \(2 epochs\); pass --epochs=2 or more"):
        _train_tiny(tmp_path, monkeypatch, epochs=1, resume=True)
    # With its own --epochs, nothing is left to train, and the whole history stays, Nones included.
    third = _train_tiny(tmp_path, monkeypatch, epochs=2, resume=True)
    assert "Epoch: " not in capsys.readouterr().out
    # A finished run resumed (nothing to train) keeps every epoch's seconds; only its own training is 0 s.
    assert third["epochs_run"] == [] and third["epoch_seconds"] == second["epoch_seconds"]
    assert sorted(second["epoch_seconds"]) == [1, 2] and third["train_seconds"] < 1.0
    assert third["history"] == second["history"]
    assert _tag_steps(tmp_path, "test/loss") == [1]  # Tested again: the value at step 1 once, not twice.
    test = third["test"]
    assert test["loss"] == pytest.approx(test["reconstruction"] + test["kl"], rel=1e-5)


def test_a_resume_trains_with_the_learning_rate_its_flags_say(tmp_path, monkeypatch):
    # As a diverged run's error advises: lower --learning_rate, then --resume. The checkpoint holds the old rate.
    _train_tiny(tmp_path, monkeypatch, epochs=1, learning_rate=0.01)
    assert _checkpoint_value(tmp_path, "optimizer/_learning_rate") == pytest.approx(0.01)
    _train_tiny(tmp_path, monkeypatch, epochs=2, resume=True, learning_rate=0.002)
    assert _checkpoint_value(tmp_path, "optimizer/_learning_rate") == pytest.approx(0.002)


def test_a_run_started_from_another_trains_with_its_own_learning_rate(tmp_path, monkeypatch):
    # --init_from reads the source's Adam state, its learning rate included: fine-tuning at a lower rate must not
    # train at the source's.
    _train_tiny(tmp_path / "source", monkeypatch, epochs=1, learning_rate=0.01)
    _train_tiny(tmp_path / "tuned", monkeypatch, epochs=1, learning_rate=0.0005, init_from=str(tmp_path / "source"))
    assert _checkpoint_value(tmp_path / "tuned", "optimizer/_learning_rate") == pytest.approx(0.0005)


def test_a_run_folder_starts_a_run_across_float16s_loss_scale_with_its_adam_state(tmp_path, monkeypatch):
    # The resume error's advice for --mixed_precision=mixed_float16 (training.make_optimizer wraps Adam in a loss
    # scale): --init_from the run folder, in both directions.
    from tfvae.compat import keras

    _train_tiny(tmp_path / "float32", monkeypatch, epochs=1)
    steps = _checkpoint_value(tmp_path / "float32", "optimizer/_iterations")
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        _train_tiny(tmp_path / "float16", monkeypatch, epochs=1, mixed_precision="mixed_float16",
                    init_from=str(tmp_path / "float32"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # Adam went on counting from the source's steps (a float16 step that overflows is skipped, not counted).
    continued = _checkpoint_value(tmp_path / "float16", "optimizer/inner_optimizer/_iterations")
    assert steps < continued <= 2 * steps
    _train_tiny(tmp_path / "back", monkeypatch, epochs=1, init_from=str(tmp_path / "float16"))
    assert continued < _checkpoint_value(tmp_path / "back", "optimizer/_iterations") <= continued + steps


def test_a_stop_in_a_resumed_epoch_names_the_step_of_the_epoch():
    callback = training.StopOnBadSteps(max_bad_steps=3, steps_per_epoch=10)
    model = types.SimpleNamespace(stop_training=False, bad_steps_in_a_row=types.SimpleNamespace(
        now=tf.Variable(0.0), longest=tf.Variable(0.0)))
    callback.set_model(model)
    callback.set_params({"steps": 4})  # Resumed at step 7 of 10: the fit runs steps 7 to 10.
    callback.on_train_begin()
    callback.on_epoch_begin(2)
    model.bad_steps_in_a_row.longest.assign(3.0)
    callback.on_train_batch_end(1)
    assert model.stop_training and callback.stopped_at == (3, 8)


def _checkpoint_value(model_dir, name):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")))
    return float(reader.get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE"))


def _checkpoint_kl_weight(model_dir):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")))
    return float(reader.get_tensor("model/kl_weight/.ATTRIBUTES/VARIABLE_VALUE"))


def test_a_checkpoint_of_an_older_warm_up_run_resumes_with_kl_weight_1(tmp_path, monkeypatch, capsys):
    # tfvae before 2026-12-04 kept a warm-up's line in kl_weight: -1 after a 1-epoch warm-up's second epoch.
    _train_tiny(tmp_path, monkeypatch, epochs=1)
    path = tf.train.latest_checkpoint(os.path.join(tmp_path, "checkpoints"))
    from tfvae.models import build_model

    cfg = config.RunConfig(model="mlp", hidden_sizes=(8,), latent_dim=2, likelihood="bernoulli", adam="keras")
    model = build_model(cfg, (28, 28, 1))
    training.compile_model(model, cfg)
    manager, state = training.make_checkpoint_manager(model, dataclasses.replace(cfg, model_dir=str(tmp_path)))
    manager.checkpoint.restore(path).assert_existing_objects_matched()
    model.kl_weight.assign(-1.0)
    manager.checkpoint.write(path)
    assert _checkpoint_kl_weight(tmp_path) == -1.0
    capsys.readouterr()
    resumed = _train_tiny(tmp_path, monkeypatch, epochs=1, resume=True)
    test = resumed["test"]
    assert test["loss"] == pytest.approx(test["reconstruction"] + test["kl"], rel=1e-5)


def test_a_run_resumed_mid_epoch_keeps_the_epochs_before_and_reports_the_rest_once(tmp_path, monkeypatch, capsys):
    first = _train_tiny(tmp_path, monkeypatch, epochs=2, checkpoint_every_steps=4, keep_checkpoints=5)
    # As if it had been killed after step 8 (epoch 2, step 2 of 6): that checkpoint is the latest, no metrics.json.
    checkpoints = tmp_path / "checkpoints"
    assert {f"ckpt-{step}.index" for step in (4, 6, 8, 12)} <= set(os.listdir(checkpoints))
    kept = [str(checkpoints / f"ckpt-{step}") for step in (4, 6, 8)]
    tf.compat.v1.train.update_checkpoint_state(str(checkpoints), kept[-1], all_model_checkpoint_paths=kept)
    os.remove(tmp_path / "metrics.json")
    capsys.readouterr()
    resumed = _train_tiny(tmp_path, monkeypatch, epochs=3, resume=True)
    out = capsys.readouterr().out
    assert f"at epoch 2, step 3 of {TINY_STEPS}" in out
    lines = _epoch_lines(out)
    assert sorted(lines) == [2, 3] and resumed["epochs_run"] == [2, 3] and sorted(resumed["epoch_seconds"]) == [2, 3]
    history = resumed["history"]
    # Epoch 1 from the event files (no metrics.json), with the names an uninterrupted run's metrics.json has.
    assert set(history) == set(first["history"])
    for name, values in first["history"].items():
        assert len(history[name]) == 3 and None not in history[name], name
        assert history[name][0] == pytest.approx(values[0], rel=1e-6), name
    _assert_epochs_from_lines(history, lines)


@pytest.fixture
def global_seeds_restored():
    """training.run seeds Python, NumPy and TensorFlow for the whole process; later tests in it must not inherit it."""
    import random

    python_state, numpy_state = random.getstate(), np.random.get_state()
    yield
    random.setstate(python_state)
    np.random.set_state(numpy_state)
    tf.random.set_seed(None)


def test_a_ctrl_c_before_the_first_checkpoint_leaves_no_run_folder_and_one_after_keeps_it(tmp_path, monkeypatch,
                                                                                           global_seeds_restored):
    from tfvae import summaries

    monkeypatch.setattr(data, "load_arrays", _synthetic_arrays)
    cfg = config.RunConfig(model="mlp", hidden_sizes=(8,), latent_dim=2, likelihood="bernoulli", adam="keras",
                           batch_size=TINY_BATCH, validation_size=TINY_VALIDATION, image_summaries=False, epochs=1,
                           model_dir=str(tmp_path / "runs" / "run"), export_dir=str(tmp_path / "export"))

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    def ctrl_c_as_another_run_starts_beside(*args, **kwargs):
        os.makedirs(tmp_path / "runs" / "other" / "checkpoints", exist_ok=True)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(summaries, "make_callbacks", ctrl_c)  # While the run starts, before its first step.
        with pytest.raises(KeyboardInterrupt):
            training.run(cfg)
        assert os.listdir(tmp_path) == []  # runs/ too: the same command runs again.
        patch.setattr(summaries, "make_callbacks", ctrl_c_as_another_run_starts_beside)
        with pytest.raises(KeyboardInterrupt):
            training.run(cfg)
        assert os.listdir(tmp_path / "runs") == ["other"]  # runs/ was made for this run, but holds another now.
        os.makedirs(cfg.model_dir)
        open(os.path.join(cfg.model_dir, "old.txt"), "w").close()
        with pytest.raises(KeyboardInterrupt):
            training.run(dataclasses.replace(cfg, overwrite=True))
        assert os.listdir(cfg.model_dir) == []  # Emptied, as --overwrite asked, and left so.
    with monkeypatch.context() as patch:
        patch.setattr(summaries, "write_test_metrics", ctrl_c)  # After the last step: its checkpoint is kept.
        with pytest.raises(KeyboardInterrupt):
            training.run(cfg)
    assert tf.train.latest_checkpoint(os.path.join(cfg.model_dir, "checkpoints"))
    assert not os.path.exists(cfg.export_dir)


def test_an_export_that_replaces_another_runs_export_names_that_run(tmp_path, monkeypatch, capsys,
                                                                   global_seeds_restored):
    """Runs of a sweep that share an --export_dir: the last export stands, and its run says whose it replaced; a run
    that replaces its own earlier export (--overwrite, --resume) says nothing more."""
    monkeypatch.setattr(data, "load_arrays", _synthetic_arrays)
    first, second = (config.RunConfig(model="mlp", hidden_sizes=(8,), latent_dim=2, likelihood="bernoulli",
                                      adam="keras", batch_size=TINY_BATCH, validation_size=TINY_VALIDATION,
                                      image_summaries=False, epochs=1, model_dir=str(tmp_path / name),
                                      export_dir=str(tmp_path / "export")) for name in ("first", "second"))
    training.run(first)
    assert "replaced" not in capsys.readouterr().out
    training.run(second)
    assert f"It replaced the export of run {first.model_dir}; pass --export_dir=PATH to keep both" in \
        capsys.readouterr().out
    training.run(dataclasses.replace(second, overwrite=True))
    out = capsys.readouterr().out
    assert "Exported SavedModel to" in out and "replaced" not in out
    # export.py says the same: its default --export_dir is the run's own export, another run's export is named.
    own = run_script("export.py", f"--model_dir={second.model_dir}")
    assert own.returncode == 0 and "replaced" not in own.stdout, own.stderr[-2000:]
    other = run_script("export.py", f"--model_dir={first.model_dir}", f"--export_dir={second.export_dir}")
    assert other.returncode == 0, other.stderr[-2000:]
    assert other.stdout.splitlines()[-1] == (f"It replaced the export of run {second.model_dir}; pass "
                                             f"--export_dir=PATH to keep both")


def test_a_signal_after_the_last_step_stops_before_the_export_and_one_during_it_waits(tmp_path, monkeypatch,
                                                                                     capsys, global_seeds_restored):
    """SIGTERM in the test pass: the run stops once its test metrics and metrics.json are written, with the final
    checkpoint and no export; --resume then trains nothing, tests and exports. SIGTERM during the export: the export
    is finished first (a kill would leave a half-written folder), and the run ends normally, saying so."""
    import signal

    from tfvae import export, summaries

    monkeypatch.setattr(data, "load_arrays", _synthetic_arrays)
    cfg = config.RunConfig(model="mlp", hidden_sizes=(8,), latent_dim=2, likelihood="bernoulli", adam="keras",
                           batch_size=TINY_BATCH, validation_size=TINY_VALIDATION, image_summaries=False, epochs=2,
                           model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "export"))

    def signal_first(function):
        def signalled(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)  # Delivered to this main thread before the call below starts.
            return function(*args, **kwargs)
        return signalled

    default_handler = signal.getsignal(signal.SIGTERM)
    with monkeypatch.context() as patch:
        patch.setattr(summaries, "write_test_metrics", signal_first(summaries.write_test_metrics))
        with pytest.raises(training.TrainingInterrupted, match=rf"SIGTERM at step {2 * TINY_STEPS} \(after epoch 2\)"):
            training.run(cfg)
    assert "SIGTERM: finishing the test pass and metrics.json, then stopping (--resume exports)" in \
        capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is default_handler
    assert not os.path.exists(cfg.export_dir)
    stopped = json.load(open(os.path.join(cfg.model_dir, "metrics.json")))
    assert stopped["epochs_run"] == [1, 2] and len(stopped["history"]["loss"]) == 2
    checkpoint = tf.train.latest_checkpoint(os.path.join(cfg.model_dir, "checkpoints"))
    assert checkpoint.endswith(f"ckpt-{2 * TINY_STEPS}")

    with monkeypatch.context() as patch:
        patch.setattr(export, "export_saved_model", signal_first(export.export_saved_model))
        metrics = training.run(dataclasses.replace(cfg, resume=True))
    out, err = capsys.readouterr()
    assert f"Resuming from {checkpoint}: its 2 epochs are done; testing and exporting" in out
    assert "Epoch:" not in out and metrics["epochs_run"] == []
    assert metrics["history"] == stopped["history"] and metrics["test"] == pytest.approx(stopped["test"], abs=1e-6)
    assert "SIGTERM came during the export, which finished first; the run is complete" in err
    assert export.load_metadata(cfg.export_dir)["latent_dim"] == 2
    assert tf.train.latest_checkpoint(os.path.join(cfg.model_dir, "checkpoints")) == checkpoint
    assert signal.getsignal(signal.SIGTERM) is default_handler


def test_a_deferred_signal_is_noted_even_without_a_stdout_file_and_a_second_one_acts_as_before(monkeypatch):
    """The first SIGTERM only sets stop_signal and says what will happen, also on a stdout that has no file (a
    notebook's); the handlers from before are back at once, so a second signal acts as it did before the block."""
    import signal

    received = []

    def previous(number, frame):
        received.append(number)

    outer = signal.signal(signal.SIGTERM, previous)
    written = []
    target = types.SimpleNamespace(stop_signal=None)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(sys, "stdout", types.SimpleNamespace(write=written.append, flush=lambda: None))
            with training.defer_signals(target, plan="finishing the export first"):
                signal.raise_signal(signal.SIGTERM)
                assert target.stop_signal == signal.SIGTERM and received == []
                assert signal.getsignal(signal.SIGTERM) is previous
                signal.raise_signal(signal.SIGTERM)
                assert received == [signal.SIGTERM]
        assert "".join(written) == "\nSIGTERM: finishing the export first (send it again to stop at once)\n"
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, outer)


def test_a_checkpoint_the_disk_refuses_stops_the_run_in_one_line_naming_the_last_good_one(tmp_path, monkeypatch):
    _train_tiny(tmp_path, monkeypatch, epochs=1)
    last_good = tf.train.latest_checkpoint(os.path.join(tmp_path, "checkpoints"))

    def save_on_a_full_disk(manager, checkpoint_number=None, **kwargs):
        # What SaveV2 does when the disk is full: it leaves its temporary folder and raises.
        os.makedirs(os.path.join(manager.directory, f"ckpt-{checkpoint_number}_temp"))
        raise tf.errors.ResourceExhaustedError(
            None, None, "{{function_node __wrapped__SaveV2_dtypes_34_device_/job:localhost/replica:0/task:0/device:"
                        f"CPU:0}}}} {manager.directory}/ckpt-{checkpoint_number}_temp/part-00000-of-00001.data; No "
                        "space left on device [Op:SaveV2]")

    monkeypatch.setattr(tf.train.CheckpointManager, "save", save_on_a_full_disk)
    with pytest.raises(training.CheckpointError) as raised:
        _train_tiny(tmp_path, monkeypatch, epochs=2, resume=True)
    assert str(raised.value) == (
        f"saving the checkpoint of step {2 * TINY_TRAIN // TINY_BATCH} failed: {tmp_path}/checkpoints: No space left "
        f"on device; the last good one is {last_good}: free some space, then run the same command with --resume")
    assert not glob.glob(os.path.join(tmp_path, "checkpoints", "*_temp"))
    assert tf.train.latest_checkpoint(os.path.join(tmp_path, "checkpoints")) == last_good


def test_an_export_the_disk_refuses_after_training_names_the_command_that_exports_the_kept_checkpoint(
        tmp_path, monkeypatch):
    from tfvae import export

    def export_on_a_full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / ".export.tmp-1/variables"))

    monkeypatch.setattr(data, "load_arrays", _synthetic_arrays)
    monkeypatch.setattr(export, "export_saved_model", export_on_a_full_disk)
    model_dir, export_dir = tmp_path / "run", tmp_path / "export"
    cfg = config.RunConfig(model="mlp", hidden_sizes=(8,), latent_dim=2, likelihood="bernoulli", adam="keras",
                           batch_size=TINY_BATCH, validation_size=TINY_VALIDATION, image_summaries=False, epochs=1,
                           model_dir=str(model_dir), export_dir=str(export_dir))
    with pytest.raises(export.ExportError) as raised:
        training.run(cfg)
    assert str(raised.value) == (
        f"--export_dir={export_dir}: No space left on device; the run itself is complete and {model_dir} keeps its "
        f"checkpoints: free some space or pick another folder, then python scripts/export.py "
        f"--model_dir={model_dir} --export_dir=PATH")
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    assert json.load(open(model_dir / "metrics.json"))["test"]["loss"] > 0


def test_the_first_warm_up_step_trains_on_the_reconstruction_alone():
    # The reported loss is at full KL weight either way: only the weights show what the step trained on.
    from tfvae.compat import keras
    from tfvae.models import build_model

    x = (np.random.default_rng(0).random((8, 784)) < 0.3).astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices({"input": x, "target": x, "label": np.zeros(8, np.int32)}).batch(8)
    weights = {}
    for name, beta, callbacks in (("warm-up", 1.0, [training.KLWarmup(2)]), ("beta 0", 0.0, []), ("plain", 1.0, [])):
        cfg = config.RunConfig(model="mlp", hidden_sizes=(32,), latent_dim=3, likelihood="bernoulli", seed=3, beta=beta)
        model = build_model(cfg, (28, 28, 1))
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        model.fit(dataset, epochs=1, verbose=0, shuffle=False, callbacks=callbacks)
        weights[name] = [v.numpy() for v in model.trainable_variables]
    for a, b in zip(weights["warm-up"], weights["beta 0"]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert any(not np.allclose(a, b) for a, b in zip(weights["warm-up"], weights["plain"]))
