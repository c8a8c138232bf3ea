"""Flags: flagfiles parse into a RunConfig and back (bad flags: tests/test_bad_input.py)."""

import dataclasses
import os

import pytest
from absl import flags

from conftest import REPO, run_script
from tfvae import cli, config

config.define_train_flags()
FLAGS = flags.FLAGS


def _parse(*args):
    FLAGS.unparse_flags()
    FLAGS(["train.py", *args])
    return config.config_from_flags()


def test_tutorial_flagfile_gives_the_tutorial(tmp_path):
    cfg = _parse(f"--flagfile={REPO}/configs/tf1_tutorial.flags", f"--model_dir={tmp_path}/run")
    assert (cfg.model, cfg.hidden_sizes, cfg.latent_dim, cfg.likelihood) == ("tf1_tutorial", (100,), 20, "sse")
    assert (cfg.batch_size, cfg.learning_rate, cfg.adam_epsilon, cfg.epochs) == (100, 1e-3, 1e-8, 10)
    assert cfg.export_dir == "saved_models/tf1_tutorial" and cfg.flatten_inputs
    # Measured by scripts/bench_train.py: its 100-wide layers run faster with each op on one thread.
    assert (cfg.intra_op_threads, cfg.inter_op_threads) == (1, 0)


def test_defaults_derive_from_the_name(tmp_path):
    os.chdir(tmp_path)  # runs/NAME must not exist for the model_dir validator.
    cfg = _parse("--model=mlp", "--name=wide")
    assert (cfg.model_dir, cfg.export_dir, cfg.likelihood) == ("runs/wide", "saved_models/wide", "bernoulli")


def test_data_dir_is_recorded_absolute(tmp_path):
    # The run's flags.txt and export record it; evaluate/plot/generate read it back from any folder.
    (tmp_path / "MNIST_data").mkdir()
    os.chdir(tmp_path)
    cfg = _parse("--model=mlp", "--data_dir=MNIST_data", f"--model_dir={tmp_path}/run")
    assert cfg.data_dir == str(tmp_path / "MNIST_data")


def test_written_flagfile_reads_back_the_same_config(tmp_path):
    cfg = _parse("--model=mlp", "--hidden_sizes=400,200", "--latent_dim=7", "--noimage_summaries",
                 f"--model_dir={tmp_path}/a", "--binarize=dynamic", "--checkpoint_every_steps=50", "--deterministic",
                 "--intra_op_threads=1", "--inter_op_threads=3")
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text(config.to_flagfile(cfg))
    assert _parse(f"--flagfile={flagfile}") == cfg


def test_a_flagfile_value_with_spaces_and_a_hash_is_one_flag_not_a_crowded_line(tmp_path):
    # parse_flags_or_exit refuses a line holding two flags or a trailing comment; a value may hold both characters.
    folder = tmp_path / "MNIST data #2"
    folder.mkdir()
    flagfile = tmp_path / "run.flags"
    flagfile.write_text(f"# my run\n--data_dir={folder}\n--hidden_sizes=400\n")
    assert config._flagfile_problem([f"--flagfile={flagfile}"]) is None
    assert _parse(f"--flagfile={flagfile}").data_dir == str(folder)
    flagfile.write_text(f"--data_dir={folder} --hidden_sizes=400\n")
    assert "line 1 has two flags" in config._flagfile_problem([f"--flagfile={flagfile}"])


def test_a_leading_tilde_in_a_path_flag_or_flagfile_is_the_home_folder(tmp_path, monkeypatch):
    # A shell expands "~" in a bare word, not after "--data_dir=", nor does absl in a flagfile or --flagfile=.
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "MNIST_data").mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "my.flags").write_text("--model=mlp\n--data_dir=~/MNIST_data\n--export_dir=~/exports/mine\n")
    FLAGS.unparse_flags()
    config.parse_flags_or_exit(["train.py", "--flagfile=~/my.flags", "--model_dir=~/runs/mine"])
    cfg = config.config_from_flags()
    assert (cfg.data_dir, cfg.model_dir, cfg.export_dir) == (
        str(tmp_path / "MNIST_data"), str(tmp_path / "runs/mine"), str(tmp_path / "exports/mine"))
    assert f"--data_dir={tmp_path}/MNIST_data\n" in config.to_flagfile(cfg)  # flags.txt holds the real folder.
    # Only a leading "~" is a home folder; elsewhere it is a character of a name.
    assert _parse("--model=mlp", f"--model_dir={tmp_path}/runs/a~b").model_dir == f"{tmp_path}/runs/a~b"


