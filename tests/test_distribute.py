"""tf.distribute and mixed precision: replicas reduce to the single-device step; policies export float32."""

import json
import math
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from conftest import REPO, run_script, unused_port

MIRRORED_VS_SINGLE = """
import json, sys
import numpy as np, tensorflow as tf
from tfvae import config, distribute, training
from tfvae.models import build_model

distribute.split_cpu(2)
rng = np.random.default_rng(0)
bits = (rng.random((20 * 64, 784)) > 0.5).astype(np.float32)

def run(strategy, cfg):
    with strategy.scope():
        model = build_model(cfg, (28, 28, 1))
        model(np.zeros((1, 784), np.float32))
        training.compile_model(model, cfg)
    dataset = tf.data.Dataset.from_tensor_slices(
        {"input": bits, "target": bits, "label": np.zeros(len(bits), np.int32)}).batch(64, drop_remainder=True)
    history = model.fit(dataset, epochs=1, verbose=0, shuffle=False).history
    # 101 examples in batches of 64: the last batch of 37 splits 19 and 18 over the replicas.
    held_out = tf.data.Dataset.from_tensor_slices(
        {"input": bits[:101], "target": bits[:101], "label": np.zeros(101, np.int32)}).batch(64)
    evaluation = model.evaluate(held_out, verbose=0, return_dict=True)
    return ({**{key: float(history[key][-1]) for key in ("loss", "kl", "grad_norm")},
             **{"test_" + key: float(evaluation[key]) for key in ("loss", "reconstruction")}},
            model.trainable_variables)

mirrored = distribute.make_strategy("mirrored")
assert mirrored.num_replicas_in_sync == 2, mirrored.num_replicas_in_sync
results = {}
for name, options in json.loads(sys.argv[1]).items():
    cfg = config.RunConfig(model="mlp", hidden_sizes=(64,), latent_dim=4, likelihood="bernoulli", batch_size=64,
                           seed=0, steps_per_execution=1, **options)
    single, single_weights = run(tf.distribute.OneDeviceStrategy("/cpu:0"), cfg)
    replicated, mirrored_weights = run(mirrored, cfg)
    results[name] = {"single": single, "mirrored": replicated, "max_weight_diff": float(max(
        np.abs(a.numpy() - b.numpy()).max() for a, b in zip(single_weights, mirrored_weights)))}
print(json.dumps(results))
"""

# Each a case the reduction over replicas must get right: the sampled noise (each replica its own rows of the
# global draw), micro-batches inside replicas, free bits (the global batch's mean KL per dimension), and clipping
# to a global norm (of the summed gradient, not of each replica's share) with TF1's Adam.
MIRRORED_CASES = {
    "sampled": {"adam": "keras"},
    "micro_batches": {"adam": "keras", "micro_batches": 2},
    "free_bits_clipped": {"adam": "tf1", "free_bits": 0.5, "clip_grad_norm": 1.0},
}


NON_FINITE_BATCH_ON_ONE_REPLICA = """
import json
import math
import numpy as np, tensorflow as tf
from tfvae import config, distribute, training
from tfvae.compat import keras
from tfvae.models import build_model

distribute.split_cpu(2)
strategy = distribute.make_strategy("mirrored")
cfg = config.RunConfig(model="mlp", hidden_sizes=(16,), latent_dim=2, likelihood="bernoulli", adam="keras")
with strategy.scope():
    model = build_model(cfg, (28, 28, 1))
    model.compile(optimizer=training.make_optimizer(cfg))
x = np.random.default_rng(0).random((400, 784)).astype(np.float32)
x[160] = np.nan  # Second batch, second replica's half only.
steps = []

class Record(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        steps.append({"weights": [v.numpy().tolist() for v in self.model.trainable_variables[:1]],
                      "iterations": int(self.model.optimizer.iterations.numpy()), "bad": float(logs["bad_steps"])})

dataset = tf.data.Dataset.from_tensor_slices({"input": x, "target": x, "label": np.zeros(400, np.int32)}).batch(100)
history = model.fit(dataset, epochs=1, verbose=0, callbacks=[Record()], shuffle=False).history
print(json.dumps(steps + [{"epoch_bad_steps": history["bad_steps"][-1]}]))
"""


