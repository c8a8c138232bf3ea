"""Flags: flagfiles parse into a RunConfig and back; every bad flag fails in one line and writes nothing."""

import os

import pytest
from absl import flags

from conftest import REPO, assert_train_flags_fail_cleanly, run_script
from tfvae import config

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


def test_defaults_derive_from_the_name(tmp_path):
    os.chdir(tmp_path)  # runs/NAME must not exist for the model_dir validator.
    cfg = _parse("--model=mlp", "--name=wide")
    assert (cfg.model_dir, cfg.export_dir, cfg.likelihood) == ("runs/wide", "saved_models/wide", "bernoulli")


def test_written_flagfile_reads_back_the_same_config(tmp_path):
    cfg = _parse("--model=mlp", "--hidden_sizes=400,200", "--latent_dim=7", "--jit_compile",
                 f"--model_dir={tmp_path}/a", "--binarize=dynamic")
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text(config.to_flagfile(cfg))
    assert _parse(f"--flagfile={flagfile}") == cfg


BAD_FLAGS = {
    "unknown flag": (["--bogus=1"], "Unknown command line flag 'bogus'"),
    "wrong type": (["--epochs=ten"], "--epochs"),
    "zero batch size": (["--batch_size=0"], "--batch_size must be > 0"),
    "negative latent": (["--latent_dim=-3"], "--latent_dim must be > 0"),
    "zero epochs": (["--epochs=0"], "--epochs must be > 0"),
    "zero learning rate": (["--learning_rate=0"], "--learning_rate must be > 0"),
    "unknown model": (["--model=gan"], "--model"),
    "unknown dataset": (["--dataset=imagenet"], "--dataset"),
    "unknown likelihood": (["--likelihood=poisson"], "--likelihood"),
    "bad hidden sizes": (["--hidden_sizes=400,x"], "--hidden_sizes must be a comma-separated list"),
    "resume and overwrite": (["--resume", "--overwrite"], "--resume and --overwrite conflict"),
    "missing flagfile": (["--flagfile=/nonexistent.flags"], "/nonexistent.flags"),
    "missing data dir": (["--data_dir=/nonexistent/MNIST_data"], "--data_dir must be an existing folder"),
    "multi-worker steps per execution": (["--strategy=multi_worker_mirrored", "--steps_per_execution=10"],
                                         "pass --steps_per_execution=1"),
    "positional argument": (["extra"], "unexpected arguments"),
}


@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_bad_flags_fail_in_one_line_and_write_nothing(case, tmp_path):
    assert_train_flags_fail_cleanly(*BAD_FLAGS[case], tmp_path)


def test_existing_model_dir_is_refused(tmp_path):
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / "keep.txt").write_text("previous run")
    result = run_script("train.py", f"--model_dir={model_dir}", cwd=tmp_path)
    assert result.returncode != 0
    assert "--model_dir exists and is not empty; pass --resume" in result.stderr.strip()
    assert os.listdir(model_dir) == ["keep.txt"]
