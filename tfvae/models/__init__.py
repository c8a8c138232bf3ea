"""Model construction from a RunConfig."""

import numpy as np
import tensorflow as tf

from tfvae import data
from tfvae.models import conditional, conv, likelihoods, mlp, objectives
from tfvae.models.base import VAE


# Each builder maps (image_shape, cfg, num_classes) to (encoder, decoder).
BUILDERS = {
    "tf1_tutorial": lambda shape, cfg, _: mlp.build_tf1_tutorial(shape, cfg.latent_dim, cfg.hidden_sizes,
                                                                 seed=cfg.seed),
    "mlp": lambda shape, cfg, _: mlp.build_mlp(shape, cfg.latent_dim, cfg.hidden_sizes, seed=cfg.seed),
    "conv": lambda shape, cfg, _: conv.build_conv(shape, cfg.latent_dim, cfg.conv_filters, cfg.hidden_sizes,
                                                  seed=cfg.seed),
    "cvae": lambda shape, cfg, classes: conditional.build_cvae(shape, cfg.latent_dim, cfg.hidden_sizes, classes,
                                                               seed=cfg.seed),
}


def _model_class_and_options(cfg, num_classes):
    """The VAE class of `cfg` (conditioning x objective) and the constructor options only it takes."""
    options = {}
    if cfg.model == "cvae":
        options["num_classes"] = num_classes
    if cfg.objective == "iwae":
        options["num_importance_samples"] = cfg.num_importance_samples
        return (conditional.ConditionalIWAE if cfg.model == "cvae" else objectives.IWAE), options
    return (conditional.ConditionalVAE if cfg.model == "cvae" else VAE), options


def build_model(cfg, image_shape, num_classes=None):
    """Builds the VAE of `cfg` for images of `image_shape` (H, W, C), with all its variables created; a conditional
    one for labels in [0, num_classes) (None: the named datasets' data.NUM_CLASSES).

    Returns:
      A VAE whose `input` is `[batch, H*W*C]` for flat models and `[batch, H, W, C]` for image models.
    """
    num_classes = num_classes or data.NUM_CLASSES
    encoder, decoder = BUILDERS[cfg.model](image_shape, cfg, num_classes)
    likelihood_options = {
        "gaussian": {"stddev": cfg.gaussian_stddev, "learn_variance": cfg.learn_variance},
        "autoregressive_bernoulli": {"image_shape": image_shape, "kernel_size": cfg.ar_kernel_size,
                                     "channels": cfg.ar_channels},
    }.get(cfg.likelihood, {})
    model_class, options = _model_class_and_options(cfg, num_classes)
    model = model_class(encoder, decoder, likelihoods.make_likelihood(cfg.likelihood, **likelihood_options),
                        cfg.latent_dim, beta=cfg.beta, seed=cfg.seed, free_bits=cfg.free_bits, name=cfg.model,
                        **options)
    input_shape = (int(np.prod(image_shape)),) if cfg.flatten_inputs else tuple(image_shape)
    # Tensors, not numpy arrays: Keras would record a float label in the model's saved input spec.
    model({"input": tf.zeros((1, *input_shape)), "label": tf.zeros((1,), tf.int32)})
    return model
