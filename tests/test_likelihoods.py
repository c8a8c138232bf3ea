"""Observation models: the autoregressive Bernoulli is a normalised, causal density; S-sample log-likelihoods equal
the per-example ones; a real short run of it beats the factorised Bernoulli; its export serves in a fresh process."""

import itertools
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, run_script
from tfvae.models import likelihoods


def _trained_looking(likelihood, logits_shape, seed=0):
    """Builds `likelihood` and gives its weights random values, as training would (the output starts at zero)."""
    likelihood.build(logits_shape)
    rng = np.random.default_rng(seed)
    for weight in likelihood.weights:
        weight.assign(rng.normal(0.0, 1.0, weight.shape).astype(np.float32))
    return likelihood


def test_causal_neighbourhood_is_the_masked_convolution_field():
    neighbours = likelihoods.causal_neighbourhood((4, 5), 3)
    assert neighbours.shape == (20, 4)  # (row above: 3) + (left: 1)
    # Pixel (1, 1) = 6 sees (0, 0), (0, 1), (0, 2) and (1, 0); pixel 0 sees nothing (all point at the pad, 20).
    assert neighbours[6].tolist() == [0, 1, 2, 5]
    assert neighbours[0].tolist() == [20] * 4
    # Never itself nor a later pixel.
    assert all(n < i or n == 20 for i, row in enumerate(neighbours) for n in row)


def test_autoregressive_bernoulli_is_causal():
    likelihood = _trained_looking(likelihoods.AutoregressiveBernoulli((28, 28, 1), 7, 16), (2, 784))
    x = (np.random.default_rng(1).random((2, 784)) > 0.5).astype(np.float32)
    context = likelihood._context_logits(tf.constant(x), likelihood.neighbours).numpy()
    for i in (0, 29, 400, 783):
        changed = x.copy()
        changed[:, i:] = 1.0 - changed[:, i:]
        changed_context = likelihood._context_logits(tf.constant(changed), likelihood.neighbours).numpy()
        np.testing.assert_array_equal(changed_context[:, :i + 1], context[:, :i + 1])
        if i:  # And it does look at the pixel just before.
            before = x.copy()
            before[:, i - 1] = 1.0 - before[:, i - 1]
            assert not np.allclose(
                likelihood._context_logits(tf.constant(before), likelihood.neighbours).numpy()[:, i], context[:, i])


def test_autoregressive_bernoulli_sums_to_one_over_all_images():
    # A 3x3 image has 512 binary configurations: exp(log p(x|z)) over all of them must sum to 1 for any logits.
    likelihood = _trained_looking(likelihoods.AutoregressiveBernoulli((3, 3, 1), 3, 8), (1, 9))
    images = np.array(list(itertools.product([0.0, 1.0], repeat=9)), np.float32)
    for seed in range(3):
        logits = np.random.default_rng(seed).normal(0.0, 2.0, (1, 9)).astype(np.float32)
        log_p = likelihood.log_prob(tf.constant(images), tf.constant(np.repeat(logits, len(images), 0))).numpy()
        assert np.exp(log_p.astype(np.float64)).sum() == pytest.approx(1.0, abs=1e-5)


def test_mean_field_image_is_the_raster_order_fixed_point():
    likelihood = _trained_looking(likelihoods.AutoregressiveBernoulli((28, 28, 1), 5, 8), (3, 784))
    logits = tf.random.stateless_normal((3, 784), [0, 1])
    x_hat = tf.function(likelihood.__call__)(logits)
    # Pixel i was set to sigmoid(logits_i + a_i(x_hat_<i)); a_i reads only earlier pixels, so x_hat reproduces itself.
    again = tf.sigmoid(logits + likelihood._context_logits(x_hat, likelihood.neighbours))
    np.testing.assert_allclose(again.numpy(), x_hat.numpy(), atol=1e-6)
    assert x_hat.shape == (3, 784) and 0.0 < float(tf.reduce_min(x_hat)) < float(tf.reduce_max(x_hat)) < 1.0


