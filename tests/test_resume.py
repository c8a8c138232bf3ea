"""Interrupted runs, through real train.py processes on real MNIST: SIGKILL mid-epoch then --resume gives the
uninterrupted run's exact weights; --deterministic runs repeat exactly; SIGTERM saves at the step and says how to
resume."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, error_lines, flip_first_bytes, run_script
from tfvae import config

# The tutorial recipe, shrunk: 10,000 training images in batches of 100, 2 epochs of 100 steps.
STEPS_PER_EPOCH, EPOCHS, EVERY = 100, 2, 30
FINAL_STEP = STEPS_PER_EPOCH * EPOCHS


def _args(mnist_dir, run_dir):
    return [f"--flagfile={REPO}/configs/tf1_tutorial.flags", f"--data_dir={mnist_dir}", f"--epochs={EPOCHS}",
            "--validation_size=50000", f"--checkpoint_every_steps={EVERY}", "--steps_per_execution=1",
            "--deterministic", "--noimage_summaries", f"--model_dir={run_dir}/run", f"--export_dir={run_dir}/export"]


def _train(mnist_dir, run_dir, *extra):
    result = run_script("train.py", *_args(mnist_dir, run_dir), *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _start(mnist_dir, run_dir, *extra):
    """train.py in the background, output in files (a full pipe would stall it)."""
    os.makedirs(run_dir, exist_ok=True)
    out, err = open(os.path.join(run_dir, "stdout"), "w"), open(os.path.join(run_dir, "stderr"), "w")
    process = subprocess.Popen([sys.executable, os.path.join(REPO, "scripts", "train.py"), *_args(mnist_dir, run_dir),
                                *extra],
                               stdout=out, stderr=err, cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return process, (out, err)


def _wait_for_checkpoint(process, run_dir, timeout=600):
    """Polls until the run's CheckpointManager has recorded a checkpoint; returns its prefix."""
    folder = os.path.join(run_dir, "run", "checkpoints")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = tf.train.latest_checkpoint(folder) if os.path.isdir(folder) else None
        if latest:
            return latest
        assert process.poll() is None, open(os.path.join(run_dir, "stderr")).read()[-3000:]
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"no checkpoint in {folder} after {timeout} s")


def _finish(process, files):
    code = process.wait(timeout=600)
    for f in files:
        f.close()
    return code


def _checkpoint_values(prefix):
    """Every variable of a checkpoint (weights, Adam slots and step, RNG state, epoch and step), by name."""
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(prefix)
            if name.endswith("VARIABLE_VALUE") and not name.startswith("save_counter")}


def _max_diff(prefix_a, prefix_b):
    a, b = _checkpoint_values(prefix_a), _checkpoint_values(prefix_b)
    assert a.keys() == b.keys()
    assert any(name.startswith("rng/") for name in a)  # The sampling RNG's state is part of it.
    return max(float(np.max(np.abs(a[name].astype(np.float64) - b[name].astype(np.float64)))) for name in a)


def _final_checkpoint(run_dir):
    return os.path.join(run_dir, "run", "checkpoints", f"ckpt-{FINAL_STEP}")


def _step_of(prefix):
    return int(tf.train.load_checkpoint(prefix).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mnist_dir):
    """The uninterrupted --deterministic run."""
    run_dir = str(tmp_path_factory.mktemp("reference"))
    stdout = _train(mnist_dir, run_dir)
    assert "Resuming" not in stdout and f"Epoch: {EPOCHS} " in stdout
    return run_dir


def test_two_deterministic_runs_give_identical_weights(reference, mnist_dir, tmp_path):
    _train(mnist_dir, str(tmp_path))
    diff = _max_diff(_final_checkpoint(reference), _final_checkpoint(str(tmp_path)))
    print(f"determinism: two --deterministic runs of {FINAL_STEP} steps, max |weight diff| = {diff}")
    assert diff == 0


