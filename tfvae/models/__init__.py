"""Model construction from a RunConfig."""

import numpy as np

from tfvae.models import likelihoods, mlp
from tfvae.models.base import VAE

BUILDERS = {
    "tf1_tutorial": mlp.build_tf1_tutorial,
    "mlp": mlp.build_mlp,
}


def build_model(cfg, image_shape):
    """Builds the VAE of `cfg` for images of `image_shape` (H, W, C), with all its variables created.

    Returns:
      A VAE whose `input` is `[batch, H*W*C]` for flat models and `[batch, H, W, C]` for image models.
    """
    encoder, decoder = BUILDERS[cfg.model](image_shape, cfg.latent_dim, cfg.hidden_sizes, seed=cfg.seed)
    model = VAE(encoder, decoder, likelihoods.make_likelihood(cfg.likelihood), cfg.latent_dim, seed=cfg.seed,
                name=cfg.model)
    input_shape = (int(np.prod(image_shape)),) if cfg.flatten_inputs else tuple(image_shape)
    model(np.zeros((1, *input_shape), np.float32))
    return model