def test_ancestral_samples_follow_the_autoregressive_density():
    # A 2x2 image has 16 binary configurations: how often 40,000 draws land on each must match exp(log p(x|z)).
    likelihood = _trained_looking(likelihoods.AutoregressiveBernoulli((2, 2, 1), 3, 8), (1, 4), seed=3)
    images = np.array(list(itertools.product([0.0, 1.0], repeat=4)), np.float32)
    logits = np.array([[0.5, -1.0, 1.5, 0.0]], np.float32)
    exact = np.exp(likelihood.log_prob(tf.constant(images), tf.constant(np.repeat(logits, 16, 0))).numpy())
    drawn = likelihood.sample(tf.constant(np.repeat(logits, 40000, 0)), tf.constant([5, 0])).numpy()
    assert set(np.unique(drawn)) == {0.0, 1.0}
    index = drawn @ np.array([8.0, 4.0, 2.0, 1.0])  # The row of `images` each draw is.
    frequency = np.bincount(index.astype(int), minlength=16) / len(drawn)
    # The context matters here (a factorised draw, ignoring it, lands 0.1 or more away), and the sampler follows it.
    factorised = np.prod(np.where(images == 1.0, 1 / (1 + np.exp(-logits)), 1 / (1 + np.exp(logits))), axis=1)
    assert 0.5 * np.abs(exact - factorised).sum() > 0.1
    assert 0.5 * np.abs(frequency - exact).sum() < 0.015, (frequency, exact)


def test_draws_share_their_uniforms_so_a_contextless_autoregressive_draw_is_the_bernoulli_one():
    logits = tf.random.stateless_normal((6, 28, 28, 1), [1, 2])
    autoregressive = likelihoods.AutoregressiveBernoulli((28, 28, 1), 5, 4)
    autoregressive.build(logits.shape)  # Its output kernel starts at zero: no context, as a plain Bernoulli.
    bernoulli = likelihoods.Bernoulli().sample(logits, tf.constant([4, 0])).numpy()
    np.testing.assert_array_equal(autoregressive.sample(logits, tf.constant([4, 0])).numpy(), bernoulli)
    many = likelihoods.Bernoulli().sample(tf.fill((20000, 3), 0.0) + [-2.0, 0.0, 1.5], tf.constant([0, 9]))
    np.testing.assert_allclose(many.numpy().mean(axis=0), 1 / (1 + np.exp(-np.array([-2.0, 0.0, 1.5]))), atol=0.01)


def test_learned_gaussian_variance_is_floored():
    # A pixel always 0 would drive its learned log-variance, and the density, without bound: below the floor
    # (log-variance -9, a stddev of 0.011) the likelihood is that of the floor.
    likelihood = likelihoods.Gaussian(stddev=0.1, learn_variance=True)
    likelihood.build((None, 4))
    likelihood.logvar.assign(np.array([-30.0, -12.0, -9.0, -2.0], np.float32))
    x = np.array([[0.0, 0.3, 0.52, 1.0], [0.5, 0.5, 0.5, 0.5]], np.float32)
    logits = np.array([[-4.0, -0.8, 0.1, 2.0], [0.0, 0.05, -0.05, 1.0]], np.float32)
    logvar = np.array([-9.0, -9.0, -9.0, -2.0])
    mean = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    expected = np.sum(-0.5 * (np.log(2 * np.pi) + logvar + (x - mean) ** 2 / np.exp(logvar)), axis=1)
    np.testing.assert_allclose(likelihood.log_prob(x, logits).numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("make", [
    lambda: likelihoods.Bernoulli(),
    lambda: _trained_looking(likelihoods.AutoregressiveBernoulli((28, 28, 1), 7, 8), (1, 28, 28, 1)),
], ids=["bernoulli", "autoregressive_bernoulli"])
def test_log_prob_samples_equals_log_prob_of_each_pair(make):
    likelihood = make()
    x = tf.cast(tf.random.stateless_uniform((4, 28, 28, 1), [2, 3]) > 0.6, tf.float32)
    logits = tf.random.stateless_normal((5, 4, 28, 28, 1), [4, 5])
    batched = likelihood.log_prob_samples(x, logits).numpy()
    one_by_one = np.array([likelihood.log_prob(x, logits[s]).numpy() for s in range(5)])
    assert batched.shape == (5, 4)
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5)


@pytest.fixture(scope="module")
def autoregressive_run(tmp_path_factory, mnist_dir):
    """configs/mnist_best.flags (autoregressive Bernoulli) and the same flags with a factorised Bernoulli, each
    one epoch on 10,000 digits."""
    root = tmp_path_factory.mktemp("autoregressive")
    runs = {}
    for likelihood in ("autoregressive_bernoulli", "bernoulli"):
        export_dir = str(root / likelihood)
        result = run_script("train.py", f"--flagfile={REPO}/configs/mnist_best.flags", f"--data_dir={mnist_dir}",
                            f"--likelihood={likelihood}", "--epochs=1", "--validation_size=50000",
                            "--hidden_sizes=128", "--kl_warmup_epochs=0", f"--model_dir={root / (likelihood + '_run')}",
                            f"--export_dir={export_dir}")
        assert result.returncode == 0, result.stderr[-3000:]
        runs[likelihood] = export_dir
    return runs