def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(reference, mnist_dir, tmp_path):
    run_dir = str(tmp_path)
    process, files = _start(mnist_dir, run_dir)
    first = _wait_for_checkpoint(process, run_dir)
    process.send_signal(signal.SIGKILL)  # No handler, no clean-up: the process just ends, mid-step.
    assert _finish(process, files) == -signal.SIGKILL
    killed_after = _step_of(tf.train.latest_checkpoint(os.path.join(run_dir, "run", "checkpoints")))
    assert 0 < killed_after < FINAL_STEP and killed_after % STEPS_PER_EPOCH  # Killed mid-epoch.

    stdout = _train(mnist_dir, run_dir, "--resume")
    epoch, step = divmod(killed_after, STEPS_PER_EPOCH)
    assert f"at epoch {epoch + 1}, step {step + 1} of {STEPS_PER_EPOCH}" in stdout
    diff = _max_diff(_final_checkpoint(reference), _final_checkpoint(run_dir))
    print(f"kill/resume: SIGKILL once {os.path.basename(first)} had appeared; the last checkpoint was at step "
          f"{killed_after} of {FINAL_STEP} (epoch {epoch + 1}, step {step} of {STEPS_PER_EPOCH}); the resumed "
          f"process ran steps {killed_after + 1}-{FINAL_STEP}; max |weight diff| vs uninterrupted = {diff}")
    assert diff == 0
    # The epoch it was killed in logs the train metrics of all its steps, as the uninterrupted run does.
    histories = [json.load(open(os.path.join(folder, "run", "metrics.json")))["history"]
                 for folder in (reference, run_dir)]
    assert histories[0].pop("examples_per_second") and histories[1].pop("examples_per_second")  # Timings differ.
    assert "loss" in histories[0] and histories[0] == histories[1]


def test_sigterm_saves_at_the_step_it_stopped_and_resume_finishes(reference, mnist_dir, tmp_path):
    run_dir = str(tmp_path)
    process, files = _start(mnist_dir, run_dir)
    _wait_for_checkpoint(process, run_dir)
    process.send_signal(signal.SIGTERM)
    assert _finish(process, files) == 128 + signal.SIGTERM
    stderr_lines = [line for line in open(os.path.join(run_dir, "stderr")).read().splitlines() if line.strip()]
    message = stderr_lines[-1]
    match = re.fullmatch(r"interrupted: stopped by SIGTERM at step (\d+) \((in epoch \d, step \d+ of 100|after epoch "
                         r"\d)\); checkpoint (\S+) saved; run the same command with --resume to continue from there",
                         message)
    assert match, message
    step, prefix = int(match.group(1)), match.group(3)
    # The checkpoint named is the latest, holds the step the run stopped at, and is whole.
    assert prefix == tf.train.latest_checkpoint(os.path.join(run_dir, "run", "checkpoints"))
    assert _step_of(prefix) == step and prefix.endswith(f"ckpt-{step}") and EVERY <= step < FINAL_STEP
    # Nothing of an unfinished run beyond its checkpoints and logs: no metrics, no export.
    assert not os.path.exists(os.path.join(run_dir, "run", "metrics.json"))
    assert not os.path.exists(os.path.join(run_dir, "export"))

    stdout = _train(mnist_dir, run_dir, "--resume")
    assert f"Resuming from {prefix}" in stdout and os.path.isdir(os.path.join(run_dir, "export"))
    diff = _max_diff(_final_checkpoint(reference), _final_checkpoint(run_dir))
    print(f"SIGTERM: saved ckpt-{step} and exited with {128 + signal.SIGTERM}; resumed to step {FINAL_STEP}, "
          f"max |weight diff| vs uninterrupted = {diff}")
    assert diff == 0


def test_a_second_train_py_on_a_run_still_going_is_refused_and_changes_nothing(mnist_dir, tmp_path):
    run_dir = str(tmp_path)
    process, files = _start(mnist_dir, run_dir, "--epochs=1000")  # Still going when the others try.
    try:
        _wait_for_checkpoint(process, run_dir)
        flags_before = open(os.path.join(run_dir, "run", "flags.txt")).read()
        for extra in ("--overwrite", "--resume"):
            result = run_script("train.py", *_args(mnist_dir, run_dir), extra)
            assert (result.returncode, error_lines(result)) == (2, [
                f"error: --model_dir={run_dir}/run is in use by another train.py that is still running; wait for it "
                f"to end (or stop it), or pass another --model_dir"]), extra
            assert process.poll() is None  # The first run goes on, its folder as it was.
            assert open(os.path.join(run_dir, "run", "flags.txt")).read() == flags_before
        process.send_signal(signal.SIGINT)  # Ctrl-C: it ends by SIGINT, so that a shell loop of runs stops too.
        assert _finish(process, files) == -signal.SIGINT
    finally:
        if process.poll() is None:
            process.kill()
    assert "--epochs=1000" in flags_before and not os.path.exists(os.path.join(run_dir, "export"))
    # It stopped as any run stops, with its own checkpoint: nothing of it was deleted under it.
    assert _step_of(tf.train.latest_checkpoint(os.path.join(run_dir, "run", "checkpoints"))) >= EVERY
    last_line = open(os.path.join(run_dir, "stderr")).read().splitlines()[-1]
    assert last_line.startswith("interrupted: stopped by SIGINT at step ") and last_line.endswith(
        "run the same command with --resume to continue from there")