def test_a_non_finite_batch_on_one_replica_is_skipped_on_all():
    # MirroredStrategy on CPUs updates through merge_call: the skip runs in the cross-replica context.
    result = run_script(None, NON_FINITE_BATCH_ON_ONE_REPLICA)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = json.loads(result.stdout.strip().splitlines()[-1])
    assert [s["iterations"] for s in steps[:-1]] == [1, 1, 2, 3] and [s["bad"] for s in steps[:-1]] == [0, 1, 1, 1]
    assert steps[1]["weights"] == steps[0]["weights"] != steps[2]["weights"]
    # The epoch's count (history, TensorBoard, metrics.json) counts the step once, not once per replica.
    assert steps[-1] == {"epoch_bad_steps": 1.0}


def test_mirrored_on_two_cpus_matches_one_device():
    result = run_script(None, MIRRORED_VS_SINGLE, json.dumps(MIRRORED_CASES))
    assert result.returncode == 0, result.stderr[-3000:]
    cases = json.loads(result.stdout.strip().splitlines()[-1])
    for name, numbers in cases.items():
        single, mirrored = numbers["single"], numbers["mirrored"]
        # After 20 steps: the loss is ~540 nats, where float32 spacing is 6e-5; 1e-6 relative is a couple of ulps.
        for key in ("loss", "kl", "grad_norm"):
            assert abs(single[key] - mirrored[key]) <= 1e-6 * abs(single[key]) + 1e-6, (name, key, numbers)
        # Summed in other groups (2.7e-4 apart when two examples of the uneven batch shared their noise).
        for key in ("test_loss", "test_reconstruction"):
            assert abs(single[key] - mirrored[key]) <= 1e-5 * abs(single[key]), (name, key, numbers)
        assert numbers["max_weight_diff"] < 1e-5, (name, numbers)
        assert single["loss"] > 100  # 20 steps from random weights on random bits: a real loss, not a constant.
    # The cases differ where they should: free bits raise the loss, clipping to 1 slows the descent.
    assert cases["free_bits_clipped"]["single"]["loss"] > cases["sampled"]["single"]["loss"] + 1, cases
    assert cases["free_bits_clipped"]["single"]["grad_norm"] > 1.0  # So the clipping acted on every step.


LOSS_SCALE_OVERFLOWS = """
import json
import math
import numpy as np, tensorflow as tf
from tfvae import config, training
from tfvae.compat import keras
from tfvae.models import build_model

keras.mixed_precision.set_global_policy("mixed_float16")
cfg = config.RunConfig(model="mlp", hidden_sizes=(32,), latent_dim=2, likelihood="bernoulli", adam="keras")
model = build_model(cfg, (28, 28, 1))
# A loss scale of 2^40 overflows float16 gradients; the optimizer skips such steps and halves the scale.
model.compile(optimizer=keras.optimizers.LossScaleOptimizer(training.make_optimizer(cfg), initial_scale=2.0 ** 40))
x = (np.random.default_rng(0).random((40 * 20, 784)) < 0.3).astype(np.float32)
dataset = tf.data.Dataset.from_tensor_slices({"input": x, "target": x, "label": np.zeros(len(x), np.int32)}).batch(20)
history = model.fit(dataset, epochs=1, verbose=0, shuffle=False).history
print(json.dumps({"grad_norm": history["grad_norm"][-1], "bad_steps": history["bad_steps"][-1],
                  "iterations": int(model.optimizer.iterations.numpy()),
                  "scale": float(model.optimizer.dynamic_scale.numpy())}))
"""


def test_float16_loss_scale_overflows_stay_out_of_the_gradient_norm():
    result = run_script(None, LOSS_SCALE_OVERFLOWS)
    assert result.returncode == 0, result.stderr[-3000:]
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    # The scale came down from 2^40 (so steps overflowed and were skipped), the later steps updated the weights,
    # the epoch's gradient norm is the mean of the finite ones, and overflows are not bad steps.
    assert numbers["scale"] < 2.0 ** 30 and 0 < numbers["iterations"] < 40, numbers
    assert math.isfinite(numbers["grad_norm"]) and numbers["grad_norm"] > 0, numbers
    assert numbers["bad_steps"] == 0, numbers