def test_autoregressive_bernoulli_beats_the_factorised_one(autoregressive_run):
    losses = {name: json.load(open(os.path.join(path, "metrics.json")))["test"]["loss"]
              for name, path in autoregressive_run.items()}
    # Same encoder, decoder, data and steps: modelling neighbouring pixels is worth many nats at once.
    assert losses["autoregressive_bernoulli"] < losses["bernoulli"] - 5.0, losses


def test_autoregressive_export_serves_in_a_fresh_process(autoregressive_run):
    code = (
        "import sys, numpy as np, tensorflow as tf\n"
        "assert 'tfvae' not in sys.modules\n"
        "m = tf.saved_model.load(sys.argv[1])\n"
        "x = tf.cast(tf.random.stateless_uniform((3, 784), [0, 0]) > 0.5, tf.float32)\n"
        "enc = m.signatures['encode'](input=x)\n"
        "z = enc['z_mean']\n"
        "one = m.signatures['log_likelihood'](input=x, z=z)['log_px_z'].numpy()\n"
        "many = m.signatures['log_likelihood_samples'](input=x, z=tf.stack([z, z]))['log_px_z'].numpy()\n"
        "np.testing.assert_allclose(many, np.stack([one, one]), rtol=1e-5)\n"
        "x_hat = m.signatures['reconstruct'](input=x)['x_hat'].numpy()\n"
        "assert x_hat.shape == (3, 784) and 0 <= x_hat.min() and x_hat.max() <= 1\n"
        "print('ok', float(one.mean()))\n")
    result = run_script(None, code, autoregressive_run["autoregressive_bernoulli"],
                        env={"PYTHONPATH": "", "PYTHONNOUSERSITE": "1"}, cwd="/")
    assert result.returncode == 0 and result.stdout.startswith("ok"), result.stderr[-2000:]


def test_a_right_edge_pixel_sees_nothing_past_the_edge():
    neighbours = likelihoods.causal_neighbourhood((4, 5), 3)
    # Pixel (1, 4) = 9: (0, 3), (0, 4), (0, 5) past the right edge -> the padding index 20, and (1, 3).
    assert neighbours[9].tolist() == [3, 4, 20, 8]
    # Every neighbour of every pixel lies within the kernel's square, before the pixel in raster order.
    for i, row in enumerate(likelihoods.causal_neighbourhood((6, 7), 5)):
        r, c = divmod(i, 7)
        for n in row:
            if n != 42:
                nr, nc = divmod(int(n), 7)
                assert abs(nr - r) <= 2 and abs(nc - c) <= 2 and (nr, nc) < (r, c)


def test_shipped_mnist_best_draws_digits_pixel_by_pixel(tmp_path):
    # Its `sample` signature, in a fresh process without tfvae: binary images with about a digit's ink (13% of a
    # binarized MNIST digit's pixels are on), the same for the same seed; a sampler that fed back its draws wrongly
    # would fill or empty the image.
    best = os.path.join(REPO, "saved_models", "mnist_best")
    code = (
        "import sys, numpy as np, tensorflow as tf\n"
        "assert 'tfvae' not in sys.modules\n"
        "sample = tf.saved_model.load(sys.argv[1]).signatures['sample']\n"
        "z = tf.random.stateless_normal((64, 32), [0, 1])\n"
        "x = sample(z=z, seed=tf.constant(3, tf.int64))['x_sample'].numpy()\n"
        "again = sample(z=z, seed=tf.constant(3, tf.int64))['x_sample'].numpy()\n"
        "assert x.shape == (64, 784) and set(np.unique(x)) == {0.0, 1.0} and (x == again).all()\n"
        "print('ink', x.mean())\n")
    result = run_script(None, code, best, env={"PYTHONPATH": "", "PYTHONNOUSERSITE": "1"}, cwd="/")
    assert result.returncode == 0 and result.stdout.startswith("ink"), result.stderr[-2000:]
    assert 0.07 < float(result.stdout.split()[1]) < 0.25, result.stdout
    output = tmp_path / "drawn.png"
    result = run_script("generate.py", f"--saved_model={best}", "--pixels=sample", f"--output={output}")
    assert result.returncode == 0 and output.is_file(), result.stderr[-2000:]
