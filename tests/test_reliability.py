"""Numerical safety and atomic artifacts: non-finite steps never reach the weights, a diverged run stops cleanly,
gradient clipping and the z_logvar range hold; an export that fails midway leaves the previous one intact, what
writers killed midway (SIGKILL, Ctrl-C) or racing for one folder leave is whole or cleaned up, and Ctrl-C ends a
script in one line."""

import os
import re
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, error_lines, run_script
from tfvae import artifacts, config, export, training
from tfvae.compat import keras
from tfvae.models import build_model
from tfvae.models.base import Z_LOGVAR_RANGE

TINY = config.RunConfig(model="mlp", hidden_sizes=(16,), latent_dim=2, likelihood="bernoulli", adam="keras")


def _compiled(cfg=TINY):
    model = build_model(cfg, (28, 28, 1))
    model.compile(optimizer=training.make_optimizer(cfg))
    return model


def _batches(x):
    return tf.data.Dataset.from_tensor_slices(
        {"input": x, "target": x, "label": np.zeros(len(x), np.int32)}).batch(100)


class _RecordSteps(keras.callbacks.Callback):
    """After every train step: the weights, the optimizer's step and the logs."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append({
            "weights": [v.numpy().copy() for v in self.model.trainable_variables],
            "iterations": int(self.model.optimizer.iterations.numpy()),
            "logs": {k: float(v) for k, v in logs.items()},
        })


@pytest.mark.parametrize("poison", [np.nan, np.inf])
def test_a_non_finite_batch_is_skipped_and_counted(poison):
    model = _compiled()
    x = np.random.default_rng(0).random((400, 784)).astype(np.float32)
    x[150] = poison  # One example of the second batch.
    record = _RecordSteps()
    history = model.fit(_batches(x), epochs=1, callbacks=[record], verbose=0, shuffle=False)
    before, bad, after = record.steps[0], record.steps[1], record.steps[2]
    for w_before, w_bad in zip(before["weights"], bad["weights"]):
        np.testing.assert_array_equal(w_before, w_bad)  # The weights never saw it...
    assert bad["iterations"] == before["iterations"] == 1  # ...nor did Adam's step count.
    assert not all(np.array_equal(a, b) for a, b in zip(bad["weights"], after["weights"]))  # Training goes on.
    assert (before["logs"]["bad_steps"], bad["logs"]["bad_steps"], after["logs"]["bad_steps"]) == (0, 1, 1)
    # The epoch means hold the three good batches only.
    assert np.isfinite(history.history["loss"][0]) and np.isfinite(history.history["grad_norm"][0])
    assert history.history["bad_steps"] == [1.0]  # The epoch's count, a TensorBoard scalar.
    assert all(np.isfinite(w).all() for w in record.steps[-1]["weights"])


def test_an_absurd_learning_rate_stops_the_run_with_a_clear_error(tmp_path, mnist_dir):
    result = run_script("train.py", f"--flagfile={REPO}/configs/pytorch_tutorial.flags", f"--data_dir={mnist_dir}",
                        "--learning_rate=1e30", "--max_bad_steps=5", "--validation_size=50000", "--epochs=2",
                        "--noimage_summaries", f"--model_dir={tmp_path}/run", f"--export_dir={tmp_path}/export")
    lines = error_lines(result)
    assert result.returncode == 1, result.stderr[-3000:]
    assert len(lines) == 1 and "5 train steps in a row had a non-finite loss or gradient" in lines[0], lines
    assert "lower --learning_rate, set --clip_grad_norm" in lines[0]
    # Nothing to --resume from: it says to start again.
    assert "no checkpoint was saved yet" in lines[0] and lines[0].endswith("then start again with --overwrite")
    # The epoch line before it says the epoch was cut short: its numbers are those of the steps run.
    stopped_at = int(re.search(r"by step (\d+) of epoch 1", lines[0])[1])
    assert re.search(rf"^Epoch: 1 \(stopped after {stopped_at} of 78 steps\) Total Loss: ", result.stdout, re.M), \
        result.stdout
    assert not os.path.exists(tmp_path / "export")  # No export of a diverged run...
    assert not os.path.exists(tmp_path / "run" / "metrics.json")
    # ...and no checkpoint of its unfinished epoch: the last good checkpoint stays the last one.
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")) is None
    assert _epoch_loss_steps(tmp_path / "run" / "train") == [0]  # The unfinished epoch, for plots of the run.
    # Started again at a sane rate: TensorBoard draws one value per epoch, not the unfinished epoch's beside it.
    result = run_script("train.py", f"--flagfile={tmp_path}/run/flags.txt", "--resume", "--learning_rate=1e-3",
                        "--epochs=1", f"--model_dir={tmp_path}/run", f"--export_dir={tmp_path}/export")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "TensorBoard: removed the" in result.stdout
    assert "for epoch 1 on and for the test, which this one logs again" in result.stdout
    assert _epoch_loss_steps(tmp_path / "run" / "train") == [0]


def _epoch_loss_steps(log_dir):
    """The steps of every `epoch_loss` event in the event files of `log_dir`, in file order."""
    from tensorboard.compat.proto import event_pb2

    return [event.step for path in sorted(log_dir.glob("events.out.tfevents.*"))
            for event in map(event_pb2.Event.FromString, (r.numpy() for r in tf.data.TFRecordDataset(str(path))))
            for value in event.summary.value if value.tag == "epoch_loss"]


def test_clip_grad_norm_bounds_what_adam_sees():
    cfg = config.RunConfig(**{**TINY.__dict__, "clip_grad_norm": 0.5})
    clipped, plain = _compiled(cfg), _compiled()
    x = np.random.default_rng(1).random((100, 784)).astype(np.float32)
    for model in (clipped, plain):
        model.fit(_batches(x), epochs=1, verbose=0, shuffle=False)
    # After one step Adam's second moments are (1 - beta_2) * g^2: their sum gives |g|^2 of the gradient it used.
    squared_norm = lambda m: sum(float(np.sum(v.numpy())) for v in m.optimizer._velocities) / (  # noqa: E731
        1.0 - m.optimizer.beta_2)
    assert np.sqrt(squared_norm(plain)) > 5.0  # The raw gradient is far above the clip...
    assert np.sqrt(squared_norm(clipped)) == pytest.approx(0.5, rel=1e-3)  # ...and Adam got it scaled to 0.5.


def test_z_logvar_stays_in_a_finite_range():
    model = build_model(TINY, (28, 28, 1))
    head = model.encoder.layers[-1]
    head.kernel.assign(np.full(head.kernel.shape, 1e4, np.float32))  # An encoder gone wild.
    _, z_logvar = model.encode(tf.ones((2, 784)))
    assert float(tf.reduce_max(z_logvar)) == Z_LOGVAR_RANGE[1]
    terms = model.compute_terms({"input": tf.ones((2, 784)), "target": tf.ones((2, 784))})
    assert np.isfinite(terms["kl"].numpy()).all()


def test_an_export_that_fails_midway_leaves_the_previous_one_intact(tmp_path, monkeypatch):
    model = build_model(TINY, (28, 28, 1))
    metadata = {"input_shape": [784], "image_shape": [28, 28, 1], "latent_dim": 2, "likelihood": "bernoulli"}
    export_dir = str(tmp_path / "export")
    export.export_saved_model(model, export_dir, metadata)
    snapshot = {path: open(os.path.join(export_dir, path), "rb").read()
                for path in ("saved_model.pb", "tfvae.json", "variables/variables.index")}

    def save_half_then_crash(module, path, signatures=None, options=None):
        os.makedirs(path, exist_ok=True)
        open(os.path.join(path, "saved_model.pb"), "wb").write(b"half a graph")
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", save_half_then_crash)
    model.encoder.layers[-1].bias.assign(np.ones(4, np.float32))  # Different weights this time.
    with pytest.raises(OSError, match="disk full"):
        export.export_saved_model(model, export_dir, metadata)
    assert {path: open(os.path.join(export_dir, path), "rb").read() for path in snapshot} == snapshot
    assert sorted(os.listdir(tmp_path)) == ["export"]  # No temporary folder left behind.
    monkeypatch.undo()
    loaded = tf.saved_model.load(export_dir)  # Still a working export.
    assert loaded.signatures["encode"](input=tf.zeros((1, 784)))["z_mean"].shape == (1, 2)


WAIT = "print('ready', flush=True); time.sleep(600)"  # A writer's code runs this where it should be killed.


def _python(code):
    header = f"import os, sys, time\nsys.path.insert(0, {REPO!r})\nfrom tfvae import artifacts\n"
    return [sys.executable, "-c", header + code]


def _killed_while_writing(code):
    """Runs `code` in a Python process until it reaches WAIT, then kills it with SIGKILL (as `kill -9` would)."""
    process = _started_writer(code)
    process.kill()
    process.wait()


def _started_writer(code):
    process = subprocess.Popen(_python(code), stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "ready\n"
    return process


def test_an_export_killed_midway_leaves_nothing_after_the_next_one(tmp_path):
    model = build_model(TINY, (28, 28, 1))
    metadata = {"input_shape": [784], "image_shape": [28, 28, 1], "latent_dim": 2, "likelihood": "bernoulli"}
    export_dir, grid = str(tmp_path / "export"), str(tmp_path / "grid.png")
    still_writing = _started_writer(f"d = artifacts.make_temp_dir_beside({export_dir!r})\n{WAIT}")
    live = f".export.tmp-{'-'.join(artifacts._process_space())}-{still_writing.pid}-"
    try:
        # Killed in the middle of a PNG, its export half written: two leftovers and a finished file.
        _killed_while_writing(f"d = artifacts.make_temp_dir_beside({export_dir!r})\n"
                              "open(d + '/saved_model.pb', 'w').write('half a graph')\n"
                              f"artifacts.write_text({str(tmp_path / 'metrics.json')!r}, '{{}}')\n"
                              f"artifacts.write_bytes_with({grid!r}, lambda tmp: exec({WAIT!r}))")
        left = sorted(os.listdir(tmp_path))
        assert len(left) == 4 and left[-1] == "metrics.json", left
        assert [name.startswith((".export.tmp-", ".grid.png.tmp-")) for name in left[:3]] == [True] * 3, left
        export.export_saved_model(model, export_dir, metadata)
        artifacts.write_bytes_with(grid, lambda tmp: open(tmp, "wb").write(b"png"))
        after = sorted(os.listdir(tmp_path))
        # The killed writers' temporaries are gone; the running writer's is kept.
        assert after[0].startswith(live) and after[1:] == ["export", "grid.png", "metrics.json"], after
    finally:
        still_writing.kill()
        still_writing.wait()
    assert tf.saved_model.load(export_dir).signatures["encode"](input=tf.zeros((1, 784)))["z_mean"].shape == (1, 2)


@pytest.mark.parametrize("written_since", [False, True])
def test_a_writer_killed_between_its_two_renames_gets_its_previous_folder_back_unless_a_newer_one_is_there(
        written_since, tmp_path):
    target = tmp_path / "export"
    target.mkdir()
    (target / "weights").write_text("previous")
    # Killed right after moving the previous folder aside, before the new one is renamed into place.
    killed = subprocess.run(_python(
        "rename = os.rename\n"
        "def rename_then_die(a, b):\n    rename(a, b)\n    os.kill(os.getpid(), 9)\n"
        "os.rename = rename_then_die\n"
        f"artifacts.replace_dir(artifacts.make_temp_dir_beside({str(target)!r}), {str(target)!r})"))
    assert killed.returncode == -signal.SIGKILL and not target.exists()
    assert len(os.listdir(tmp_path)) == 2  # Its new folder and the previous one, both under temporary names.
    if written_since:  # By something that does not look for leftovers (a copy, an older tfvae).
        target.mkdir()
        (target / "weights").write_text("newer")
    artifacts.remove_leftovers(str(tmp_path))
    assert (target / "weights").read_text() == ("newer" if written_since else "previous")
    assert sorted(os.listdir(tmp_path)) == ["export"]


def test_a_text_write_killed_before_its_rename_leaves_nothing_after_the_next_one(tmp_path):
    path = str(tmp_path / "metrics.json")
    _killed_while_writing(f"os.replace = lambda a, b: exec({WAIT!r})\nartifacts.write_text({path!r}, 'half')")
    assert [name.startswith(".metrics.json.tmp-") for name in os.listdir(tmp_path)] == [True]
    artifacts.write_text(path, "{}")
    assert os.listdir(tmp_path) == ["metrics.json"] and open(path).read() == "{}"


def test_what_a_killed_writer_left_is_removed_only_where_its_pid_can_be_checked(tmp_path):
    """A writer of another machine or container has pids that mean nothing here: kept. One of an earlier boot of this
    host has ended, whatever runs under its pid now: removed."""
    grid = str(tmp_path / "grid.png")
    space, boot = artifacts._process_space()
    elsewhere, earlier_boot = ("0000cafe" if code == "0000beef" else "0000beef" for code in (space, boot))
    for code in ((space, boot), (elsewhere, boot)):
        _killed_while_writing(f"artifacts._process_space = lambda: {code!r}\n"
                              f"artifacts.write_bytes_with({grid!r}, lambda tmp: exec({WAIT!r}))")
    # Left before a reboot by a writer whose pid this test process happens to have now.
    (tmp_path / f".grid.png.tmp-{space}-{earlier_boot}-{os.getpid()}-abcdefgh.png").write_bytes(b"half")
    assert len(os.listdir(tmp_path)) == 3
    artifacts.write_bytes_with(grid, lambda tmp: open(tmp, "wb").write(b"png"))
    left = sorted(os.listdir(tmp_path))
    assert len(left) == 2 and left[0].startswith(f".grid.png.tmp-{elsewhere}-{boot}-") and left[1] == "grid.png", left


@pytest.mark.parametrize("after_rename", [1, 2])
def test_a_ctrl_c_just_after_either_rename_of_replace_dir_leaves_one_whole_folder(after_rename, tmp_path, monkeypatch):
    target, new = tmp_path / "export", tmp_path / "new"
    target.mkdir()
    (target / "weights").write_text("previous")
    new.mkdir()
    (new / "weights").write_text("new")
    rename, renames = os.rename, []

    def rename_then_ctrl_c(source, destination):
        rename(source, destination)
        renames.append(destination)
        if len(renames) == after_rename:
            raise KeyboardInterrupt  # As a SIGINT arriving during the call is raised once it returns.

    monkeypatch.setattr(os, "rename", rename_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        artifacts.replace_dir(str(new), str(target))
    monkeypatch.undo()
    # After the first rename the previous folder is put back; after the second the new one stands.
    assert (target / "weights").read_text() == ("previous" if after_rename == 1 else "new")
    assert sorted(os.listdir(tmp_path)) == (["export", "new"] if after_rename == 1 else ["export"])


@pytest.mark.parametrize("race", ["moved aside first", "put in place between our renames",
                                  "put in place, then moved aside by a third"])
def test_two_writers_replacing_one_folder_at_once_both_finish_and_the_last_stands(race, tmp_path, monkeypatch):
    """Runs of a sweep sharing an --export_dir can finish at the same moment: the other writer acts between this
    one's steps, and this one, the last, starts again instead of failing."""
    target = tmp_path / "export"
    for name, content in (("export", "previous"), ("ours", "ours"), ("theirs", "theirs")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "weights").write_text(content)
    rename, calls = os.rename, []

    def other_writer_acts_first(source, destination):
        calls.append((source, destination))
        if race == "moved aside first" and len(calls) == 1:  # Ours is about to move the export aside.
            rename(str(target), str(tmp_path / "theirs_old"))
        if race.startswith("put in place") and len(calls) == 2:  # Ours is about to put its own there.
            rename(str(tmp_path / "theirs"), str(target))
            if race.endswith("by a third"):
                try:
                    rename(source, destination)
                finally:  # Gone again before ours looks.
                    rename(str(target), str(tmp_path / "theirs_aside"))
        rename(source, destination)

    monkeypatch.setattr(os, "rename", other_writer_acts_first)
    artifacts.replace_dir(str(tmp_path / "ours"), str(target))
    monkeypatch.undo()
    assert (target / "weights").read_text() == "ours"
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]  # Nothing of ours left aside.


