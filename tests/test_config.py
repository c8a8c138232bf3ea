"""Flags: flagfiles parse into a RunConfig and back (bad flags: tests/test_bad_input.py)."""

import os

import pytest
from absl import flags

from conftest import REPO, run_script
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
    cfg = _parse("--model=mlp", "--hidden_sizes=400,200", "--latent_dim=7", "--jit_compile",
                 f"--model_dir={tmp_path}/a", "--binarize=dynamic", "--checkpoint_every_steps=50", "--deterministic",
                 "--intra_op_threads=1", "--inter_op_threads=3")
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text(config.to_flagfile(cfg))
    assert _parse(f"--flagfile={flagfile}") == cfg


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