def test_a_signal_at_an_epochs_last_step_waits_for_the_epochs_end(tmp_path):
    """Stopping at the last step of an epoch would skip its validation and logs, and a resumed run would find
    the epoch done yet unlogged: the signal is acted on at the epoch's end instead, a moment later."""
    import types

    from tfvae import training

    state = training.TrainState(step=tf.Variable(0, dtype=tf.int64), epoch=tf.Variable(0, dtype=tf.int64))
    checkpoint = tf.train.Checkpoint(step=state.step, epoch=state.epoch)
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path), max_to_keep=3)
    callback = training.Checkpoints(manager, state, steps_per_epoch=10, every_steps=0)
    callback.set_model(types.SimpleNamespace(stop_training=False))
    callback.set_params({"steps": 10})
    callback.on_epoch_begin(0)
    callback.on_train_batch_end(4)  # Step 5 of 10, no signal yet.
    callback.stop_signal = signal.SIGTERM
    callback.on_train_batch_end(9)  # Step 10 of 10: the epoch's last, so no stop yet...
    assert manager.latest_checkpoint is None
    with pytest.raises(training.TrainingInterrupted, match=r"at step 10 \(after epoch 1\)"):
        callback.on_epoch_end(0)  # ...but at its end, after the other callbacks logged it.
    assert manager.latest_checkpoint.endswith("ckpt-10") and int(state.epoch.numpy()) == 1
    # Mid-epoch, the signal stops at that step.
    callback.on_epoch_begin(1)
    with pytest.raises(training.TrainingInterrupted, match=r"at step 13 \(in epoch 2, step 3 of 10\)"):
        callback.on_train_batch_end(2)


def test_checkpoints_of_a_resumed_epoch_count_the_steps_it_skipped(tmp_path):
    """Resumed at step 130 (epoch 2, step 30 of 100), fit runs that epoch's last 70 steps as its batches 0-69:
    batch 0 is global step 131, and each checkpoint is numbered by, and holds, the global step."""
    import types

    from tfvae import training

    state = training.TrainState(step=tf.Variable(130, dtype=tf.int64), epoch=tf.Variable(1, dtype=tf.int64))
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(step=state.step, epoch=state.epoch), str(tmp_path),
                                         max_to_keep=5)
    callback = training.Checkpoints(manager, state, steps_per_epoch=100, every_steps=30)
    callback.set_model(types.SimpleNamespace(stop_training=False))
    callback.set_params({"steps": 70})
    callback.on_epoch_begin(1)
    callback.on_train_batch_end(0)
    assert int(state.step.numpy()) == 131 and manager.latest_checkpoint is None  # 131 // 30 == 130 // 30.
    callback.on_train_batch_end(19)  # Step 150: a multiple of 30.
    assert manager.latest_checkpoint.endswith("ckpt-150") and _step_of(manager.latest_checkpoint) == 150
    callback.on_train_batch_end(69)  # Step 200, the epoch's last: saved at the epoch's end, not before it...
    assert manager.latest_checkpoint.endswith("ckpt-150")
    callback.on_epoch_end(1)
    assert [os.path.basename(p) for p in manager.checkpoints] == ["ckpt-150", "ckpt-200"]
    assert _step_of(manager.latest_checkpoint) == 200 and int(state.epoch.numpy()) == 2
    # ...so the file holds the epoch as done (saved before on_epoch_end, it held 1: a resumed run redid nothing
    # but drew validation's noise again).
    epoch_saved = tf.train.load_checkpoint(manager.latest_checkpoint).get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE")
    assert int(epoch_saved) == 2


