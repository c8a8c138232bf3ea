"""Image corruptions for denoising / deblurring / enhancement VAEs: pure, seeded TF ops on image or flat batches.

Every op maps clean images in [0, 1] to corrupted images in [0, 1] of the same shape. Random ops are stateless
(`tf.random.stateless_*`), so a (batch, seed) pair always gives the same corruption, eagerly or inside tf.data.
The kinds, their strength units, defaults and ranges are defined with the flags in config.py.
"""

import math

import numpy as np
import tensorflow as tf

from tfvae.config import CORRUPTION_KINDS as KINDS
from tfvae.config import CORRUPTIONS, DEFAULT_CORRUPTION_STRENGTH, corruption_strength_error


def kind_strengths(kind, strength):
    """The single corruptions a setting applies, {kind: strength}; "mixed" scales each kind's default (and also
    leaves a fifth of the images clean)."""
    if kind == "none":
        return {}
    if kind == "mixed":
        return {k: DEFAULT_CORRUPTION_STRENGTH[k] * strength for k in KINDS}
    return {kind: float(strength)}


def gaussian_noise(images, stddev, seed):
    """Adds N(0, stddev^2) per pixel and clips to [0, 1]. images `[batch, H, W, C]`; seed int `[2]`."""
    noise = tf.random.stateless_normal(tf.shape(images), seed, stddev=stddev, dtype=images.dtype)
    return tf.clip_by_value(images + noise, 0.0, 1.0)


def _blur_matrix(size, sigma):
    """`[size, size]` matrix applying a 1-D Gaussian of `sigma` pixels along an axis, edges mirrored."""
    radius = max(1, int(math.ceil(3.0 * sigma)))  # +-3 sigma holds 99.7% of the mass.
    taps = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (taps / sigma) ** 2)
    weights /= weights.sum()
    matrix = np.zeros((size, size))
    for i in range(size):
        for tap, weight in zip(taps, weights):
            j = i + tap
            # Symmetric mirroring (as np.pad "symmetric"), folded until inside: borders do not darken.
            while not 0 <= j < size:
                j = -j - 1 if j < 0 else 2 * size - j - 1
            matrix[i, j] += weight
    return matrix.astype(np.float32)


def gaussian_blur(images, sigma):
    """Blurs with a separable Gaussian of `sigma` pixels, edges mirrored.

    Args:
      images: `[batch, H, W, C]` in [0, 1].
      sigma: standard deviation of the kernel in pixels (> 0).

    Returns:
      `[batch, H, W, C]` in [0, 1] (each pixel a convex combination of input pixels).
    """
    height, width = images.shape[1], images.shape[2]
    # Two small matrix products instead of depthwise convolutions, which are ~20x slower on CPU for these sizes.
    rows = tf.constant(_blur_matrix(height, sigma), images.dtype)
    cols = tf.constant(_blur_matrix(width, sigma), images.dtype)
    blurred = tf.einsum("hi,biwc->bhwc", rows, images)
    blurred = tf.einsum("wj,bhjc->bhwc", cols, blurred)
    return tf.clip_by_value(blurred, 0.0, 1.0)


def mask(images, fraction, seed):
    """Masking noise (Vincent et al. 2008): each pixel, all its channels, set to 0 with probability `fraction`."""
    shape = tf.concat([tf.shape(images)[:-1], [1]], axis=0)
    keep = tf.random.stateless_uniform(shape, seed, dtype=images.dtype) >= fraction
    return images * tf.cast(keep, images.dtype)


def downsample(images, factor):
    """Loses resolution: area-averages down by `factor` (to at least 1 pixel), then scales back up bilinearly."""
    height, width = images.shape[1], images.shape[2]
    small = [max(1, round(height / factor)), max(1, round(width / factor))]
    shrunk = tf.image.resize(images, small, method="area")
    return tf.clip_by_value(tf.image.resize(shrunk, [height, width], method="bilinear"), 0.0, 1.0)


