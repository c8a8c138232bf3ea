"""Fully connected encoders and decoders: the TF1 tutorial's network and MLPs of any width."""

from tfvae.compat import keras
import numpy as np


def build_tf1_tutorial(image_shape, latent_dim, hidden_sizes=(100,), seed=0):
    """The TF1 MNIST tutorial: 784-100 relu-(2 x latent) tanh / latent-100 relu-784, N(0, 0.1) truncated kernels.

    The encoder's last layer is one Dense of 2 * latent_dim units with tanh, split into z_mean and z_logvar,
    exactly as the tutorial's `Variable_2`/`Variable_3`.
    """
    return _build(image_shape, latent_dim, hidden_sizes, seed, head_activation="tanh",
                  kernel_initializer=lambda s: keras.initializers.TruncatedNormal(stddev=0.1, seed=s))


def build_mlp(image_shape, latent_dim, hidden_sizes=(400,), seed=0, condition_size=0):
    """An MLP encoder (relu hidden layers, linear head) and its mirror image as decoder, Glorot-initialised.

    `condition_size` extra inputs of both (a one-hot label) make the networks of a conditional VAE.
    """
    return _build(image_shape, latent_dim, hidden_sizes, seed, head_activation=None,
                  kernel_initializer=lambda s: keras.initializers.GlorotUniform(seed=s),
                  condition_size=condition_size)


def _build(image_shape, latent_dim, hidden_sizes, seed, head_activation, kernel_initializer, condition_size=0):
    num_pixels = int(np.prod(image_shape))
    seeds = iter(range(seed * 1000, seed * 1000 + 1000))

    def dense(units, activation, name):
        return keras.layers.Dense(units, activation=activation, kernel_initializer=kernel_initializer(next(seeds)),
                                  bias_initializer="zeros", name=name)

    encoder = keras.Sequential(
        [keras.Input((num_pixels + condition_size,))]
        + [dense(size, "relu", f"hidden_{i}") for i, size in enumerate(hidden_sizes)]
        + [dense(2 * latent_dim, head_activation, "latent_params")], name="encoder")
    decoder = keras.Sequential(
        [keras.Input((latent_dim + condition_size,))]
        + [dense(size, "relu", f"hidden_{i}") for i, size in enumerate(reversed(hidden_sizes))]
        + [dense(num_pixels, None, "logits")], name="decoder")
    return encoder, decoder