def test_a_finished_epoch_resumed_with_checkpoints_every_few_steps_equals_the_uninterrupted_run(reference, mnist_dir,
                                                                                               tmp_path):
    # --checkpoint_every_steps=50 divides the epoch's 100 steps: its step-100 checkpoint must be the epoch end's.
    run_dir = str(tmp_path)
    _train(mnist_dir, run_dir, "--epochs=1", "--checkpoint_every_steps=50")
    stdout = _train(mnist_dir, run_dir, "--resume", "--checkpoint_every_steps=50")
    assert f"Epoch: {EPOCHS} " in stdout and "Epoch: 1 " not in stdout
    diff = _max_diff(_final_checkpoint(reference), _final_checkpoint(run_dir))
    print(f"extend/resume with checkpoints every 50 steps: max |weight diff| vs uninterrupted = {diff}")
    assert diff == 0


def test_a_checkpoint_that_cannot_be_read_is_named_in_one_line_and_nothing_is_written(tiny_run, tmp_path):
    """A run folder whose latest checkpoint lost the end of its data file (a full disk, a partial copy): resuming it
    and evaluating from it each fail in one line naming the checkpoint and the fix, and write nothing. Resuming an
    intact one with another architecture names the flag against the run's own (exit 2), leaving them as they were."""
    run_dir, intact_dir = tmp_path / "run", tmp_path / "intact"
    shutil.copytree(tiny_run[0], run_dir)
    shutil.copytree(tiny_run[0], intact_dir)
    latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    data_file = f"{latest}.data-00000-of-00001"
    with open(data_file, "r+b") as f:
        f.truncate(os.path.getsize(data_file) // 2)

    def contents():
        return {p.relative_to(tmp_path): p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}

    before = contents()
    resume = run_script("train.py", f"--flagfile={run_dir / 'flags.txt'}", f"--model_dir={run_dir}", "--resume",
                        "--epochs=2", f"--export_dir={tmp_path / 'export'}")
    evaluate = run_script("evaluate.py", f"--model_dir={run_dir}", "--num_importance_samples=2",
                          "--num_examples=10", f"--output={tmp_path / 'e.json'}")
    other_model = run_script("train.py", f"--flagfile={intact_dir / 'flags.txt'}", f"--model_dir={intact_dir}",
                             "--resume", "--epochs=2", "--latent_dim=3", f"--export_dir={tmp_path / 'export'}")
    intact_latest = latest.replace(str(run_dir), str(intact_dir))
    for result, returncode, reason, fix in (
            (resume, 1, f"cannot read {latest} (its data file is shorter than its index says",
             "start a new --model_dir"),
            (evaluate, 1, f"cannot read {latest} (its data file is shorter than its index says",
             "use the run's export instead: --saved_model="),
            (other_model, 2, "these flags change what it is: --latent_dim=3 (the run's: 2)",
             f"or start a new --model_dir with --init_from={intact_latest} to train on from its weights")):
        lines = error_lines(result)
        assert result.returncode == returncode and len(lines) == 1, result.stderr[-2000:]
        assert reason in lines[0] and fix in lines[0], lines[0]
    assert contents() == before  # flags.txt too: a refused --resume leaves the run's record of its flags alone.


def test_a_checkpoint_whose_bytes_changed_is_told_damaged_not_of_another_run(tmp_path):
    """TensorFlow's checksums find changed bytes (DataLossError): the fix is an intact copy, not other flags."""
    from tfvae import training

    state = training.TrainState(step=tf.Variable(10, dtype=tf.int64), epoch=tf.Variable(1, dtype=tf.int64))
    checkpoint = tf.train.Checkpoint(step=state.step, epoch=state.epoch, weights=tf.Variable(tf.ones([1000])),
                                     train_metrics={"loss": [tf.Variable(0.0)]})
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path / "checkpoints"), max_to_keep=1)
    prefix = manager.save(checkpoint_number=10)
    flip_first_bytes(prefix)
    with pytest.raises(training.CheckpointError, match=rf"--resume: cannot read {re.escape(prefix)} \(.*Checksum.*\); "
                                                       r"start a new --model_dir, or put back an intact copy"):
        training.restore_checkpoint(manager, None, state, steps_per_epoch=10)


