"""--early_stopping_patience and --keep_best: a real run on few MNIST digits overfits, stops once its validation loss
has not gone down for the patience, and tests and exports the weights of its best epoch; resumed, it stays stopped
unless given more patience; export.py --model_dir exports the same weights."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_train_flags_fail_cleanly, run_script, write_idx
from tfvae import data, restore, training

PATIENCE = 2


def test_the_lowest_epoch_skips_epochs_without_a_finite_loss_and_takes_the_first_of_equals():
    assert training.lowest_epoch([None, 3.0, 2.0, 2.0, float("nan"), 5.0]) == 2
    assert training.lowest_epoch([None, float("inf")]) is None
    stopper = training.BestEpoch([4.0, 3.0, 3.5], patience=2)
    assert not stopper.patience_ran_out()  # One epoch since the best.
    stopper.val_losses.append(3.0)  # Equal is not lower.
    assert stopper.patience_ran_out()
    assert not training.BestEpoch([4.0, 3.0, 3.5, 3.6], patience=0).patience_ran_out()  # 0: never stops.
    # A run that has trained all its --epochs did not stop early, whatever its patience says.
    assert not training.BestEpoch([4.0, 3.0, 3.5, 3.6], patience=2, epochs=4).patience_ran_out()
    assert training.BestEpoch([4.0, 3.0, 3.5, 3.6], patience=2, epochs=5).patience_ran_out()
    assert training.BestEpoch([4.0, 3.0, 3.5], patience=1).why_stopped() == (
        "the validation loss has not gone below epoch 2's 3.0000 in the 1 epoch since (--early_stopping_patience=1)")


def test_min_delta_counts_an_epoch_as_lower_only_past_the_last_epoch_that_was():
    # Keras' EarlyStopping rule: the reference moves only on an epoch that beat it by more than min_delta, so a slow
    # decline counts once it adds up, and the lowest epoch (4.4, the best weights) need not be the improving one.
    curve = [10.0, 9.0, 8.7, 8.5, None, 8.45, float("nan"), 8.3, 4.5, 4.4]
    assert [training.improving_epoch(curve[:n], 0.25) for n in range(1, 11)] == [0, 1, 2, 2, 2, 2, 2, 7, 8, 8]
    assert training.improving_epoch(curve, 0.0) == training.lowest_epoch(curve) == 9
    assert training.improving_epoch([None, float("inf")], 0.25) is None
    stopper = training.BestEpoch(curve[:5], patience=3, min_delta=0.25)
    assert not stopper.patience_ran_out()  # Two epochs since epoch 3 (8.7); one logged no loss, which counts too.
    stopper.val_losses = curve[:6]  # 8.45 is lower than 8.7, but not by more than 0.25.
    assert stopper.patience_ran_out()
    assert stopper.why_stopped() == (
        "the validation loss has not gone below epoch 3's 8.7000 by more than 0.25 in the 3 epochs since "
        "(--early_stopping_patience=3, --early_stopping_min_delta=0.25)")
    assert not training.BestEpoch(curve[:6], patience=3, min_delta=0.0).patience_ran_out()  # 8.45 < 8.5 counts.


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory, mnist_dir):
    """1,000 training digits (and 500 for validation) under a 512-wide MLP at a high learning rate: the validation
    loss stops going down after about 20 epochs of the 60 allowed."""
    root = tmp_path_factory.mktemp("early_stopping")
    folder = root / "MNIST_data"
    folder.mkdir()
    for split, count in (("train", 1500), ("test", 300)):
        images, labels = data.load_idx_split(mnist_dir, split)
        images_file, labels_file = data.IDX_FILES[split]
        write_idx(folder / images_file, data.IDX_IMAGES_MAGIC, images[:count, :, :, 0])
        write_idx(folder / labels_file, data.IDX_LABELS_MAGIC, labels[:count])
    args = ["--model=mlp", "--likelihood=bernoulli", "--binarize=static", f"--data_dir={folder}",
            "--validation_size=500", "--hidden_sizes=512", "--latent_dim=20", "--batch_size=50",
            "--learning_rate=0.003", "--epochs=60", f"--early_stopping_patience={PATIENCE}", "--keep_best",
            "--noimage_summaries", f"--model_dir={root / 'run'}", f"--export_dir={root / 'export'}"]
    result = run_script("train.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"root": root, "run": str(root / "run"), "export": str(root / "export"), "stdout": result.stdout}


def _metrics(folder):
    return json.load(open(os.path.join(folder, "metrics.json")))


def _reconstruct(signatures, x):
    return signatures["reconstruct"](input=tf.constant(x))["x_hat"].numpy()


def test_a_run_stops_once_its_validation_loss_has_not_gone_down_for_the_patience(overfit_run):
    metrics = _metrics(overfit_run["run"])
    val_losses = metrics["history"]["val_loss"]
    stopped = metrics["stopped_early_after_epoch"]
    best = int(np.argmin(val_losses)) + 1
    assert stopped < 60 and len(val_losses) == stopped and metrics["epochs_run"] == list(range(1, stopped + 1))
    assert stopped - best == PATIENCE and metrics["tested_epoch"] == best
    assert min(val_losses[:-PATIENCE]) < val_losses[0] - 50  # It learned before it stopped.
    assert f"Stopped early after epoch {stopped}: the validation loss has not gone below epoch {best}'s" in (
        overfit_run["stdout"])
    assert f"Testing and exporting the weights of epoch {best}, of the lowest validation loss" in overfit_run["stdout"]
    assert sorted(os.listdir(os.path.join(overfit_run["run"], "best"))) == [
        "checkpoint", f"ckpt-{best}.data-00000-of-00001", f"ckpt-{best}.index"]


def test_the_export_holds_the_best_epochs_weights_not_the_last(overfit_run):
    x = data.load_idx_split(os.path.join(overfit_run["root"], "MNIST_data"), "test")[0][:8].reshape(8, 784) / 255.0
    x = x.astype(np.float32)
    exported = _reconstruct(tf.saved_model.load(overfit_run["export"]).signatures, x)
    best = _reconstruct(restore.load_checkpoint(overfit_run["run"], best=True).signatures, x)
    last = _reconstruct(restore.load_checkpoint(overfit_run["run"], best=False).signatures, x)
    np.testing.assert_allclose(exported, best, atol=1e-6)
    assert np.abs(exported - last).max() > 1e-3
    # The export's test numbers are the best weights': evaluated again here on the same test digits.
    assert _metrics(overfit_run["export"])["test"] == _metrics(overfit_run["run"])["test"]
    # export.py --model_dir writes the weights train.py exported, not the latest checkpoint's.
    again = str(overfit_run["root"] / "again")
    result = run_script("export.py", f"--model_dir={overfit_run['run']}", f"--export_dir={again}")
    assert result.returncode == 0, result.stderr[-2000:]
    best_epoch = _metrics(overfit_run["run"])["tested_epoch"]
    assert result.stdout.strip() == (f"Exported SavedModel to {again} from best/ckpt-{best_epoch}, the weights of "
                                     f"epoch {best_epoch} (--keep_best)")
    np.testing.assert_allclose(_reconstruct(tf.saved_model.load(again).signatures, x), exported, atol=1e-6)
    assert _metrics(again)["tested_epoch"] == best_epoch and _metrics(again)["checkpoint"] == f"best/ckpt-{best_epoch}"


def test_the_best_weights_test_as_a_run_of_that_many_epochs_tests_its_own(overfit_run):
    # The test pass draws z from the sampling RNG: the best epoch's state is kept with its weights, so the epochs
    # after it change nothing in the test numbers.
    best_epoch = _metrics(overfit_run["run"])["tested_epoch"]
    flags = (overfit_run["root"] / "run" / "flags.txt").read_text().split()
    flags = [flag for flag in flags if not flag.startswith(("--epochs", "--early_stopping", "--keep_best",
                                                            "--nokeep_best", "--model_dir", "--export_dir"))]
    short = overfit_run["root"] / "short"
    result = run_script("train.py", *flags, f"--epochs={best_epoch}", f"--model_dir={short}/run",
                        f"--export_dir={short}/export")
    assert result.returncode == 0, result.stderr[-2000:]
    assert _metrics(f"{short}/run")["test"] == _metrics(overfit_run["run"])["test"]


def test_a_stopped_run_resumes_stopped_unless_given_more_patience(overfit_run):
    stopped = _metrics(overfit_run["run"])["stopped_early_after_epoch"]
    result = run_script("train.py", f"--flagfile={overfit_run['run']}/flags.txt", "--resume")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "the validation loss has not gone below epoch" in result.stdout and "Epoch:" not in result.stdout
    assert "; testing and exporting" in result.stdout and "Stopped early" not in result.stdout
    assert _metrics(overfit_run["run"])["stopped_early_after_epoch"] == stopped
    result = run_script("train.py", f"--flagfile={overfit_run['run']}/flags.txt", "--resume",
                        f"--early_stopping_patience={PATIENCE + 3}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"at epoch {stopped + 1}" in result.stdout and f"Epoch: {stopped + 1} " in result.stdout
    metrics = _metrics(overfit_run["run"])
    assert metrics.get("stopped_early_after_epoch", 60) > stopped
    assert metrics["tested_epoch"] == int(np.argmin(metrics["history"]["val_loss"])) + 1


@pytest.mark.parametrize("flag", ["--early_stopping_patience=3", "--keep_best"])
def test_judging_epochs_needs_a_validation_split(flag, tmp_path):
    name = flag[2:].split("=")[0]
    assert_train_flags_fail_cleanly([flag, "--validation_size=0"],
                                    f"--{name} judges epochs by their validation loss, and --validation_size=0 "
                                    f"holds out none", tmp_path)


def test_min_delta_stops_sooner_on_the_same_curve_and_still_keeps_the_lowest_epoch(overfit_run, tmp_path):
    # The same run (same seed, so the same validation losses epoch by epoch) with a min_delta: its late epochs
    # still go down a little, which no longer counts, so it stops sooner, where the rule says on the first run's curve.
    # (The fixture's run may have been resumed with more patience by now: its curve is then longer, and the same.)
    min_delta = 1.0
    full_curve = _metrics(overfit_run["run"])["history"]["val_loss"]
    flags = [flag for flag in (overfit_run["root"] / "run" / "flags.txt").read_text().split()
             if not flag.startswith(("--model_dir", "--export_dir", "--early_stopping_patience"))]
    result = run_script("train.py", *flags, f"--early_stopping_patience={PATIENCE}",
                        f"--early_stopping_min_delta={min_delta}", f"--model_dir={tmp_path}/run",
                        f"--export_dir={tmp_path}/export")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = _metrics(f"{tmp_path}/run")
    curve = metrics["history"]["val_loss"]
    np.testing.assert_allclose(curve, full_curve[:len(curve)], rtol=1e-6)
    stopped_at = {delta: next(n for n in range(1, len(full_curve) + 1)
                              if n - 1 - training.improving_epoch(full_curve[:n], delta) >= PATIENCE)
                  for delta in (0.0, min_delta)}
    assert metrics["stopped_early_after_epoch"] == stopped_at[min_delta] == len(curve) < stopped_at[0.0]
    assert f"by more than 1 in the {PATIENCE} epochs since" in result.stdout
    assert metrics["tested_epoch"] == int(np.argmin(curve)) + 1  # --keep_best: the lowest, not the improving one.


def test_min_delta_needs_a_patience(tmp_path):
    assert_train_flags_fail_cleanly(["--early_stopping_min_delta=0.5"],
                                    "--early_stopping_min_delta says what counts as lower for "
                                    "--early_stopping_patience, which is 0 (off)", tmp_path)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_min_delta_must_be_finite(value, tmp_path):
    # NaN and infinity passed the lower bound: nothing ever counted as lower, so a run stopped after its first
    # `patience` epochs saying "by more than nan".
    assert_train_flags_fail_cleanly([f"--early_stopping_min_delta={value}", "--early_stopping_patience=2"],
                                    "--early_stopping_min_delta must be a finite number >= 0", tmp_path)