# Bad flags, flagfiles and model dirs: tests/test_bad_input.py.


@pytest.mark.parametrize("script, own_flags", [("train.py", ["--batch_size", "--epochs", "--data_dir"]),
                                               ("generate.py", ["--saved_model", "--rows", "--seed"]),
                                               ("export.py", ["--saved_model", "--model_dir", "--export_dir"])])
def test_help_lists_the_scripts_flags(script, own_flags):
    # The flags are defined in tfvae.config, not in the script; absl's --help shows only the script's key flags.
    result = run_script(script, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    listed = {line.split(":")[0].strip() for line in result.stdout.splitlines() if line.startswith("  --")}
    assert set(own_flags) <= listed, result.stdout[-2000:]


@pytest.mark.parametrize("kind, refused, accepted", [
    ("mask", [0.0, 0.96], [0.01, 0.95]),  # (0, 0.95]: the lower bound excluded, the upper one included.
    ("downsample", [1.0, 8.5], [1.5, 8.0]),
    # "mixed" keeps each default (0.5, 2, 0.5, 4) inside its kind's range: above 1 / 4 (downsample's bound of 1)
    # and at most min(1 / 0.5, 4 / 2, 0.95 / 0.5, 8 / 4) = 1.9.
    ("mixed", [0.25, 1.91], [0.26, 1.9]),
])
def test_corruption_strength_ranges_exclude_low_and_include_high(kind, refused, accepted):
    for strength in refused:
        assert config.corruption_strength_error(kind, strength), strength
    for strength in accepted:
        assert config.corruption_strength_error(kind, strength) is None, strength
    assert config.corruption_strength_error("none", 0.0) is None
    assert "needs --corruption" in config.corruption_strength_error("none", 0.5)


def _refusal(*args):
    """The validation error train.py's flags `args` get (each failed check, as parse_flags_or_exit prints them)."""
    with pytest.raises(flags.IllegalFlagValueError) as error:
        _parse("--model=mlp", *args)
    return str(error.value)


def test_a_run_folder_that_the_export_would_replace_is_refused_and_a_neighbour_is_not(tmp_path):
    """The export replaces --export_dir whole: the run folder may be neither that folder nor inside it, also
    through a symlink; a sibling whose name merely starts with the export's is another folder."""
    inside = "--model_dir is --export_dir or inside it"
    assert inside in _refusal(f"--model_dir={tmp_path}/same", f"--export_dir={tmp_path}/same")
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "tfvae.json").write_text("{}")  # An earlier export: replaceable.
    os.symlink(tmp_path / "exports", tmp_path / "link")
    assert inside in _refusal(f"--model_dir={tmp_path}/link/run", f"--export_dir={tmp_path}/exports")
    cfg = _parse("--model=mlp", f"--model_dir={tmp_path}/exports_run", f"--export_dir={tmp_path}/exports")
    assert cfg.model_dir == f"{tmp_path}/exports_run"


def test_a_file_named_with_a_trailing_slash_is_still_a_file(tmp_path):
    (tmp_path / "notes.txt").write_text("a file")
    for flag in ("model_dir", "export_dir"):
        assert "names an existing file, not a folder" in _refusal(f"--{flag}={tmp_path}/notes.txt/")