def test_a_checkpoint_without_a_value_the_model_now_has_says_to_resume_with_the_runs_flags(tmp_path):
    """E.g. --learn_variance added on --resume: the new variable is not in the checkpoint (an AssertionError)."""
    from tfvae import training

    def manager_of(**extra):
        state = training.TrainState(step=tf.Variable(10, dtype=tf.int64), epoch=tf.Variable(1, dtype=tf.int64))
        checkpoint = tf.train.Checkpoint(step=state.step, epoch=state.epoch, weights=tf.Variable(tf.ones([3])),
                                         train_metrics={"loss": [tf.Variable(0.0)]}, **extra)
        return tf.train.CheckpointManager(checkpoint, str(tmp_path / "run" / "checkpoints"), max_to_keep=1), state

    saved, _ = manager_of()
    prefix = saved.save(checkpoint_number=10)
    manager, state = manager_of(log_variance=tf.Variable(0.0))
    flagfile = re.escape(str(tmp_path / "run" / "flags.txt"))
    with pytest.raises(training.CheckpointError, match=rf"--resume: cannot read {re.escape(prefix)} \(.+\); resume "
                                                       rf"with the flags the run was trained with \(--flagfile="
                                                       rf"{flagfile}\), or start a new --model_dir$"):
        training.restore_checkpoint(manager, None, state, steps_per_epoch=10)


def test_resuming_with_fewer_epochs_than_trained_is_refused_and_changes_nothing(reference, mnist_dir, tmp_path):
    # Tested and exported as it is, a 2-epoch run would be recorded as a run of --epochs=1.
    shutil.copytree(os.path.join(reference, "run"), tmp_path / "run")
    before = {path: os.path.getmtime(path) for path in map(str, (tmp_path / "run").rglob("*"))}
    flags_before = (tmp_path / "run" / "flags.txt").read_text()
    result = run_script("train.py", *_args(mnist_dir, str(tmp_path)), "--resume", "--epochs=1")
    assert result.returncode == 2, result.stderr[-3000:]
    assert error_lines(result) == [
        f"error: --epochs=1 is fewer than the run in --model_dir={tmp_path}/run has trained ({EPOCHS} epochs); pass "
        f"--epochs={EPOCHS} or more to resume it, or export it as it is with python scripts/export.py "
        f"--model_dir={tmp_path}/run"]
    assert (tmp_path / "run" / "flags.txt").read_text() == flags_before
    assert {path for path in map(str, (tmp_path / "run").rglob("*"))} == set(before)
    assert not (tmp_path / "export").exists()


