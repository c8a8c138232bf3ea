"""Observation models p(x|z): each maps decoder logits to a mean image and a per-example log-likelihood."""

import math

import numpy as np

from tfvae.compat import keras
import tensorflow as tf

from tfvae import losses


@keras.saving.register_keras_serializable("tfvae")
class Likelihood(keras.layers.Layer):
    """Base class. `call(logits)` is the image x_hat in [0, 1] (the mean of p(x|z); an autoregressive likelihood's
    mean-field image, which has more ink than its true mean); `log_prob(x, logits)` is `[batch]`; `sample(logits,
    seed)` draws an image x ~ p(x|z) (densities only)."""

    # Whether log_prob is a normalised density, so that losses are nats.
    is_density = True
    # Whether it is normalised only over x in {0, 1} (a Bernoulli): of gray levels it is a cross-entropy.
    binary_data = False
    # Whether `call`'s image only approximates the mean (the autoregressive one's mean field), so that pictures of
    # what the model makes should be drawn with `sample` too.
    mean_field = False

    def call(self, logits):
        return tf.sigmoid(logits)

    def log_prob(self, x, logits):
        raise NotImplementedError

    def sample(self, logits, seed):
        """One image drawn from p(x|z) per example, shaped as `logits`, by the stateless `seed` (int `[2]`)."""
        raise NotImplementedError

    @property
    def can_sample(self):
        """Whether `sample` is implemented: not for the tutorial's squared error, which is no distribution."""
        return type(self).sample is not Likelihood.sample

    def log_prob_samples(self, x, logits):
        """log p(x|z_s) of each example under S decodings: x `[batch, ...]`, logits `[S, batch, ...]` -> `[S, batch]`.

        The importance-sampled likelihood's inner loop; likelihoods whose cost depends on x override it.
        """
        num_samples, batch = tf.shape(logits)[0], tf.shape(logits)[1]
        x_tiled = tf.tile(x[None], tf.concat([[num_samples], tf.ones([tf.rank(x)], tf.int32)], 0))
        flat = lambda t: tf.reshape(t, tf.concat([[-1], tf.shape(t)[2:]], 0))  # noqa: E731
        return tf.reshape(self.log_prob(flat(tf.cast(x_tiled, logits.dtype)), flat(logits)), [num_samples, batch])


@keras.saving.register_keras_serializable("tfvae")
class Bernoulli(Likelihood):
    binary_data = True

    def log_prob(self, x, logits):
        return losses.bernoulli_log_prob(x, logits)

    def sample(self, logits, seed):
        # Pixel i is 1 where uniform_i < p_i: the autoregressive likelihood draws from the same uniforms.
        return tf.cast(tf.random.stateless_uniform(tf.shape(logits), seed) < tf.sigmoid(logits), logits.dtype)


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

    def _logvar(self, logits):
        if self.learn_variance:
            # Bounded below so a pixel that is always 0 cannot drive the density to infinity.
            return tf.maximum(self.logvar, -9.0) + tf.zeros_like(logits)
        return tf.fill(tf.shape(logits), 2.0 * math.log(self.stddev))

    def log_prob(self, x, logits):
        return losses.gaussian_log_prob(x, tf.sigmoid(logits), self._logvar(logits))

    def sample(self, logits, seed):
        # Clipped to [0, 1], the range of images: the density itself puts a little mass outside it.
        noise = tf.random.stateless_normal(tf.shape(logits), seed, dtype=logits.dtype)
        return tf.clip_by_value(tf.sigmoid(logits) + tf.exp(0.5 * self._logvar(logits)) * noise, 0.0, 1.0)

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev, "learn_variance": self.learn_variance}


def causal_neighbourhood(image_shape, kernel_size):
    """Indices of the pixels each pixel of a single-channel image is conditioned on, in raster order.

    The rows above it and the pixels left of it in its own row, within a `kernel_size` square centred on it:
    the receptive field of PixelCNN's type-A masked convolution (van den Oord et al. 2016).

    Returns:
      int32 `[H*W, kernel_size * (kernel_size // 2) + kernel_size // 2]`; H*W (one past the last pixel) marks a
      neighbour outside the image, which reads as 0.
    """
    height, width = image_shape[0], image_shape[1]
    half = kernel_size // 2
    offsets = [(dr, dc) for dr in range(-half, 1) for dc in range(-half, half + 1) if dr < 0 or dc < 0]
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    rows, cols = rows.reshape(-1, 1), cols.reshape(-1, 1)
    neighbour_rows = rows + np.array([dr for dr, _ in offsets])
    neighbour_cols = cols + np.array([dc for _, dc in offsets])
    inside = (neighbour_rows >= 0) & (neighbour_cols >= 0) & (neighbour_cols < width)
    return np.where(inside, neighbour_rows * width + neighbour_cols, height * width).astype(np.int32)


