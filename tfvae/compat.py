"""The one place that knows whether Keras 3 or Keras 2 (`tf-keras`, TF_USE_LEGACY_KERAS=1) is in use.

Everything whose API differs between the two lives here: the seeded sampling RNG, the optimizer's loss scaling
and update call, and variable paths.
"""

import os

import numpy as np
import tensorflow as tf

LEGACY_KERAS = os.environ.get("TF_USE_LEGACY_KERAS", "").lower() in ("1", "true", "yes")
KERAS_3 = not LEGACY_KERAS

if LEGACY_KERAS:
    keras = tf.keras  # Resolves to tf_keras when TF_USE_LEGACY_KERAS is set.
else:
    import keras  # noqa: F401


if KERAS_3:
    SeedGenerator = keras.random.SeedGenerator
else:
    class SeedGenerator(tf.Module):
        """Keras 3's SeedGenerator for tf-keras: a [seed, counter] int64 state feeding stateless ops."""

        def __init__(self, seed=None):
            super().__init__(name="seed_generator")
            seed = int(np.random.randint(2**31)) if seed is None else seed
            self.state = tf.Variable([seed, 0], dtype=tf.int64, trainable=False, name="seed_generator_state")

        def next(self):
            seed = tf.identity(self.state.read_value())
            self.state.assign_add(tf.constant([0, 1], tf.int64))
            return seed


def random_normal(shape, seed_generator, dtype="float32"):
    """N(0, 1) samples of `shape` drawn from a `SeedGenerator` (advances it)."""
    if KERAS_3:
        return keras.random.normal(shape, seed=seed_generator, dtype=dtype)
    return tf.random.stateless_normal(shape, seed=seed_generator.next(), dtype=dtype)


def scale_loss(optimizer, loss):
    """The loss to differentiate: scaled when the optimizer does loss scaling (mixed precision)."""
    if KERAS_3:
        return optimizer.scale_loss(loss)
    return optimizer.get_scaled_loss(loss) if hasattr(optimizer, "get_scaled_loss") else loss


def apply_gradients(optimizer, gradients, variables):
    """One optimizer update from gradients of `scale_loss(...)` (unscaled here when needed)."""
    if KERAS_3:
        return optimizer.apply(gradients, variables)
    if hasattr(optimizer, "get_unscaled_gradients"):
        gradients = optimizer.get_unscaled_gradients(gradients)
    return optimizer.apply_gradients(zip(gradients, variables))


def apply_gradients_if_finite(optimizer, gradients, variables, finite):
    """`apply_gradients` when the scalar bool `finite` holds (the same on every replica); else nothing changes.

    A skipped step leaves weights, slots and the step count as they were. Strategies that update variables through
    `merge_call` (MirroredStrategy on CPUs, multi-worker) forbid a cond around it in a replica context, so there the
    cond runs in the cross-replica context, as Keras' LossScaleOptimizer does it.
    """
    if not tf.distribute.has_strategy() or tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(finite, lambda: _applied(optimizer, gradients, variables), lambda: tf.constant(False))
        return

    def cross_replica(strategy, gradients, finite):
        def apply_on_every_replica():
            strategy.extended.call_for_each_replica(_applied, args=(optimizer, gradients, variables))
            return tf.constant(True)

        # `finite` was all-reduced, so every replica's value is the same; take the first.
        tf.cond(strategy.experimental_local_results(finite)[0], apply_on_every_replica, lambda: tf.constant(False))

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(gradients, finite))


def takes_summed_gradients(optimizer):
    """Whether `optimizer` takes gradients already summed over replicas (tfvae's Adam); others sum them again."""
    from tfvae import optimizers  # Imported here: tfvae.optimizers imports this module.

    return KERAS_3 and isinstance(getattr(optimizer, "inner_optimizer", optimizer), optimizers.SummedGradients)


def add_metric_variable(metric, name, aggregation):
    """A float32 scalar variable of `metric`, starting at 0, read across replicas by `aggregation` ("sum", "mean")."""
    if KERAS_3:
        return metric.add_variable(shape=(), initializer="zeros", dtype="float32", aggregation=aggregation, name=name)
    return metric.add_weight(name=name, shape=(), initializer="zeros", dtype=tf.float32,
                             aggregation=getattr(tf.VariableAggregation, aggregation.upper()))


def _applied(optimizer, gradients, variables):
    apply_gradients(optimizer, gradients, variables)
    return tf.constant(True)


def step_outputs(logs):
    """What a custom train_step/test_step returns: `logs` ({name: scalar}), shaped for Keras' cross-worker mean.

    Across several workers Keras 3 reduces each step output with `strategy.reduce("MEAN", value, axis=0)`, which
    fails on scalars (tensorflow/tensorflow#72388); a leading axis of 1 makes it the plain mean over workers and
    comes back as a scalar. Elsewhere outputs stay scalars.
    """
    strategy = tf.distribute.get_strategy()
    # The same test Keras makes before choosing that reduction.
    if KERAS_3 and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
            strategy.extended._in_multi_worker_mode():
        return {name: value[None] for name, value in logs.items()}
    return logs


def variable_path(variable):
    """A model variable's path without the model's name, e.g. "encoder/hidden_0/kernel"."""
    if KERAS_3:
        return variable.path
    return variable.name.split(":")[0]


def backing_tf_variables(model):
    """The tf.Variables behind a model's weights (Keras 3 wraps each in a keras.Variable; tf-keras does not)."""
    if KERAS_3:
        return [variable.value for variable in model.variables]
    return []