def test_a_second_ctrl_c_while_replace_dir_puts_the_previous_folder_back_leaves_it_for_the_next_writer(tmp_path):
    target, new = tmp_path / "export", tmp_path / "new"
    for folder, content in ((target, "previous"), (new, "new")):
        folder.mkdir()
        (folder / "weights").write_text(content)
    # Ctrl-C just after the previous folder is moved aside, and again while it is being put back.
    interrupted = subprocess.run(_python(
        "rename, renames = os.rename, []\n"
        "def ctrl_c_twice(source, destination):\n"
        "    renames.append(destination)\n"
        "    if len(renames) == 1:\n        rename(source, destination)\n"
        "    raise KeyboardInterrupt\n"
        "os.rename = ctrl_c_twice\n"
        f"artifacts.replace_dir({str(new)!r}, {str(target)!r})"), capture_output=True)
    assert interrupted.returncode != 0 and b"KeyboardInterrupt" in interrupted.stderr and not target.exists()
    artifacts.remove_leftovers(str(tmp_path))  # What the next tfvae write into the folder does.
    assert (target / "weights").read_text() == "previous" and sorted(os.listdir(tmp_path)) == ["export", "new"]


def test_a_leftover_that_cannot_be_removed_does_not_stop_the_write(tmp_path, monkeypatch):
    """Another user's in a shared (sticky) folder, or one another writer removed first: the write goes on."""
    grid = str(tmp_path / "grid.png")
    _killed_while_writing(f"artifacts.write_bytes_with({grid!r}, lambda tmp: exec({WAIT!r}))")
    unlink = os.unlink

    def unlink_refused_for_leftovers(path, *args, **kwargs):
        if os.path.basename(path).startswith(".grid.png.tmp-"):  # This write's own is renamed, not unlinked.
            raise PermissionError(1, "Operation not permitted", path)
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink_refused_for_leftovers)
    artifacts.write_bytes_with(grid, lambda tmp: open(tmp, "wb").write(b"png"))
    assert open(grid, "rb").read() == b"png" and len(os.listdir(tmp_path)) == 2  # The grid and the leftover.