def test_a_resume_on_other_data_is_refused_and_the_same_files_moved_elsewhere_resume(tmp_path):
    """The run records a fingerprint of its examples (data.json): a --resume that reads others (another folder's
    files, here the same digits in another order) would mix two datasets in one run's epochs and curves."""
    from conftest import write_idx

    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (60, 28, 28)), rng.integers(0, 10, 60)
    test_images, test_labels = rng.integers(0, 256, (20, 28, 28)), rng.integers(0, 10, 20)
    order = rng.permutation(60)
    for folder, train_order in (("data", np.arange(60)), ("shuffled", order)):
        os.makedirs(tmp_path / folder)
        write_idx(tmp_path / folder / "train-images-idx3-ubyte.gz", 2051, images[train_order])
        write_idx(tmp_path / folder / "train-labels-idx1-ubyte.gz", 2049, labels[train_order])
        write_idx(tmp_path / folder / "t10k-images-idx3-ubyte.gz", 2051, test_images)
        write_idx(tmp_path / folder / "t10k-labels-idx1-ubyte.gz", 2049, test_labels)
    run = tmp_path / "run"
    args = ["--model=mlp", "--hidden_sizes=8", "--latent_dim=2", "--validation_size=10", "--batch_size=10",
            "--noimage_summaries", f"--model_dir={run}", f"--export_dir={tmp_path / 'export'}"]
    first = run_script("train.py", *args, "--epochs=1", f"--data_dir={tmp_path / 'data'}")
    assert first.returncode == 0, first.stderr[-2000:]
    flags_before, checkpoints_before = (run / "flags.txt").read_text(), sorted(os.listdir(run / "checkpoints"))
    other = run_script("train.py", *args, "--epochs=2", "--resume", f"--data_dir={tmp_path / 'shuffled'}")
    lines = error_lines(other)
    assert other.returncode == 2 and len(lines) == 1, other.stderr[-2000:]
    assert f"--resume reads the IDX files in {tmp_path / 'shuffled'}, whose examples are not those the run" in lines[0]
    assert f"(the IDX files in {tmp_path / 'data'}); pass the --data_dir it trained from" in lines[0]
    assert (run / "flags.txt").read_text() == flags_before
    assert sorted(os.listdir(run / "checkpoints")) == checkpoints_before
    # Files of the run's own folder changed since: said so, not that the folder is another.
    write_idx(tmp_path / "data" / "t10k-labels-idx1-ubyte.gz", 2049, (test_labels + 1) % 10)
    edited = run_script("train.py", *args, "--epochs=2", "--resume", f"--data_dir={tmp_path / 'data'}")
    assert edited.returncode == 2 and error_lines(edited) == [
        f"error: --resume reads the IDX files in {tmp_path / 'data'}, whose examples changed since the run in "
        f"--model_dir={run} trained on them (files added, removed or edited); put them back as they were, or start "
        f"a new --model_dir"], edited.stderr[-2000:]
    write_idx(tmp_path / "data" / "t10k-labels-idx1-ubyte.gz", 2049, test_labels)
    shutil.move(tmp_path / "data", tmp_path / "moved")  # The same files elsewhere: the same run.
    moved = run_script("train.py", *args, "--epochs=2", "--resume", f"--data_dir={tmp_path / 'moved'}")
    assert moved.returncode == 0 and "at epoch 2" in moved.stdout, moved.stderr[-2000:]


def test_a_checkpoint_from_before_train_metrics_resumes_without_them(tmp_path):
    """Checkpoints written before they held the train metrics' sums still resume (restore_checkpoint says so)."""
    from tfvae import training
    from tfvae.models import build_model

    cfg = config.RunConfig(model="mlp", hidden_sizes=(8,), latent_dim=2, model_dir=str(tmp_path))
    old_model = build_model(cfg, (28, 28, 1))
    training.compile_model(old_model, cfg)
    old_state = training.TrainState(step=tf.Variable(7, dtype=tf.int64), epoch=tf.Variable(0, dtype=tf.int64))
    old_model.loss_tracker.update_state([5.0])
    older = training._run_checkpoint(old_model, old_state, train_metrics=False)
    tf.train.CheckpointManager(older, str(tmp_path / "checkpoints"), max_to_keep=1).save(checkpoint_number=7)
    assert "train_metrics" not in {name.split("/")[0] for name, _ in
                                   tf.train.list_variables(str(tmp_path / "checkpoints" / "ckpt-7"))}

    model = build_model(cfg, (28, 28, 1))
    training.compile_model(model, cfg)
    manager, state = training.make_checkpoint_manager(model, cfg)
    assert training.restore_checkpoint(manager, model, state, steps_per_epoch=10) is False
    assert int(state.step.numpy()) == 7
    for old, new in zip(old_model.weights, model.weights):
        np.testing.assert_array_equal(old.numpy(), new.numpy())
    # The run's checkpoints now hold them: a resumed epoch starts from the sums of its steps before.
    model.loss_tracker.update_state([4.0, 7.0])
    manager.save(checkpoint_number=8)
    again = build_model(cfg, (28, 28, 1))
    training.compile_model(again, cfg)
    manager, state = training.make_checkpoint_manager(again, cfg)
    assert training.restore_checkpoint(manager, again, state, steps_per_epoch=10) is True
    again.reset_metrics()  # As fit does before each epoch.
    callback = training.ResumedEpochMetrics(manager.latest_checkpoint)
    callback.set_model(again)
    callback.on_epoch_begin(0)
    assert [float(v.numpy()) for v in again.loss_tracker.variables] == [11.0, 2.0]
    again.reset_metrics()
    callback.on_epoch_begin(1)  # The epochs after the resumed one start from nothing.
    assert [float(v.numpy()) for v in again.loss_tracker.variables] == [0.0, 0.0]
