"""Adam as TF1's `tf.compat.v1.train.AdamOptimizer` computes it, so the tutorial is reproduced bit for bit."""

from tfvae import compat
from tfvae.compat import keras
import numpy as np
import tensorflow as tf

# TF1 computes `1 - beta` in float32 (1 - 0.9f = 0.100000024); Keras computes it in float64 from a Python float
# and rounds to 0.1f. Passing the float32 value of beta makes both give TF1's numbers.
BETA_1 = float(np.float32(0.9))
BETA_2 = float(np.float32(0.999))


class SummedGradients:
    """Mixin before a Keras 3 optimizer: takes gradients already summed over replicas.

    `VAE.train_step` sums them itself, once, so that the global norm it reports and checks, the clipping to
    `global_clipnorm` and a loss scale's overflow check all see the global batch's gradient; Keras would otherwise
    clip each replica's share and sum them afterwards (clipping a sum of R shares at R times the norm asked for).
    """

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)


@keras.saving.register_keras_serializable("tfvae")
class Adam(SummedGradients, keras.optimizers.Adam):
    """`keras.optimizers.Adam` for gradients summed over replicas (`SummedGradients`)."""


@keras.saving.register_keras_serializable("tfvae")
class TF1Adam(SummedGradients, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with TF1's arithmetic: the same update, rounded the same way.

    TF1 keeps `beta1_power` and `beta2_power` as float32 variables multiplied by beta after every step; Keras
    recomputes `beta ** step` with `pow`. The two round differently after step 2, and over 100 steps the ulps
    grow (through relu gates and Adam's normalisation) to ~1e-5 in the weights. Keeping the powers as variables
    also lets a TF1 checkpoint's Adam state (`beta1_power`, `beta2_power`, slots `Adam`, `Adam_1`) carry over
    exactly, even after `beta1_power` underflowed to 0 (step > ~900) so that the step count is unknowable.
    """

    def __init__(self, learning_rate=0.001, beta_1=BETA_1, beta_2=BETA_2, epsilon=1e-8, **kwargs):
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, **kwargs)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        # Powers for the *next* step, as TF1: initialised to beta, multiplied by beta after each step.
        self.beta_1_power = self.add_variable((), initializer=keras.initializers.Constant(self.beta_1),
                                              name="beta_1_power")
        self.beta_2_power = self.add_variable((), initializer=keras.initializers.Constant(self.beta_2),
                                              name="beta_2_power")

    def update_step(self, gradient, variable, learning_rate):
        # tf.raw_ops.ResourceApplyAdam is the very kernel TF1's AdamOptimizer runs for resource variables.
        dtype = variable.dtype
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=m.handle, v=v.handle,
            beta1_power=tf.cast(self.beta_1_power, dtype), beta2_power=tf.cast(self.beta_2_power, dtype),
            lr=tf.cast(learning_rate, dtype), beta1=tf.cast(self.beta_1, dtype), beta2=tf.cast(self.beta_2, dtype),
            epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype), use_locking=False)

    def apply(self, grads, trainable_variables=None):
        result = super().apply(grads, trainable_variables)
        self.beta_1_power.assign(self.beta_1_power * self.beta_1)
        self.beta_2_power.assign(self.beta_2_power * self.beta_2)
        return result


def make_adam(learning_rate, epsilon, variant="tf1", clip_grad_norm=0.0):
    """Adam for training: `TF1Adam` ("tf1") or `keras.optimizers.Adam` ("keras").

    `clip_grad_norm` > 0 scales the gradients down to that global norm first (Keras' `global_clipnorm`). Under
    Keras 3 both take gradients summed over replicas (`SummedGradients`); tf-keras' Adam sums them itself, and
    `VAE.train_step` hands it each replica's share.

    Under Keras 2 (tf-keras) "tf1" falls back to tf-keras' Adam with TF1's float32 betas: its optimizer API
    (`apply_gradients`, `update_step(gradient, variable)`) differs, and only the last ulps of the run would.
    """
    clipping = {"global_clipnorm": clip_grad_norm} if clip_grad_norm else {}
    adam = keras.optimizers.Adam
    if compat.KERAS_3:
        adam = TF1Adam if variant == "tf1" else Adam
    return adam(learning_rate=learning_rate, beta_1=BETA_1, beta_2=BETA_2, epsilon=epsilon, **clipping)
