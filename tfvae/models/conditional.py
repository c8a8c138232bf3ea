"""The label-conditioned VAE (CVAE, Sohn et al. 2015): a one-hot label joins the encoder's input and z."""

from tfvae.compat import keras
import tensorflow as tf

from tfvae.models import mlp
from tfvae.models.base import VAE
from tfvae.models.objectives import ImportanceWeighted


def build_cvae(image_shape, latent_dim, hidden_sizes, num_classes, seed=0):
    """The MLP encoder and decoder of `mlp.build_mlp`, each with `num_classes` more inputs for the one-hot label.

    Returns:
      (encoder `[batch, H*W*C + num_classes]` -> `[batch, 2 * latent_dim]`,
       decoder `[batch, latent_dim + num_classes]` -> logits `[batch, H*W*C]`).
    """
    return mlp.build_mlp(image_shape, latent_dim, hidden_sizes, seed=seed, condition_size=num_classes)


@keras.saving.register_keras_serializable("tfvae")
class ConditionalVAE(VAE):
    """q(z|x, y) and p(x|z, y) for a class label y in [0, num_classes); overrides only `encode` and `decode`.

    Every call needs the label (int32 `[batch]`); a label outside [0, num_classes) raises InvalidArgumentError
    rather than becoming an all-zero one-hot vector.
    """

    def __init__(self, *args, num_classes=10, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_classes = num_classes

    def one_hot(self, label, dtype):
        """label int32 `[batch]` -> `[batch, num_classes]` of `dtype`, after checking the range."""
        if label is None:
            raise ValueError(f"{self.name} is label-conditioned: pass a label in [0, {self.num_classes}) "
                             f"with every input")
        # Keras turns numpy labels given to `model(...)` into floats; the classes are integers.
        label = tf.cast(label, tf.int32)
        tf.debugging.assert_non_negative(label, message="label must be >= 0")
        tf.debugging.assert_less(label, self.num_classes,
                                 message=f"label must be < num_classes={self.num_classes}")
        return tf.one_hot(label, self.num_classes, dtype=dtype)

    def encode(self, x, label=None, training=False):
        """x `[batch, D]` and label `[batch]` -> (z_mean, z_logvar), each `[batch, latent_dim]`."""
        return super().encode(tf.concat([x, self.one_hot(label, x.dtype)], axis=-1), training=training)

    def decode(self, z, label=None, training=False):
        """z `[batch, latent_dim]` and label `[batch]` -> logits `[batch, D]`."""
        return super().decode(tf.concat([z, self.one_hot(label, z.dtype)], axis=-1), training=training)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable("tfvae")
class ConditionalIWAE(ImportanceWeighted, ConditionalVAE):
    """A label-conditioned VAE trained on the importance-weighted bound."""