GRADIENT_NORM_UNDER_FLOAT16 = """
import json
import numpy as np, tensorflow as tf
from tfvae import config, training
from tfvae.compat import keras
from tfvae.models import build_model

cfg = config.RunConfig(model="mlp", hidden_sizes=(32,), latent_dim=2, likelihood="bernoulli", adam="keras")
x = (np.random.default_rng(0).random((10 * 20, 784)) < 0.3).astype(np.float32)
dataset = tf.data.Dataset.from_tensor_slices({"input": x, "target": x, "label": np.zeros(len(x), np.int32)}).batch(20)
norms, weights = {}, None
for policy in ("mixed_float16", "float32"):
    keras.mixed_precision.set_global_policy(policy)
    model = build_model(cfg, (28, 28, 1))
    if weights is None:
        weights = model.get_weights()
    model.set_weights(weights)
    optimizer = training.make_optimizer(cfg)
    # 2^10 overflows no float16 gradient here: every step counts, scaled by 1,024.
    model.compile(optimizer=keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=2.0 ** 10)
                  if policy == "mixed_float16" else optimizer)
    norms[policy] = model.fit(dataset, epochs=1, verbose=0, shuffle=False).history["grad_norm"][-1]
print(json.dumps(norms))
"""


def test_the_gradient_norm_under_float16_is_of_the_unscaled_gradients():
    result = run_script(None, GRADIENT_NORM_UNDER_FLOAT16)
    assert result.returncode == 0, result.stderr[-3000:]
    norms = json.loads(result.stdout.strip().splitlines()[-1])
    # The same weights and data in float32: the same norm up to float16 rounding, not 1,024 times it.
    assert 0.8 < norms["mixed_float16"] / norms["float32"] < 1.25, norms


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_and_exports_float32(policy, mnist_dir, tmp_path):
    export_dir = tmp_path / "export"
    result = run_script("train.py", f"--flagfile={REPO}/configs/tf1_tutorial.flags", f"--data_dir={mnist_dir}",
                        "--epochs=1", "--validation_size=500", "--noimage_summaries", f"--mixed_precision={policy}",
                        f"--model_dir={tmp_path / 'run'}", f"--export_dir={export_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    loss = float(result.stdout.split("Total Loss: ")[1].split()[0])
    assert 35 < loss < 75  # Learns like float32 (57.9 there), no overflow to inf/NaN.
    # export.py from the run's checkpoint builds the layers in the run's precision too: the same outputs.
    reexport_dir = tmp_path / "reexport"
    reexport = run_script("export.py", f"--model_dir={tmp_path / 'run'}", f"--export_dir={reexport_dir}")
    assert reexport.returncode == 0, reexport.stderr[-2000:]
    check = run_script(None, """
import sys, numpy as np, tensorflow as tf
loaded, reexported = (tf.saved_model.load(path) for path in sys.argv[1:])
x = tf.random.uniform([3, 784])
out = loaded.signatures["encode"](input=x)
x_hat = loaded.signatures["decode"](z=out["z_mean"])["x_hat"]
difference = np.abs(reexported.signatures["reconstruct"](input=x)["x_hat"].numpy()
                    - loaded.signatures["reconstruct"](input=x)["x_hat"].numpy()).max()
print(out["z_mean"].dtype.name, x_hat.dtype.name, bool(np.isfinite(x_hat.numpy()).all()), difference)
""", str(export_dir), str(reexport_dir))
    assert check.returncode == 0, check.stderr[-2000:]
    assert check.stdout.split()[:3] == ["float32", "float32", "True"]
    assert float(check.stdout.split()[3]) < 1e-6
    # LiteRT has no 16-bit matmuls: the same weights are converted computing in float32.
    lite = run_script("export_tflite.py", f"--saved_model={export_dir}", f"--output={tmp_path / 'vae.tflite'}",
                      "--check_examples=64")
    assert lite.returncode == 0, lite.stderr[-2000:]
    reconstruct = float(lite.stdout.split("reconstruct/x_hat: max |LiteRT - SavedModel| = ")[1].split()[0])
    assert reconstruct < 0.05 and (tmp_path / "vae.tflite").stat().st_size > 600_000, lite.stdout


def test_multi_worker_mirrored_two_processes_chief_exports_once(mnist_dir, tmp_path):
    cluster = {"worker": [f"localhost:{unused_port()}", f"localhost:{unused_port()}"]}
    validation_size, batch_size = 50000, 1000
    processes, dirs = [], []
    for index in (0, 1):
        run_dir, export_dir, temp_dir = (tmp_path / f"{name}{index}" for name in ("run", "export", "tmp"))
        temp_dir.mkdir()
        dirs.append((run_dir, export_dir, temp_dir))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(temp_dir),
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        command = [sys.executable, os.path.join(REPO, "scripts", "train.py"),
                   f"--flagfile={REPO}/configs/tf1_tutorial.flags", f"--data_dir={mnist_dir}", "--epochs=1",
                   f"--validation_size={validation_size}", f"--batch_size={batch_size}", "--noimage_summaries",
                   "--strategy=multi_worker_mirrored", "--steps_per_execution=1", f"--model_dir={run_dir}",
                   f"--export_dir={export_dir}"]
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          env=env, cwd=REPO))
    try:
        outputs = [p.communicate(timeout=300) for p in processes]
    finally:
        for p in processes:
            p.kill()
    for p, (stdout, stderr) in zip(processes, outputs):
        assert p.returncode == 0, stderr[-3000:]
    (chief_run, chief_export, chief_tmp), (worker_run, worker_export, worker_tmp) = dirs
    # Losses are reduced over both workers, so both print the same epoch line; only the chief exports.
    epoch_lines = [next(l for l in out.splitlines() if l.startswith("Epoch: 1 ")).split(" (")[0] for out, _ in outputs]
    assert epoch_lines[0] == epoch_lines[1], epoch_lines
    assert "Exported SavedModel" in outputs[0][0] and "Exported SavedModel" not in outputs[1][0]
    # One SavedModel, from the chief; the worker wrote nothing where it was pointed and cleaned its scratch.
    assert sorted(os.listdir(tmp_path)) == ["export0", "run0", "tmp0", "tmp1"]
    assert os.path.isfile(chief_export / "saved_model.pb") and os.listdir(worker_tmp) == []
    # The batch size is global: the two workers together took one optimizer step per 1000 examples.
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(chief_run / "checkpoints")))
    steps = (60000 - validation_size) // batch_size
    assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == steps
    assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == steps
    check = run_script(None, """
import sys, numpy as np, tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
x_hat = loaded.signatures["reconstruct"](input=tf.random.uniform([5, 784], seed=0))["x_hat"].numpy()
print(x_hat.shape, bool(np.isfinite(x_hat).all() and (x_hat >= 0).all() and (x_hat <= 1).all()))
""", str(chief_export))
    assert check.returncode == 0, check.stderr[-2000:]
    assert check.stdout.strip() == "(5, 784) True"


@pytest.mark.parametrize("cluster, task_type, task_id, chief", [
    (None, None, None, True),  # One process, no cluster: it writes everything.
    ({"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "chief", 0, True),
    ({"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "worker", 0, False),  # A chief job exists: worker 0 is not it.
    ({"worker": ["b:1", "c:1"]}, "worker", 0, True),  # No chief job: worker 0 writes, as MultiWorkerMirrored does.
    ({"worker": ["b:1", "c:1"]}, "worker", 1, False),
    ({"worker": ["b:1"], "evaluator": ["d:1"]}, "evaluator", 0, False),
])
def test_only_the_chief_writes_checkpoints_and_exports(cluster, task_type, task_id, chief, monkeypatch):
    from tfvae import distribute

    if cluster is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
        strategy = tf.distribute.get_strategy()
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": task_type,
                                                                                  "index": task_id}}))
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
        # The attribute is all is_chief reads of a strategy; building a real multi-worker one needs its servers.
        strategy = type("Strategy", (), {"cluster_resolver": resolver})()
    assert distribute.is_chief(strategy) is chief
