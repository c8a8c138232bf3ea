"""Whether the fast training path costs accuracy, and the memory of a whole run; writes JSON.

Trains a recipe with `scripts/train.py` in fresh processes, exactly as a user would, once per (path, seed):

    plain     --steps_per_execution=1 --micro_batches=1: one whole-batch train step per tf.function call
    fast      --steps_per_execution=--fast_steps_per_execution: a whole epoch in one call, whole batches
    fast_micro  fast, plus --micro_batches=--fast_micro_batches: halves of each batch side by side (the recipe)
    fast_xla  fast, plus --jit_compile

and reports each run's final train / validation / test loss, wall time and peak resident memory (the process's
ru_maxrss, from wait4), then the fast paths' loss differences beside the plain path's seed-to-seed spread.

    python scripts/bench_fast_path.py --recipe=configs/tf1_tutorial.flags --data_dir=PATH/MNIST_data \\
        --epochs=10 --seeds=3 --output=bench_fast_path.json

Speed is bench_train.py's job (one process, interleaved); the times here are of separate processes.
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import flags

from tfvae import artifacts, cli, config

TRAIN_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")
# Each path's train.py flags, read from this script's flags once they are parsed.
PATH_FLAGS = {
    "plain": lambda: ["--steps_per_execution=1", "--micro_batches=1"],
    "fast": lambda: [f"--steps_per_execution={FLAGS.fast_steps_per_execution}", "--micro_batches=1"],
    "fast_micro": lambda: [f"--steps_per_execution={FLAGS.fast_steps_per_execution}",
                           f"--micro_batches={FLAGS.fast_micro_batches}"],
    "fast_xla": lambda: [f"--steps_per_execution={FLAGS.fast_steps_per_execution}", "--micro_batches=1",
                         "--jit_compile"],
}

config.define_path_flag("recipe", "configs/tf1_tutorial.flags", "Flagfile of the run to train.")
config.define_path_flag("data_dir", "", "MNIST_data/ IDX folder (or TFDS data dir), passed to train.py.")
config.require_existing_folder("data_dir", config.DATA_DIR_HINT)
flags.DEFINE_integer("epochs", 10, "Epochs per run.", lower_bound=1)
flags.DEFINE_integer("seeds", 3, "Seeds 0..N-1, each trained on every path.", lower_bound=1)
flags.DEFINE_list("paths", list(PATH_FLAGS), f"Paths to train, of {sorted(PATH_FLAGS)}; the first is the "
                  "reference the others are compared with.")
flags.DEFINE_integer("fast_steps_per_execution", 550, "Steps per call on the fast paths (550: a tutorial epoch).",
                     lower_bound=2)
flags.DEFINE_integer("fast_micro_batches", 2, "Micro-batches per train batch on the fast_micro path.", lower_bound=2)
flags.DEFINE_list("train_flags", [], "More flags for every train.py run, e.g. --train_flags=--validation_size=50000 "
                  "(comma-separated).")
config.define_output_file_flag("", "JSON file to write (stdout too).", ".json")
flags.register_validator("recipe", os.path.isfile, message="no such flagfile; pass one of configs/*.flags")
flags.register_validator("paths", lambda paths: paths and set(paths) <= set(PATH_FLAGS),
                         message=f"--paths takes a comma-separated list of {sorted(PATH_FLAGS)}")
flags.register_validator("train_flags", lambda extra: all(flag.startswith("--") for flag in extra),
                         message="each must be a train.py flag starting with --, "
                                 "e.g. --train_flags=--validation_size=50000")
FLAGS = flags.FLAGS


def train_once(extra_flags, work_dir):
    """Runs train.py in a fresh process. Returns its metrics.json plus wall seconds and peak RSS (MiB)."""
    run_dir = tempfile.mkdtemp(dir=work_dir)
    command = [sys.executable, TRAIN_SCRIPT, f"--flagfile={FLAGS.recipe}", f"--epochs={FLAGS.epochs}",
               f"--model_dir={run_dir}/run", f"--export_dir={run_dir}/export", "--noimage_summaries",
               *([f"--data_dir={FLAGS.data_dir}"] if FLAGS.data_dir else []), *FLAGS.train_flags, *extra_flags]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall_seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        last_line = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        sys.exit(f"error: train.py {' '.join(extra_flags)} exited {process.returncode}: {last_line}")
    with open(os.path.join(run_dir, "run", "metrics.json")) as f:
        metrics = json.load(f)
    history = metrics["history"]
    return {
        "final_train_loss": history["loss"][-1],
        "final_validation_loss": history["val_loss"][-1] if "val_loss" in history else None,
        "test_loss": metrics["test"]["loss"],
        "train_seconds": metrics["train_seconds"],
        "wall_seconds": wall_seconds,  # Start-up, data loading, training, test and export.
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux reports KiB.
    }


def _spread(values):
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "values": [float(v) for v in values]}


def main(argv):
    del argv
    import tensorflow as tf

    runs = {path: [] for path in FLAGS.paths}
    with tempfile.TemporaryDirectory(prefix="bench_fast_path_") as work_dir:
        for seed in range(FLAGS.seeds):
            # The path order rotates with the seed, so drifting machine load does not always favour one path.
            order = FLAGS.paths[seed % len(FLAGS.paths):] + FLAGS.paths[:seed % len(FLAGS.paths)]
            for path in order:
                result = train_once([f"--seed={seed}", *PATH_FLAGS[path]()], work_dir)
                runs[path].append({"seed": seed, **result})
                print(f"{path} seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()
                                                           if v is not None), file=sys.stderr, flush=True)
    reference = FLAGS.paths[0]
    summary = {}
    for path, results in runs.items():
        summary[path] = {key: _spread([r[key] for r in results])
                         for key in ("final_train_loss", "final_validation_loss", "test_loss", "train_seconds",
                                     "peak_rss_mb") if results[0][key] is not None}
        if path != reference:
            # Same seed, same batches, same initial weights: any difference is the path's arithmetic.
            for key in ("final_validation_loss", "test_loss"):
                if results[0][key] is not None:
                    summary[path][f"{key}_minus_{reference}"] = [
                        r[key] - base[key] for r, base in zip(results, runs[reference])]
    result = {
        "recipe": FLAGS.recipe,
        "epochs": FLAGS.epochs,
        "seeds": FLAGS.seeds,
        "train_flags": FLAGS.train_flags,
        "paths": {path: " ".join(PATH_FLAGS[path]()) for path in FLAGS.paths},
        "runs": runs,
        "summary": summary,
        "noise": f"the seed-to-seed std of {reference}'s losses: a fast path is within noise when its same-seed "
                 "differences are well inside it",
        "versions": {"tensorflow": tf.__version__, "python": platform.python_version()},
        "cpus": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
    }
    artifacts.print_json(result, FLAGS.output)


if __name__ == "__main__":
    cli.run_main(main)
