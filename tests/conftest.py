"""Shared fixtures: the real MNIST IDX folder, and helpers to run scripts in a fresh process."""

import gzip
import os
import re
import socket
import struct
import subprocess
import sys

import pytest

# Each test worker and each script it starts is a TensorFlow process; on a GPU, each takes memory as it needs it
# instead of all of it at once, so they fit side by side.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What TensorFlow's C++ runtime prints at import (CUDA probe, CPU features) whatever TF_CPP_MIN_LOG_LEVEL says.
TF_STARTUP = re.compile(r"^(WARNING: All log messages before absl::InitializeLog|[IWE]\d{4} )")
MNIST_DIR = os.environ.get("TFVAE_MNIST_DIR", os.path.join(REPO, "..", "shared", "data", "MNIST_data"))


@pytest.fixture(scope="session")
def mnist_dir():
    """The TF1 MNIST_data/ folder; missing data fails loudly under CI=true and skips elsewhere."""
    if not os.path.isfile(os.path.join(MNIST_DIR, "train-images-idx3-ubyte.gz")):
        message = f"real MNIST IDX files not found in {MNIST_DIR}; set TFVAE_MNIST_DIR"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return os.path.abspath(MNIST_DIR)


def unused_port():
    """A localhost TCP port nothing listens on: the OS picked it free, and the socket that held it is closed."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_script(script, *args, env=None, cwd=None, timeout=600):
    """Runs `scripts/SCRIPT` (or `python -c` code when `script` is None) in a fresh Python process."""
    command = [sys.executable] + (["-c", args[0]] + list(args[1:]) if script is None
                                  else [os.path.join(REPO, "scripts", script), *args])
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, env=full_env, cwd=cwd or REPO, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, mnist_dir):
    """One short real training run shared by evaluation and plot tests: a Bernoulli MLP VAE with a 2-D latent,
    one epoch on 10,000 dynamically binarized MNIST digits. Returns (model_dir, export_dir) as strings."""
    root = tmp_path_factory.mktemp("tiny_run")
    model_dir, export_dir = str(root / "run"), str(root / "export")
    result = run_script("train.py", "--model=mlp", "--hidden_sizes=32", "--latent_dim=2", "--binarize=dynamic",
                        "--epochs=1", "--validation_size=50000", f"--data_dir={mnist_dir}",
                        f"--model_dir={model_dir}", f"--export_dir={export_dir}")
    assert result.returncode == 0, result.stderr
    return model_dir, export_dir


def write_idx(path, magic, array, truncate=0):
    """Writes `array` as a gzipped IDX file (the MNIST_data/ format) with header `magic`, `truncate` bytes short."""
    header = struct.pack(">i", magic) + struct.pack(f">{array.ndim}i", *array.shape)
    payload = header + array.astype("uint8").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(payload[:len(payload) - truncate])


def flip_first_bytes(prefix):
    """Damages a checkpoint as bad storage does: its data file keeps its length, its first bytes change."""
    data_file = f"{prefix}.data-00000-of-00001"
    with open(data_file, "r+b") as f:
        head = f.read(64)
        f.seek(0)
        f.write(bytes(b ^ 0xFF for b in head))


def session_start(log_dir):
    """The HParams session start TensorBoard reads from the event files in `log_dir` (the run's flags)."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import metadata

    accumulator = event_accumulator.EventAccumulator(log_dir)
    accumulator.Reload()
    content = accumulator.PluginTagToContent(metadata.PLUGIN_NAME)
    return metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])


def error_lines(result):
    """The stderr lines of a finished script that are not TensorFlow's start-up chatter."""
    return [line for line in result.stderr.splitlines() if line.strip() and not TF_STARTUP.match(line)]


def assert_train_flags_fail_cleanly(args, message, tmp_path):
    """train.py with bad `args` exits non-zero with one stderr line holding `message`, and writes nothing."""
    result = run_script("train.py", f"--model_dir={tmp_path}/run", f"--export_dir={tmp_path}/export", *args,
                        cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert os.listdir(tmp_path) == []
