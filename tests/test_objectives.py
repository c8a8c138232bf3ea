"""KL control and bounds: free bits and log-mean-exp in closed form, the warm-up schedule in a real fit, the IWAE
bound against the ELBO, Gaussian likelihood flags in nats, and their bad combinations."""

import math

import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_train_flags_fail_cleanly
from tfvae import compat, config, losses, training
from tfvae.compat import keras
from tfvae.models import build_model, conditional, objectives


def _mlp(**overrides):
    return config.RunConfig(**{"model": "mlp", "hidden_sizes": (32,), "latent_dim": 3, "likelihood": "bernoulli",
                               "seed": 3, **overrides})


def _batch(n=8, seed=0):
    x = (np.random.default_rng(seed).random((n, 784)) < 0.3).astype(np.float32)
    return {"input": x, "target": x, "label": np.arange(n, dtype=np.int32) % 10}


def test_free_bits_closed_form_and_gradient():
    kl = tf.constant([[0.1, 2.0, 0.3], [0.3, 4.0, 0.9]])  # Batch means per dimension: 0.2, 3.0, 0.6.
    with tf.GradientTape() as tape:
        tape.watch(kl)
        clamped = losses.free_bits_kl(kl, 0.5)
    # Dimension 0 is under 0.5 nats and counts 0.5; the others count as they are.
    np.testing.assert_allclose(clamped.numpy(), [0.5 + 2.0 + 0.3, 0.5 + 4.0 + 0.9], rtol=1e-6)
    np.testing.assert_allclose(tf.reduce_mean(clamped).numpy(), 0.5 + 3.0 + 0.6, rtol=1e-6)
    np.testing.assert_array_equal(tape.gradient(clamped, kl).numpy(), [[0, 1, 1], [0, 1, 1]])


def test_free_bits_in_the_model_objective():
    model = build_model(_mlp(free_bits=100.0), (28, 28, 1))
    terms = model.compute_terms(_batch())
    # Every dimension is far below 100 nats, so the KL term is exactly latent_dim * 100.
    np.testing.assert_allclose(model.objective(terms).numpy(), terms["reconstruction"].numpy() + 300.0, rtol=1e-6)
    assert terms["kl_per_dimension"].shape == (8, 3)


def test_log_mean_exp_is_stable_for_huge_log_weights():
    values = tf.constant([[-1e4, -1e4 + math.log(3.0)], [2e3, 2e3]])
    np.testing.assert_allclose(losses.log_mean_exp(values, axis=1).numpy(), [-1e4 + math.log(2.0), 2e3],
                               rtol=1e-7)


@pytest.mark.parametrize("epoch, expected", [(0, 0.0), (0.5, 0.25), (1, 0.5), (2, 1.0), (7, 1.0)])
def test_kl_warmup_schedule_values(epoch, expected):
    assert training.kl_warmup_weight(epoch, 2) == pytest.approx(expected)
    assert training.kl_warmup_weight(epoch, 0) == 1.0


