"""Convolutional encoders and decoders: stride-2 Conv2D blocks and a Dense head, mirrored with Conv2DTranspose."""

import math

from tfvae.compat import keras


def build_conv(image_shape, latent_dim, filters=(32, 64), hidden_sizes=(), seed=0):
    """A convolutional encoder and its mirror image as decoder, for images of any size and channel count.

    Encoder: one 3x3 stride-2 Conv2D + relu per entry of `filters` (each halves H and W, rounding up), flatten,
    optional Dense relu layers of `hidden_sizes`, and a linear Dense head of 2 * latent_dim (z_mean, z_logvar).
    Decoder: Dense layers back to the smallest feature map, Conv2DTranspose stride-2 blocks in reverse, the last
    one linear with C channels, cropped to (H, W) when a halving rounded up (e.g. 28 -> 14 -> 7 -> 4).

    Args:
      image_shape: (H, W, C) of the inputs, e.g. (28, 28, 1) or (32, 32, 3).
      latent_dim: size of z.
      filters: channels of the encoder's blocks, in order.
      hidden_sizes: widths of Dense layers between the feature map and the head.
      seed: seeds the Glorot initialisers.

    Returns:
      (encoder `[batch, H, W, C]` -> `[batch, 2 * latent_dim]`, decoder `[batch, latent_dim]` -> logits
      `[batch, H, W, C]`).
    """
    height, width, channels = image_shape
    seeds = iter(range(seed * 1000, seed * 1000 + 1000))
    init = lambda: keras.initializers.GlorotUniform(seed=next(seeds))  # noqa: E731
    scale = 2 ** len(filters)
    map_height, map_width = math.ceil(height / scale), math.ceil(width / scale)

    encoder = keras.Sequential(
        [keras.Input(tuple(image_shape))]
        + [keras.layers.Conv2D(f, 3, strides=2, padding="same", activation="relu", kernel_initializer=init(),
                               name=f"conv_{i}") for i, f in enumerate(filters)]
        + [keras.layers.Flatten(name="flatten")]
        + [keras.layers.Dense(size, activation="relu", kernel_initializer=init(), name=f"hidden_{i}")
           for i, size in enumerate(hidden_sizes)]
        + [keras.layers.Dense(2 * latent_dim, kernel_initializer=init(), name="latent_params")], name="encoder")

    # Transposed blocks produce filters[-2], ..., filters[0] channels, then the image's C channels as logits.
    out_channels = list(reversed(filters[:-1])) + [channels]
    crop_height, crop_width = map_height * scale - height, map_width * scale - width
    decoder = keras.Sequential(
        [keras.Input((latent_dim,))]
        + [keras.layers.Dense(size, activation="relu", kernel_initializer=init(), name=f"hidden_{i}")
           for i, size in enumerate(reversed(hidden_sizes))]
        + [keras.layers.Dense(map_height * map_width * filters[-1], activation="relu", kernel_initializer=init(),
                              name="to_feature_map"),
           keras.layers.Reshape((map_height, map_width, filters[-1]), name="feature_map")]
        + [keras.layers.Conv2DTranspose(c, 3, strides=2, padding="same",
                                        activation=None if i == len(out_channels) - 1 else "relu",
                                        kernel_initializer=init(), name=f"deconv_{i}")
           for i, c in enumerate(out_channels)]
        + ([keras.layers.Cropping2D(((crop_height // 2, crop_height - crop_height // 2),
                                     (crop_width // 2, crop_width - crop_width // 2)), name="crop")]
           if crop_height or crop_width else []), name="decoder")
    return encoder, decoder
