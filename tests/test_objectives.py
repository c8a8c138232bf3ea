"""KL control and bounds: free bits and log-mean-exp in closed form, the warm-up schedule in a real fit, the IWAE
bound against the ELBO, Gaussian likelihood flags in nats, and their bad combinations."""

import math

import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_train_flags_fail_cleanly
from tfvae import config, losses, training
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


def test_iwae_with_one_sample_is_the_elbo():
    batch = _batch()
    elbo_model = build_model(_mlp(), (28, 28, 1))
    iwae_model = build_model(_mlp(objective="iwae", num_importance_samples=1), (28, 28, 1))
    assert isinstance(iwae_model, objectives.IWAE)
    iwae_model.set_weights(elbo_model.get_weights())
    # Same seed, same eps; the analytic KL and its Monte Carlo estimate differ, the single-sample bound does not.
    elbo_terms, iwae_terms = elbo_model.compute_terms(batch), iwae_model.compute_terms(batch)
    np.testing.assert_allclose(iwae_terms["reconstruction"], elbo_terms["reconstruction"], rtol=1e-6)
    log_ratio = iwae_terms["log_prior_ratio"][:, 0].numpy()
    np.testing.assert_allclose(iwae_model.objective(iwae_terms), elbo_terms["reconstruction"] - log_ratio,
                               rtol=1e-6)


def test_beta_scales_the_kl_term_of_both_objectives():
    # beta-VAE: loss = reconstruction + beta KL; the IWAE bound scales log p(z) - log q(z|x) in each weight, so with
    # one sample it is the same beta-weighted single-sample ELBO.
    batch = _batch()
    elbo_model = build_model(_mlp(beta=0.5), (28, 28, 1))
    iwae_model = build_model(_mlp(beta=0.5, objective="iwae", num_importance_samples=1), (28, 28, 1))
    iwae_model.set_weights(elbo_model.get_weights())
    terms = elbo_model.compute_terms(batch)
    assert elbo_model.beta == iwae_model.beta == 0.5 and np.all(terms["kl"].numpy() > 0.01)
    np.testing.assert_allclose(elbo_model.objective(terms).numpy(),
                               terms["reconstruction"].numpy() + 0.5 * terms["kl"].numpy(), rtol=1e-6)
    iwae_terms = iwae_model.compute_terms(batch)
    log_ratio = iwae_terms["log_prior_ratio"][:, 0].numpy()
    assert np.all(np.abs(log_ratio) > 0.01)
    np.testing.assert_allclose(iwae_model.objective(iwae_terms).numpy(),
                               iwae_terms["reconstruction"].numpy() - 0.5 * log_ratio, rtol=1e-6)


def test_iwae_bound_is_at_least_the_elbo_on_the_same_batch():
    batch = _batch(16)
    elbo_model = build_model(_mlp(), (28, 28, 1))
    iwae_model = build_model(_mlp(objective="iwae", num_importance_samples=50), (28, 28, 1))
    iwae_model.set_weights(elbo_model.get_weights())
    terms = iwae_model.compute_terms(batch)
    assert terms["log_px_z"].shape == (16, 50)
    iwae_bound = -iwae_model.objective(terms).numpy()
    # Jensen on the very same 50 samples: log mean exp >= mean.
    assert np.all(iwae_bound >= tf.reduce_mean(iwae_model.log_weights(terms), axis=1).numpy() - 1e-4)
    # Against the ELBO with analytic KL, averaged over 50 draws: tighter by a clear margin on average.
    elbo = -np.mean([elbo_model.objective(elbo_model.compute_terms(batch)).numpy() for _ in range(50)], axis=0)
    assert np.mean(iwae_bound) > np.mean(elbo) + 0.1
    assert np.all(np.isfinite(iwae_bound))


def test_conditional_iwae_composes_both_hooks():
    model = build_model(_mlp(model="cvae", objective="iwae", num_importance_samples=4), (28, 28, 1))
    assert isinstance(model, conditional.ConditionalIWAE) and model.num_classes == 10
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    metrics = model.train_step(_batch())
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
