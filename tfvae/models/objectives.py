"""The importance-weighted bound (IWAE, Burda et al. 2016) as a training objective, by overriding two VAE hooks."""

from tfvae.compat import keras
import tensorflow as tf

from tfvae import losses
from tfvae.models.base import VAE


class ImportanceWeighted:
    """Mixin before a VAE class: trains on log (1/K) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x), K samples.

    Overrides only `compute_terms` (K samples per example) and `objective` (minus the bound), so it combines with
    any conditioning that overrides `encode`/`decode`. K = 1 is the ELBO. `beta` and the warm-up weight scale
    log p(z) - log q(z|x) inside each weight, which for K = 1 is the beta-weighted ELBO again.
    """

    def __init__(self, *args, num_importance_samples=5, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_importance_samples = num_importance_samples

    def compute_terms(self, batch, training=False):
        """Per-example terms of K samples each.

        Returns:
          The VAE's terms (`reconstruction` averaged over the K samples, analytic `kl`, `[batch]` nats), plus
          `log_px_z` and `log_prior_ratio` = log p(z_k) - log q(z_k|x), each `[batch, K]` nats.
        """
        k = self.num_importance_samples
        label = batch.get("label")
        z_mean, z_logvar = self.encode(batch["input"], label, training=training)
        # Each example repeated K times in a row, so [batch * K] reshapes to [batch, K].
        repeat = lambda t: None if t is None else tf.repeat(t, k, axis=0)  # noqa: E731
        z_mean_k, z_logvar_k = repeat(z_mean), repeat(z_logvar)
        z = self.sample_z(z_mean_k, z_logvar_k)
        logits = self.decode(z, repeat(label), training=training)
        target = repeat(tf.cast(batch["target"], logits.dtype))
        per_sample = lambda t: tf.reshape(tf.cast(t, tf.float32), [-1, k])  # noqa: E731
        log_px_z = per_sample(self.likelihood.log_prob(target, logits))
        log_prior_ratio = per_sample(losses.log_standard_normal(z) - losses.log_normal(z, z_mean_k, z_logvar_k))
        kl_per_dimension = tf.cast(losses.kl_per_dimension(z_mean, z_logvar), tf.float32)
        return {"reconstruction": -tf.reduce_mean(log_px_z, axis=1), "kl": tf.reduce_sum(kl_per_dimension, axis=-1),
                "kl_per_dimension": kl_per_dimension, "log_px_z": log_px_z, "log_prior_ratio": log_prior_ratio}

    def log_weights(self, terms, kl_weight=None):
        """log p(x|z_k) + beta * warm-up weight * (log p(z_k) - log q(z_k|x)), `[batch, K]` nats."""
        kl_weight = self.kl_weight if kl_weight is None else kl_weight
        return terms["log_px_z"] + self.beta * tf.cast(kl_weight, tf.float32) * terms["log_prior_ratio"]

    def objective(self, terms, kl_weight=None):
        """Minus the importance-weighted bound, `[batch]` nats; log-mean-exp keeps weights of -1e4 nats finite."""
        return -losses.log_mean_exp(self.log_weights(terms, kl_weight), axis=1)

    def get_config(self):
        return {**super().get_config(), "num_importance_samples": self.num_importance_samples}


@keras.saving.register_keras_serializable("tfvae")
class IWAE(ImportanceWeighted, VAE):
    """A VAE trained on the importance-weighted bound."""