def _apply_kind(images, kind, strength, seed):
    if kind == "gaussian_noise":
        return gaussian_noise(images, strength, seed)
    if kind == "gaussian_blur":
        return gaussian_blur(images, strength)
    if kind == "mask":
        return mask(images, strength, seed)
    if kind == "downsample":
        return downsample(images, strength)
    raise ValueError(f"unknown corruption {kind!r}; choose one of {', '.join(CORRUPTIONS)}")


def _mixed(images, strength, seed):
    # Each example is left clean or gets one kind, drawn uniformly. Clean examples teach the model to keep a
    # clean image as it is; without them a clean input is out of distribution and restored worse than a noisy one.
    # All versions are computed and one is selected: cheap at these sizes, no data-dependent control flow.
    kind_seed, *op_seeds = tf.unstack(tf.random.experimental.stateless_split(seed, num=len(KINDS) + 1))
    versions = tf.stack([images] + [_apply_kind(images, kind, value, op_seed) for (kind, value), op_seed
                                    in zip(kind_strengths("mixed", strength).items(), op_seeds)])
    count = len(KINDS) + 1
    choice = tf.random.stateless_uniform(tf.shape(images)[:1], kind_seed, 0, count, dtype=tf.int32)
    one_hot = tf.reshape(tf.transpose(tf.one_hot(choice, count, dtype=images.dtype)), [count, -1, 1, 1, 1])
    return tf.reduce_sum(one_hot * versions, axis=0)


def corrupt_one_kind_each(x, strength, seed, image_shape):
    """What "mixed" at `strength` does to images, one choice per image in turn: image i is left clean (i % 5 == 0)
    or gets KINDS[i % 5 - 1] at its mixed strength, so a grid shows each. Returns (images like x, a name for each
    image's column: "left clean" or the kind)."""
    strengths = kind_strengths("mixed", strength)
    choices = ["none", *strengths]
    kinds = [choices[i % len(choices)] for i in range(len(x))]
    corrupted = tf.concat([corrupt(x[i:i + 1], kind, None if kind == "none" else strengths[kind], seed, image_shape)
                           for i, kind in enumerate(kinds)], axis=0)
    return corrupted, ["left clean" if kind == "none" else kind for kind in kinds]


def corrupt(x, kind, strength, seed, image_shape=None):
    """Corrupts a batch of images.

    Args:
      x: float `[batch, H, W, C]`, or flat `[batch, H*W*C]` (then `image_shape` is required), in [0, 1].
      kind: one of CORRUPTIONS; "none" returns x.
      strength: a Python number in the kind's range, or None for its default (config.CORRUPTION_RANGE, units
        in CORRUPTION_UNITS).
      seed: int32/int64 `[2]`, the stateless seed; the same seed gives the same corruption.
      image_shape: (H, W, C), to unflatten flat batches.

    Returns:
      The corrupted batch, shaped and typed like x, in [0, 1].
    """
    if kind == "none":
        return x
    strength = DEFAULT_CORRUPTION_STRENGTH[kind] if strength is None else strength
    message = corruption_strength_error(kind, strength)
    if message:
        raise ValueError(message)
    x = tf.convert_to_tensor(x)
    flat = x.shape.rank == 2
    if flat and image_shape is None:
        raise ValueError(f"flat batches {x.shape} need image_shape=(H, W, C) to be corrupted")
    images = tf.reshape(x, [-1, *image_shape]) if flat else x
    seed = tf.convert_to_tensor(seed)
    corrupted = _mixed(images, strength, seed) if kind == "mixed" else _apply_kind(images, kind, strength, seed)
    return tf.reshape(corrupted, tf.shape(x)) if flat else corrupted


def make_corrupt_fn(kind, strength, image_shape):
    """The `corrupt_fn(target, seed) -> input` of `data.make_pipeline`, or None for "none"."""
    if kind == "none":
        return None
    message = corruption_strength_error(kind, strength)
    if message:
        raise ValueError(message)
    return lambda x, seed: corrupt(x, kind, strength, seed, image_shape)
