"""tf.distribute and mixed precision: replicas reduce to the single-device step; policies export float32."""

import json

import numpy as np
import pytest

from conftest import REPO, run_script

MIRRORED_VS_SINGLE = """
import json, sys
import numpy as np, tensorflow as tf
from tfvae import config, distribute, training
from tfvae.models import build_model
from tfvae.models.base import VAE

distribute.split_cpu(2)

class MeanCodeVAE(VAE):
    # z = z_mean: the noise would differ between one device and two replicas; the reduction is under test.
    def sample_z(self, z_mean, z_logvar):
        return z_mean

cfg = config.RunConfig(model="mlp", hidden_sizes=(64,), latent_dim=4, likelihood="bernoulli", adam="keras",
                       batch_size=64)
rng = np.random.default_rng(0)
bits = (rng.random((20 * 64, 784)) > 0.5).astype(np.float32)

def run(strategy):
    with strategy.scope():
        base = build_model(cfg, (28, 28, 1))
        model = MeanCodeVAE(base.encoder, base.decoder, base.likelihood, cfg.latent_dim, seed=0)
        model(np.zeros((1, 784), np.float32))
        model.compile(optimizer=training.make_optimizer(cfg))
    dataset = tf.data.Dataset.from_tensor_slices(
        {"input": bits, "target": bits, "label": np.zeros(len(bits), np.int32)}).batch(64, drop_remainder=True)
    history = model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    return history.history["loss"][-1], [v.numpy() for v in model.trainable_variables]

single_loss, single_weights = run(tf.distribute.OneDeviceStrategy("/cpu:0"))
mirrored = distribute.make_strategy("mirrored")
assert mirrored.num_replicas_in_sync == 2, mirrored.num_replicas_in_sync
mirrored_loss, mirrored_weights = run(mirrored)
print(json.dumps({"single": float(single_loss), "mirrored": float(mirrored_loss),
                  "max_weight_diff": float(max(np.abs(a - b).max() for a, b in zip(single_weights, mirrored_weights)))}))
"""


def test_mirrored_on_two_cpus_matches_one_device():
    result = run_script(None, MIRRORED_VS_SINGLE)
    assert result.returncode == 0, result.stderr[-3000:]
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    # The loss is ~500 nats, where float32 spacing is 6e-5: agreement to 1e-6 relative is a couple of ulps.
    assert abs(numbers["single"] - numbers["mirrored"]) <= 1e-6 * numbers["single"], numbers
    assert numbers["max_weight_diff"] < 1e-5, numbers
    assert numbers["single"] > 100  # 20 steps from random weights on random bits: a real loss, not a constant.


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_and_exports_float32(policy, mnist_dir, tmp_path):
    export_dir = tmp_path / "export"
    result = run_script("train.py", f"--flagfile={REPO}/configs/tf1_tutorial.flags", f"--data_dir={mnist_dir}",
                        "--epochs=1", "--validation_size=500", "--noimage_summaries", f"--mixed_precision={policy}",
                        f"--model_dir={tmp_path / 'run'}", f"--export_dir={export_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    loss = float(result.stdout.split("Total Loss: ")[1].split()[0])
    assert 35 < loss < 75  # Learns like float32 (57.9 there), no overflow to inf/NaN.
    check = run_script(None, """
import sys, numpy as np, tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
out = loaded.signatures["encode"](input=tf.random.uniform([3, 784]))
x_hat = loaded.signatures["decode"](z=out["z_mean"])["x_hat"]
print(out["z_mean"].dtype.name, x_hat.dtype.name, bool(np.isfinite(x_hat.numpy()).all()))
""", str(export_dir))
    assert check.returncode == 0, check.stderr[-2000:]
    assert check.stdout.split() == ["float32", "float32", "True"]