def test_leftovers_of_a_live_writer_of_another_user_are_kept(tmp_path, monkeypatch):
    """A process of another user is alive though os.kill(pid, 0) raises PermissionError (for root it never does, so
    this test plays a non-root user's view of pid 1, init)."""
    kill = os.kill

    def kill_as_a_user(pid, signal_number):
        if pid == 1:
            raise PermissionError(1, "Operation not permitted")
        return kill(pid, signal_number)

    monkeypatch.setattr(os, "kill", kill_as_a_user)
    leftover = tmp_path / f".grid.png.tmp-{'-'.join(artifacts._process_space())}-1-abcdefgh.png"
    leftover.write_bytes(b"being written by another user")
    artifacts.write_bytes_with(str(tmp_path / "grid.png"), lambda tmp: open(tmp, "wb").write(b"png"))
    assert leftover.read_bytes() == b"being written by another user"


def test_a_folder_is_searched_for_leftovers_once_however_many_files_go_there(tmp_path, monkeypatch):
    listed, listdir = [], os.listdir
    monkeypatch.setattr(os, "listdir", lambda folder: listed.append(folder) or listdir(folder))
    for name in ("a.json", "b.json", "c.json"):
        artifacts.write_text(str(tmp_path / name), "{}")
    artifacts.write_bytes_with(str(tmp_path / "d.png"), lambda tmp: open(tmp, "wb").write(b"png"))
    assert listed == [str(tmp_path)]  # enhance.py writes one file per image: a listing each would be quadratic.