def test_given_folders_are_checked_where_they_are_written_and_defaults_only_when_not_given(tmp_path, monkeypatch):
    """An existing export is replaced through a sibling, so its parent must be writable (not the export itself);
    a run folder is written inside. runs/NAME and saved_models/NAME are checked only when they are the ones used."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("a file where the default run folder would go")
    locked = tmp_path / "locked"
    for export_dir in (locked / "export", tmp_path / "saved_models" / "mlp"):
        export_dir.mkdir(parents=True)
        (export_dir / "tfvae.json").write_text("{}")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kwargs: (
        os.path.abspath(path) not in (str(locked), str(tmp_path / "saved_models")) and
        real_access(path, mode, **kwargs)))
    # The default runs/mlp is blocked by a file, but --model_dir is given: not refused for it.
    cfg = _parse("--model=mlp", f"--model_dir={tmp_path}/run", f"--export_dir={tmp_path}/new_export")
    assert cfg.model_dir == f"{tmp_path}/run"
    assert f"cannot write in {locked} (permission denied)" in _refusal(f"--model_dir={tmp_path}/run",
                                                                       f"--export_dir={locked}/export")
    assert f"the default --export_dir=saved_models/mlp: cannot write in {tmp_path}/saved_models (permission " \
           f"denied)" in _refusal(f"--model_dir={tmp_path}/run")
    # A run folder in a writable place is written inside itself, whatever its parent allows.
    (locked / "run").mkdir()
    cfg = _parse("--model=mlp", f"--model_dir={locked}/run", "--overwrite", f"--export_dir={tmp_path}/new_export")
    assert cfg.model_dir == f"{locked}/run"


def test_file_system_problems_are_told_in_one_line_and_other_errors_are_not_taken_for_them():
    import tensorflow as tf

    full = tf.errors.ResourceExhaustedError(
        None, None, "{{function_node __wrapped__SaveV2_dtypes_40_device_/job:localhost/replica:0/task:0/device:CPU:0}} "
                    "/out/.exp.tmp-1/variables/variables_temp/part-0; No space left on device [Op:SaveV2]")
    assert cli.file_system_problem(full) == ("/out/.exp.tmp-1/variables/variables_temp/part-0: No space left on "
                                                "device")
    assert cli.file_system_problem(full, where="--export_dir=/out/exp") == ("--export_dir=/out/exp: No space left "
                                                                               "on device")
    assert cli.file_system_problem(OSError(13, "Permission denied", "/sys/x.png")) == "/sys/x.png: Permission denied"
    assert cli.file_system_problem(OSError(28, "No space left on device")) == "No space left on device"
    # Out of memory, a shape error and a Python bug are not the file system's.
    out_of_memory = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
    assert cli.file_system_problem(out_of_memory) is None
    assert cli.file_system_problem(tf.errors.InvalidArgumentError(None, None, "Incompatible shapes")) is None
    assert cli.file_system_problem(OSError("no errno")) is None
    assert cli.file_system_problem(FileNotFoundError(2, "No such file or directory", "/data/x.gz")) is None
    assert cli.file_system_problem(KeyError("x")) is None


@pytest.mark.skipif(not (os.path.isdir("/sys") and os.access("/sys", os.W_OK)),
                    reason="needs a folder that access() calls writable and the OS refuses (/sys, as root)")
def test_a_write_the_os_refuses_is_refused_before_the_work_and_at_it_in_one_line(tmp_path):
    # os.access says yes to root in /sys; a folder made and removed there (the up-front check) says no.
    args = [f"--saved_model={REPO}/saved_models/tf1_tutorial", "--output=/sys/tfvae.png"]
    result = run_script("generate.py", *args)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: flag --output=/sys/tfvae.png: cannot write in /sys (")
    # What no check before the work can see (a disk that fills up meanwhile) still ends in one line: the same
    # script with the up-front check switched off.
    script = os.path.join(REPO, "scripts", "generate.py")
    code = (f"import runpy, sys\nsys.path.insert(0, {REPO!r})\nfrom tfvae import config\n"
            "config.find_write_problem = lambda path, beside=False: None\n"
            f"sys.argv = [{script!r}, *{args!r}]\nrunpy.run_path({script!r}, run_name='__main__')")
    result = run_script(None, code)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines == ["error: /sys/tfvae.png: Permission denied; nothing half-written is left: free some space, or pass "
                     "a path on another disk or in a folder you can write to"]


def test_op_error_reason_keeps_the_reason_only():
    import tensorflow as tf

    error = tf.errors.InvalidArgumentError(
        None, None, "{{function_node __wrapped__DecodePng}} Invalid PNG. Failed to initialize decoder. "
                    "[Op:DecodePng] name: \nmore lines")
    assert cli.op_error_reason(error) == "Invalid PNG. Failed to initialize decoder."
    assert cli.op_error_reason(ValueError("")) == "ValueError"



def test_a_resume_may_change_bfloat16_but_not_float16s_loss_scale(tmp_path):
    # float16 wraps Adam in a loss scale, so the checkpoint holds other objects; bfloat16 keeps float32's.
    run = config.RunConfig(model="mlp", model_dir=str(tmp_path))
    (tmp_path / config.RUN_FLAGS_FILE).write_text(config.to_flagfile(run))
    for policy, refused in (("mixed_bfloat16", False), ("mixed_float16", True), ("none", False)):
        changes = config.resume_changes(dataclasses.replace(run, mixed_precision=policy, resume=True))
        assert changes == ([f"--mixed_precision={policy} (the run's: none; float16's loss scale changes what a "
                            f"checkpoint holds)"] if refused else []), policy
