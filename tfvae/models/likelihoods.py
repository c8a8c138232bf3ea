"""Observation models p(x|z): each maps decoder logits to a mean image and a per-example log-likelihood."""

import math

from tfvae.compat import keras
import tensorflow as tf

from tfvae import losses


@keras.saving.register_keras_serializable("tfvae")
class Likelihood(keras.layers.Layer):
    """Base class. `call(logits)` is the mean image x_hat in [0, 1]; `log_prob(x, logits)` is `[batch]`."""

    # Whether log_prob is a normalised density, so that losses are nats.
    is_density = True

    def call(self, logits):
        return tf.sigmoid(logits)

    def log_prob(self, x, logits):
        raise NotImplementedError


@keras.saving.register_keras_serializable("tfvae")
class Bernoulli(Likelihood):
    def log_prob(self, x, logits):
        return losses.bernoulli_log_prob(x, logits)


@keras.saving.register_keras_serializable("tfvae")
class SquaredError(Likelihood):
    """The TF1 tutorial's term: log_prob is minus the sum of squared error of sigmoid(logits)."""

    is_density = False

    def log_prob(self, x, logits):
        return -losses.squared_error(x, tf.sigmoid(logits))


@keras.saving.register_keras_serializable("tfvae")
class Gaussian(Likelihood):
    """N(x; sigmoid(logits), sigma^2): sigma fixed, or learned per pixel (`learn_variance`)."""

    def __init__(self, stddev=0.1, learn_variance=False, **kwargs):
        super().__init__(**kwargs)
        self.stddev = stddev
        self.learn_variance = learn_variance

    def build(self, logits_shape):
        if self.learn_variance:
            self.logvar = self.add_weight(
                shape=tuple(logits_shape[1:]), name="logvar",
                initializer=keras.initializers.Constant(2.0 * math.log(self.stddev)))

    def log_prob(self, x, logits):
        if self.learn_variance:
            # Bounded below so a pixel that is always 0 cannot drive the density to infinity.
            logvar = tf.maximum(self.logvar, -9.0) + tf.zeros_like(logits)
        else:
            logvar = tf.fill(tf.shape(logits), 2.0 * math.log(self.stddev))
        return losses.gaussian_log_prob(x, tf.sigmoid(logits), logvar)

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev, "learn_variance": self.learn_variance}


def make_likelihood(name, **kwargs):
    # float32 under any mixed precision policy: x_hat and log-likelihoods are outputs, not activations.
    return {"bernoulli": Bernoulli, "sse": SquaredError, "gaussian": Gaussian}[name](
        name="likelihood", dtype="float32", **kwargs)