class _RecordWeights(keras.callbacks.Callback):
    """The KL weight of each step Keras calls back before (after KLWarmup has set it)."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_train_batch_begin(self, batch, logs=None):
        self.weights.append(float(self.model.train_kl_weight().numpy()))


def _fit_with_warmup(steps_per_execution, callbacks=()):
    model = build_model(_mlp(), (28, 28, 1))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), steps_per_execution=steps_per_execution)
    dataset = tf.data.Dataset.from_tensor_slices(_batch(32)).batch(8)  # 4 steps per epoch.
    history = model.fit(dataset, validation_data=dataset, epochs=3, verbose=0, shuffle=False,
                        callbacks=[training.KLWarmup(2), *callbacks])
    return model, history.history


def test_kl_warmup_in_a_real_fit():
    recorder = _RecordWeights()
    model, h = _fit_with_warmup(1, [recorder])
    # Linear over 2 epochs of 4 steps, one weight per step: 0, 1/8, ..., 7/8, then 1.
    np.testing.assert_allclose(recorder.weights, [i / 8 for i in range(8)] + [1.0] * 4, atol=1e-7)
    np.testing.assert_allclose(h["kl_weight"], [3 / 8, 7 / 8, 1.0], atol=1e-7)
    # Training and validation both report the full objective (weight 1) while training is warming up, so their
    # curves compare; the weight of each epoch's last step is logged beside them.
    np.testing.assert_allclose(h["val_loss"], np.add(h["val_reconstruction"], h["val_kl"]), rtol=1e-5)
    np.testing.assert_allclose(h["loss"], np.add(h["reconstruction"], h["kl"]), rtol=1e-5)
    assert float(model.kl_weight.numpy()) == 1.0


def test_kl_warmup_continues_a_resumed_epoch_where_it_stopped():
    # A run resumed at step 2 of epoch 2 (4 steps an epoch) fits only that epoch's last 2 steps: they are the
    # epoch's steps 2 and 3, at (1 + 2/4) / 2 and (1 + 3/4) / 2 of a 2-epoch warm-up, not its steps 0 and 1.
    recorder = _RecordWeights()
    model = build_model(_mlp(), (28, 28, 1))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    remaining = tf.data.Dataset.from_tensor_slices(_batch(16)).batch(8)  # 2 steps.
    history = model.fit(remaining, initial_epoch=1, epochs=2, verbose=0, shuffle=False,
                        callbacks=[training.KLWarmup(2, steps_per_epoch=4), recorder])
    np.testing.assert_allclose(recorder.weights, [6 / 8, 7 / 8], atol=1e-7)
    np.testing.assert_allclose(history.history["kl_weight"], [7 / 8], atol=1e-7)


def test_kl_warmup_moves_every_step_inside_a_multi_step_call():
    # A whole epoch per call (as the tutorial recipe runs): Keras calls back once per epoch, yet each step must
    # get its own weight, so the run is the one-step-per-call run.
    _, per_step = _fit_with_warmup(1)
    _, per_epoch = _fit_with_warmup(4)
    # With the weight held at the epoch's first step (0, then 1/2), epoch 1 would train on the reconstruction alone
    # and every number after it would move.
    for key in ("loss", "reconstruction", "kl", "val_loss", "kl_weight"):
        np.testing.assert_allclose(per_epoch[key], per_step[key], rtol=1e-6, err_msg=key)


def test_kl_warmup_refuses_a_train_step_traced_without_it():
    # The slope is read when Keras traces the step: a step traced in an earlier fit would silently ignore it.
    model = build_model(_mlp(), (28, 28, 1))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    dataset = tf.data.Dataset.from_tensor_slices(_batch(32)).batch(8)
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    with pytest.raises(RuntimeError, match="pass KLWarmup to the model's first fit"):
        model.fit(dataset, epochs=1, verbose=0, shuffle=False, callbacks=[training.KLWarmup(2)])


# Float32 nats: the model sums 784 pixel terms of ~0.7 nats in float32 (spacing 6e-5 near 550 nats) and decodes
# float32 z, where NumPy sums in float64; they agree within 1e-4 nats here, and 1e-3 leaves room for other CPUs'
# summation orders. The tests below check that the terms a slip would move are far larger than this.
NATS_ATOL = 1e-3


def _normal_log_density(z, mean, stddev):
    """log N(z; mean, diag(stddev^2)) summed over the last axis, written from the density itself."""
    return np.sum(-0.5 * np.log(2 * np.pi) - np.log(stddev) - (z - mean) ** 2 / (2 * stddev ** 2), axis=-1)


def _first_principles(model, batch, k):
    """log p(x|z_k) and log p(z_k) - log q(z_k|x), each `[batch, K]`, and the closed-form KL `[batch]`, in float64
    NumPy for the z_k that the model's next `compute_terms` draws.

    Only the networks and the random numbers come from the model: its encoder and decoder, called directly, and eps
    drawn from a copy of its sampling RNG's state (which stays as it is), [batch * K, latent] with each example's
    K rows in a row, as one draw per step in `compute_terms` lays them out.
    """
    x = np.repeat(np.asarray(batch["target"], np.float64), k, axis=0)
    # A conditional model's networks take the one-hot label after their input (Sohn et al.'s CVAE).
    classes = getattr(model, "num_classes", 0)
    one_hot = np.eye(classes, dtype=np.float32)[batch["label"]] if classes else np.zeros((len(x) // k, 0), np.float32)
    encoder_input = np.concatenate([np.asarray(batch["input"], np.float32), one_hot], axis=1)
    z_mean, z_logvar = np.split(model.encoder(encoder_input).numpy().astype(np.float64), 2, axis=-1)
    assert np.all(np.abs(z_logvar) < 30)  # Inside the range VAE.encode clips z_logvar to.
    rng = compat.SeedGenerator(0)
    rng.state.assign(model.seed_generator.state.numpy())
    eps = compat.random_normal((x.shape[0], z_mean.shape[1]), rng).numpy().astype(np.float64)
    mean, stddev = np.repeat(z_mean, k, axis=0), np.repeat(np.exp(0.5 * z_logvar), k, axis=0)
    z = mean + stddev * eps
    logits = model.decoder(np.concatenate([z.astype(np.float32), np.repeat(one_hot, k, axis=0)], axis=1))
    logits = logits.numpy().astype(np.float64)
    # Bernoulli: x log p + (1 - x) log(1 - p), p = sigmoid(l); log p = -log(1 + e^-l), log(1 - p) = -log(1 + e^l).
    log_px_z = np.sum(-x * np.logaddexp(0, -logits) - (1 - x) * np.logaddexp(0, logits), axis=1)
    log_prior_ratio = _normal_log_density(z, 0.0, 1.0) - _normal_log_density(z, mean, stddev)
    kl = np.sum(0.5 * (z_mean ** 2 + np.exp(z_logvar) - z_logvar - 1), axis=1)
    return log_px_z.reshape(-1, k), log_prior_ratio.reshape(-1, k), kl


def _log_mean_exp(log_weights):
    """log (1/K) sum_k exp(w_k) over the last axis; np.logaddexp.reduce keeps weights of -550 nats finite."""
    return np.logaddexp.reduce(log_weights, axis=-1) - np.log(log_weights.shape[-1])


def test_iwae_with_one_sample_is_the_elbo():
    # K = 1: the IWAE loss is minus the single-sample ELBO at the one z drawn, -(log p(x|z) + log p(z) - log q(z|x)).
    # The ELBO model's loss, -log p(x|z) + KL in closed form, is another estimate of the same bound: per example the
    # two differ by log q(z|x) - log p(z) - KL, which is 0 only on average.
    batch = _batch()
    elbo_model = build_model(_mlp(), (28, 28, 1))
    iwae_model = build_model(_mlp(objective="iwae", num_importance_samples=1), (28, 28, 1))
    assert isinstance(iwae_model, objectives.IWAE)
    iwae_model.set_weights(elbo_model.get_weights())
    # Same seed, same eps: both models draw the z of these numbers.
    log_px_z, log_prior_ratio, kl = _first_principles(iwae_model, batch, 1)
    iwae_terms, elbo_terms = iwae_model.compute_terms(batch), elbo_model.compute_terms(batch)
    np.testing.assert_allclose(iwae_model.objective(iwae_terms).numpy(), -(log_px_z + log_prior_ratio)[:, 0],
                               rtol=0, atol=NATS_ATOL)
    np.testing.assert_allclose(elbo_model.objective(elbo_terms).numpy(), -log_px_z[:, 0] + kl, rtol=0,
                               atol=NATS_ATOL)
    for terms in (iwae_terms, elbo_terms):  # The reported metrics: the same z's reconstruction, the same KL.
        np.testing.assert_allclose(terms["reconstruction"].numpy(), -log_px_z[:, 0], rtol=0, atol=NATS_ATOL)
        np.testing.assert_allclose(terms["kl"].numpy(), kl, rtol=0, atol=NATS_ATOL)
    # The two estimates differ here, so a K = 1 loss that took the closed-form KL would fail the first check.
    assert np.abs(-log_prior_ratio[:, 0] - kl).max() > 0.1


@pytest.mark.parametrize("k", [1, 4])
def test_beta_scales_the_kl_term_of_both_objectives(k):
    # beta-VAE: loss = reconstruction + beta KL. The IWAE bound scales log p(z_k) - log q(z_k|x) inside each weight,
    # by beta times the warm-up weight (ImportanceWeighted's docstring): -log (1/K) sum_k exp(log p(x|z_k) + beta
    # w (log p(z_k) - log q(z_k|x))), with K = 1 the beta-weighted single-sample ELBO.
    batch = _batch()
    elbo_model = build_model(_mlp(beta=0.5), (28, 28, 1))
    iwae_model = build_model(_mlp(beta=0.5, objective="iwae", num_importance_samples=k), (28, 28, 1))
    iwae_model.set_weights(elbo_model.get_weights())
    assert elbo_model.beta == iwae_model.beta == 0.5
    elbo_log_px_z, _, kl = _first_principles(elbo_model, batch, 1)
    log_px_z, log_prior_ratio, _ = _first_principles(iwae_model, batch, k)
    terms, iwae_terms = elbo_model.compute_terms(batch), iwae_model.compute_terms(batch)
    np.testing.assert_allclose(elbo_model.objective(terms).numpy(), -elbo_log_px_z[:, 0] + 0.5 * kl, rtol=0,
                               atol=NATS_ATOL)
    # A beta left out or applied twice moves the loss by 0.25 |log p(z) - log q(z|x)|, far above the tolerance.
    assert np.abs(log_prior_ratio).max() > 0.5
    for weight in (1.0, 0.25):
        expected = -_log_mean_exp(log_px_z + 0.5 * weight * log_prior_ratio)
        np.testing.assert_allclose(iwae_model.objective(iwae_terms, weight).numpy(), expected, rtol=0,
                                   atol=NATS_ATOL, err_msg=f"warm-up weight {weight}")


def test_iwae_bound_is_at_least_the_elbo_on_the_same_batch():
    batch = _batch(16)
    iwae_model = build_model(_mlp(objective="iwae", num_importance_samples=50), (28, 28, 1))
    log_px_z, log_prior_ratio, kl = _first_principles(iwae_model, batch, 50)
    terms = iwae_model.compute_terms(batch)
    assert terms["log_px_z"].shape == terms["log_prior_ratio"].shape == (16, 50)
    iwae_bound = -iwae_model.objective(terms).numpy()
    log_weights = log_px_z + log_prior_ratio
    np.testing.assert_allclose(iwae_bound, _log_mean_exp(log_weights), rtol=0, atol=NATS_ATOL)
    np.testing.assert_allclose(terms["reconstruction"].numpy(), -np.mean(log_px_z, axis=1), rtol=0, atol=NATS_ATOL)
    np.testing.assert_allclose(terms["kl"].numpy(), kl, rtol=0, atol=NATS_ATOL)
    # Jensen on the very same 50 samples: log mean exp >= mean, here by a clear margin (a mean in place of the
    # log-mean-exp would fail the check above).
    assert np.all(iwae_bound >= np.mean(log_weights, axis=1) + 0.1)
    # Against the ELBO with closed-form KL averaged over the same 50 draws: tighter by a clear margin on average.
    elbo = np.mean(log_px_z, axis=1) - kl
    assert np.mean(iwae_bound) > np.mean(elbo) + 0.1


def test_conditional_iwae_composes_both_hooks():
    # The bound of the conditional networks: q(z|x, y) and p(x|z, y), each with the one-hot label appended.
    model = build_model(_mlp(model="cvae", objective="iwae", num_importance_samples=4), (28, 28, 1))
    assert isinstance(model, conditional.ConditionalIWAE) and model.num_classes == 10
    batch = _batch()
    log_px_z, log_prior_ratio, _ = _first_principles(model, batch, 4)
    np.testing.assert_allclose(model.objective(model.compute_terms(batch)).numpy(),
                               -_log_mean_exp(log_px_z + log_prior_ratio), rtol=0, atol=NATS_ATOL)
    # The label matters: with other labels the same draws give other numbers, by far more than the tolerance.
    relabelled, _, _ = _first_principles(model, dict(batch, label=(batch["label"] + 1) % 10), 4)
    assert np.abs(relabelled - log_px_z).max() > 0.1
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    metrics = model.train_step(batch)
    assert np.isfinite(float(metrics["loss"]))


def test_gaussian_likelihood_flags_are_nats():
    x = np.random.default_rng(0).random((4, 784)).astype(np.float32)
    fixed = build_model(_mlp(likelihood="gaussian", gaussian_stddev=0.2), (28, 28, 1))
    assert fixed.likelihood.stddev == 0.2 and not fixed.likelihood.trainable_weights
    logits = fixed.decode(fixed.encode(x)[0])
    mean = tf.sigmoid(logits).numpy().astype(np.float64)
    expected = np.sum(-0.5 * np.log(2 * np.pi * 0.04) - (x - mean) ** 2 / (2 * 0.04), axis=1)
    np.testing.assert_allclose(fixed.likelihood.log_prob(x, logits).numpy(), expected, rtol=1e-5)

    learned = build_model(_mlp(likelihood="gaussian", gaussian_stddev=0.2, learn_variance=True), (28, 28, 1))
    (logvar,) = learned.likelihood.trainable_weights
    assert logvar.shape == (784,) and np.allclose(logvar.numpy(), 2 * np.log(0.2))
    assert any(v is logvar for v in learned.trainable_variables)


BAD_FLAGS = {
    "learn variance without gaussian": (["--learn_variance"], "--learn_variance needs --likelihood=gaussian"),
    "free bits with iwae": (["--objective=iwae", "--num_importance_samples=5", "--free_bits=0.5"],
                            "--free_bits clamps the KL term of --objective=elbo"),
    "samples without iwae": (["--num_importance_samples=5"], "--num_importance_samples is K of --objective=iwae"),
    "negative beta": (["--beta=-1"], "--beta must be a finite number >= 0"),
    "zero stddev": (["--likelihood=gaussian", "--gaussian_stddev=0"], "--gaussian_stddev must be a finite number > 0"),
    "bad conv filters": (["--conv_filters=32,x"], "--conv_filters must be a comma-separated list"),
}


@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_bad_objective_flags_fail_in_one_line_and_write_nothing(case, tmp_path):
    assert_train_flags_fail_cleanly(*BAD_FLAGS[case], tmp_path)


def test_the_objective_scales_the_kl_by_the_weight_it_is_given():
    cfg = config.RunConfig(model="mlp", hidden_sizes=(32,), latent_dim=3, likelihood="bernoulli", beta=2.0, seed=3)
    model = build_model(cfg, (28, 28, 1))
    x = (np.random.default_rng(0).random((8, 784)) < 0.3).astype(np.float32)
    terms = model.compute_terms({"input": x, "target": x, "label": np.zeros(8, np.int32)})
    for weight in (0.0, 0.25):  # A KL warm-up's weights: the loss differentiated is recon + beta * weight * KL.
        np.testing.assert_allclose(model.objective(terms, weight).numpy(),
                                   terms["reconstruction"].numpy() + 2.0 * weight * terms["kl"].numpy(), rtol=1e-6)