@keras.saving.register_keras_serializable("tfvae")
class AutoregressiveBernoulli(Likelihood):
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(logits_i(z) + a_i(x_<i))): a VAE decoder with a shallow PixelCNN.

    a_i is a small network (one hidden layer of `channels` relu units, shared by all pixels) of the pixels above and
    left of pixel i within a `kernel_size` square, the receptive field of a type-A masked convolution. The decoder
    draws the global shape from z; a_i models what a factorised Bernoulli cannot, the local dependence between
    neighbouring pixels of a stroke, as in PixelVAE (Gulrajani et al. 2017). log_prob needs one pass; x_hat is a
    raster-order pass that feeds each pixel's probability to the pixels after it (the mean-field image), and
    `sample` the same pass feeding each pixel's drawn value (ancestral sampling, exact). Single-channel images only.
    """

    binary_data = True
    mean_field = True

    def __init__(self, image_shape, kernel_size=7, channels=32, **kwargs):
        super().__init__(**kwargs)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.kernel_size = kernel_size
        self.channels = channels
        self.num_pixels = self.image_shape[0] * self.image_shape[1]
        self.neighbours = tf.constant(causal_neighbourhood(self.image_shape, kernel_size))

    def build(self, logits_shape):
        num_neighbours = int(self.neighbours.shape[1])
        self.hidden_kernel = self.add_weight(
            shape=(num_neighbours, self.channels), name="hidden_kernel", initializer="glorot_uniform")
        self.hidden_bias = self.add_weight(shape=(self.channels,), name="hidden_bias", initializer="zeros")
        # Zero: training starts from the plain Bernoulli decoder.
        self.output_kernel = self.add_weight(shape=(self.channels,), name="output_kernel", initializer="zeros")

    def _context_logits(self, x_flat, neighbours):
        """a_i for the pixels `neighbours` rows describe: x_flat `[batch, H*W]` -> `[batch, len(neighbours)]`."""
        x_padded = tf.pad(x_flat, [[0, 0], [0, 1]])
        patches = tf.gather(x_padded, neighbours, axis=1)  # [batch, pixels, neighbours]
        hidden = tf.nn.relu(tf.einsum("bpn,nc->bpc", patches, self.hidden_kernel) + self.hidden_bias)
        return tf.einsum("bpc,c->bp", hidden, self.output_kernel)

    def log_prob(self, x, logits):
        flat_shape = [tf.shape(logits)[0], self.num_pixels]
        x_flat = tf.reshape(tf.cast(x, logits.dtype), flat_shape)
        logits_flat = tf.reshape(logits, flat_shape) + self._context_logits(x_flat, self.neighbours)
        return losses.bernoulli_log_prob(x_flat, logits_flat)

    def log_prob_samples(self, x, logits):
        # The context of x is the same under every z: computed once, not S times.
        x_flat = tf.reshape(tf.cast(x, logits.dtype), [tf.shape(x)[0], self.num_pixels])
        logits_flat = tf.reshape(logits, [tf.shape(logits)[0], tf.shape(logits)[1], self.num_pixels])
        logits_flat += self._context_logits(x_flat, self.neighbours)[None]
        return tf.reduce_sum(x_flat * logits_flat - tf.math.softplus(logits_flat), axis=-1)  # As bernoulli_log_prob.

    def _raster_pass(self, logits, pixel_value):
        """Pixels in raster order, each `pixel_value(i, p_i)` for p_i = sigmoid(logits_i + a_i(pixels before i))."""
        flat_shape = [tf.shape(logits)[0], self.num_pixels]
        logits_flat = tf.reshape(logits, flat_shape)

        def next_pixel(i, x):
            context = self._context_logits(x, self.neighbours[i][None])[:, 0]
            value = pixel_value(i, tf.sigmoid(logits_flat[:, i] + context))
            return i + 1, x + value[:, None] * tf.one_hot(i, self.num_pixels, dtype=x.dtype)

        _, x = tf.while_loop(lambda i, _: i < self.num_pixels, next_pixel,
                             (tf.constant(0), tf.zeros_like(logits_flat)))
        return tf.reshape(x, tf.shape(logits))

    def call(self, logits):
        return self._raster_pass(logits, lambda i, probability: probability)

    def sample(self, logits, seed):
        uniform = tf.reshape(tf.random.stateless_uniform(tf.shape(logits), seed), [-1, self.num_pixels])
        return self._raster_pass(logits, lambda i, probability: tf.cast(uniform[:, i] < probability, logits.dtype))

    def get_config(self):
        return {**super().get_config(), "image_shape": list(self.image_shape), "kernel_size": self.kernel_size,
                "channels": self.channels}


LIKELIHOODS = {"bernoulli": Bernoulli, "sse": SquaredError, "gaussian": Gaussian,
               "autoregressive_bernoulli": AutoregressiveBernoulli}


def make_likelihood(name, **kwargs):
    # float32 under any mixed precision policy: x_hat and log-likelihoods are outputs, not activations.
    return LIKELIHOODS[name](name="likelihood", dtype="float32", **kwargs)


def is_density(name, binarize):
    """Whether likelihood `name`'s log_prob of data prepared by `binarize` is a normalised log-density (nats).

    A Bernoulli's is, of binary images; of gray levels (`binarize` "none") it is a cross-entropy, which can be
    trained on and compared between such runs but is no likelihood of the data.
    """
    likelihood = LIKELIHOODS[name]
    return likelihood.is_density and not (likelihood.binary_data and binarize == "none")
