"""Closed-form values of the log-densities and KL terms."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfvae import losses


def test_kl_of_standard_normal_is_zero():
    zeros = tf.zeros([3, 5])
    np.testing.assert_allclose(losses.kl_per_dimension(zeros, zeros).numpy(), np.zeros([3, 5]), atol=1e-7)


def test_kl_matches_closed_form():
    mean, logvar = np.array([[1.0, -2.0]]), np.array([[0.5, -1.0]])
    expected = 0.5 * (mean ** 2 + np.exp(logvar) - logvar - 1)
    np.testing.assert_allclose(losses.kl_per_dimension(tf.constant(mean), tf.constant(logvar)).numpy(), expected,
                               rtol=1e-6)


def test_bernoulli_log_prob_equals_numpy():
    rng = np.random.default_rng(0)
    x = (rng.random((4, 10)) > 0.5).astype(np.float32)
    logits = rng.normal(size=(4, 10)).astype(np.float32) * 3
    p = 1 / (1 + np.exp(-logits))
    expected = np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=1)
    np.testing.assert_allclose(losses.bernoulli_log_prob(x, logits).numpy(), expected, rtol=1e-5)


def test_bernoulli_log_prob_is_stable_for_extreme_logits():
    value = losses.bernoulli_log_prob(tf.constant([[1.0, 0.0]]), tf.constant([[-200.0, 200.0]])).numpy()
    np.testing.assert_allclose(value, [-400.0], rtol=1e-6)


@pytest.mark.parametrize("shape", [(4, 10), (3, 5, 4, 2)])
def test_bernoulli_log_prob_gradients_equal_autodiff_of_softplus(shape):
    """The written-out gradient against TensorFlow's own, through softplus, for flat and image-shaped batches."""
    rng = np.random.default_rng(1)
    x = tf.constant(rng.random(shape), tf.float32)
    logits = tf.constant(rng.normal(size=shape) * 8, tf.float32)  # Saturated pixels too.
    weights = tf.constant(rng.normal(size=shape[:1]), tf.float32)  # An upstream gradient that differs per example.

    def weighted_gradients(log_prob):
        with tf.GradientTape() as tape:
            tape.watch([x, logits])
            total = tf.reduce_sum(weights * log_prob(x, logits))
        return total, tape.gradient(total, [x, logits])

    plain = lambda x, l: losses.sum_per_example(x * l - tf.math.softplus(l))  # noqa: E731
    (ours, (dx, dl)), (expected, (expected_dx, expected_dl)) = (weighted_gradients(losses.bernoulli_log_prob),
                                                                 weighted_gradients(plain))
    np.testing.assert_allclose(ours.numpy(), expected.numpy(), rtol=1e-6)
    np.testing.assert_allclose(dx.numpy(), expected_dx.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dl.numpy(), expected_dl.numpy(), rtol=1e-5, atol=1e-7)


def test_bernoulli_log_prob_gradient_is_finite_for_extreme_logits():
    x, logits = tf.constant([[1.0, 0.0, 1.0]]), tf.constant([[-200.0, 200.0, 200.0]])
    with tf.GradientTape() as tape:
        tape.watch(logits)
        value = losses.bernoulli_log_prob(x, logits)
    np.testing.assert_allclose(tape.gradient(value, logits).numpy(), [[1.0, -1.0, 0.0]], atol=1e-7)


def test_gaussian_log_prob_equals_numpy():
    x, mean, logvar = np.array([[0.2, 0.9]]), np.array([[0.0, 1.0]]), np.array([[math.log(0.01), 0.0]])
    expected = np.sum(-0.5 * (np.log(2 * np.pi) + logvar + (x - mean) ** 2 / np.exp(logvar)))
    np.testing.assert_allclose(losses.gaussian_log_prob(x, mean, logvar).numpy(), [expected], rtol=1e-6)


def test_squared_error_and_images_sum_over_all_pixels():
    x = tf.ones([2, 3, 3, 1])
    np.testing.assert_allclose(losses.squared_error(x, tf.zeros_like(x)).numpy(), [9.0, 9.0])


def test_log_normal_of_standard_equals_log_standard_normal():
    z = tf.constant([[0.3, -1.2, 2.0]])
    np.testing.assert_allclose(losses.log_normal(z, tf.zeros_like(z), tf.zeros_like(z)).numpy(),
                               losses.log_standard_normal(z).numpy(), rtol=1e-6)