@pytest.mark.parametrize("number, returncode, message", [
    # As an uncaught Ctrl-C ends Python (the shell shows 130).
    (signal.SIGINT, -signal.SIGINT, "interrupted: stopped by Ctrl-C (SIGINT); the files it wrote before are whole, "
                                    "none is half-written"),
    (signal.SIGTERM, 128 + signal.SIGTERM, "interrupted: stopped by SIGTERM; the files it wrote before are whole, "
                                           "none is half-written")])
def test_ctrl_c_or_sigterm_ends_a_script_in_one_line_and_writes_nothing(number, returncode, message, tmp_path,
                                                                         mnist_dir):
    """evaluate.py (K=5000: minutes of work) interrupted once it is evaluating: no traceback, no JSON."""
    script, output = os.path.join(REPO, "scripts", "evaluate.py"), str(tmp_path / "evaluation.json")
    argv = [script, f"--saved_model={REPO}/saved_models/tf1_tutorial", f"--data_dir={mnist_dir}",
            "--num_importance_samples=5000", f"--output={output}"]
    # The script as `python scripts/evaluate.py` runs it, saying when its work has begun.
    code = (f"import runpy, sys\nsys.path.insert(0, {REPO!r})\nfrom tfvae import evaluation\n"
            "add = evaluation.add_log_sum_exp\n"  # Called once per batch of importance samples.
            "def announced(*args):\n    print('evaluating', flush=True)\n    evaluation.add_log_sum_exp = add\n"
            "    return add(*args)\n"
            f"evaluation.add_log_sum_exp = announced\nsys.argv = {argv!r}\n"
            f"runpy.run_path({script!r}, run_name='__main__')")
    # As in a terminal: a background job of a shell without job control (CI launched with `cmd &` from a script)
    # inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=tmp_path, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert process.stdout.readline() == "evaluating\n"
        time.sleep(1)
        process.send_signal(number)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == returncode
    assert error_lines(types.SimpleNamespace(stderr=stderr)) == [message]
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_once_the_work_is_done_leaves_the_success(number, tmp_path):
    # A script whose main has returned is ending (TensorFlow's teardown takes a moment): a signal then must not
    # turn its exit 0 into 130 or 143, nor print anything.
    code = ("import atexit, os, signal, sys, time\n"
            f"sys.path.insert(0, {REPO!r})\n"
            "from tfvae import cli\n"
            "def main(argv):\n"
            "    print('done', flush=True)\n"
            f"    atexit.register(lambda: (os.kill(os.getpid(), {int(number)}), time.sleep(0.2)))\n"
            "cli.run_main(main)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "done\n", "")


@pytest.mark.parametrize("steps_per_execution", [1, 8])
@pytest.mark.parametrize("bad_batches, stops_after", [((1, 2, 4, 5), None), ((1, 3, 4, 5), 6)])
def test_only_bad_steps_in_a_row_stop_the_run(bad_batches, stops_after, steps_per_execution):
    # Four skipped steps in two runs of two are not three in a row, even inside one call of 8 steps, where Keras
    # calls back once; three back to back (the 4th to 6th steps) are, and stop the run at the callback after the
    # third.
    x = np.random.default_rng(0).random((800, 784)).astype(np.float32)
    for batch in bad_batches:
        x[batch * 100] = np.nan
    model = build_model(TINY, (28, 28, 1))
    model.compile(optimizer=training.make_optimizer(TINY), steps_per_execution=steps_per_execution)
    callback = training.StopOnBadSteps(max_bad_steps=3)
    history = model.fit(_batches(x), epochs=2, callbacks=[callback], verbose=0, shuffle=False)
    assert history.history["bad_steps"][0] == len(bad_batches)
    if stops_after is None:
        assert callback.stopped_at is None and len(history.history["loss"]) == 2
    else:
        assert callback.stopped_at == (1, 8 if steps_per_execution == 8 else stops_after)
        assert len(history.history["loss"]) == 1
        # A later fit of the same model on good data (a lower learning rate, say) is not stopped by the last one's.
        again = training.StopOnBadSteps(max_bad_steps=3)
        model.fit(_batches(np.nan_to_num(x)), epochs=1, callbacks=[again], verbose=0, shuffle=False)
        assert again.stopped_at is None


@tf.custom_gradient
def _infinite_gradient_where(logits, flag):
    def grad(upstream):
        return upstream + tf.where(flag[:, None] > 0, np.inf, 0.0), tf.zeros_like(flag)
    return tf.identity(logits), grad


def test_a_finite_loss_with_a_non_finite_gradient_is_skipped():
    # The poisoned-input tests make the loss NaN too; here only the gradient is not finite.
    from tfvae.models.base import VAE

    cfg = config.RunConfig(model="mlp", hidden_sizes=(16,), latent_dim=2, likelihood="bernoulli", adam="keras")
    model = build_model(cfg, (28, 28, 1))
    model.decode = lambda z, label=None, training=False: _infinite_gradient_where(
        VAE.decode(model, z, label, training), tf.cast(label, tf.float32))
    model.compile(optimizer=training.make_optimizer(cfg))
    x = np.random.default_rng(0).random((300, 784)).astype(np.float32)
    labels = np.zeros(300, np.int32)
    labels[150] = 1  # In the second batch: its loss is finite, its gradient infinite.
    steps = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(([v.numpy().copy() for v in self.model.trainable_variables],
                          int(self.model.optimizer.iterations.numpy()), float(logs["bad_steps"])))

    dataset = tf.data.Dataset.from_tensor_slices({"input": x, "target": x, "label": labels}).batch(100)
    history = model.fit(dataset, epochs=1, verbose=0, shuffle=False, callbacks=[Record()])
    assert [s[1] for s in steps] == [1, 1, 2] and [s[2] for s in steps] == [0, 1, 1]
    for before, after in zip(steps[0][0], steps[1][0]):
        np.testing.assert_array_equal(before, after)
    assert all(np.isfinite(w).all() for w in steps[-1][0]) and np.isfinite(history.history["loss"][0])
