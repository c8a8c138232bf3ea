"""The one place that knows whether Keras 3 or Keras 2 (`tf-keras`, TF_USE_LEGACY_KERAS=1) is in use."""

import os

import tensorflow as tf

LEGACY_KERAS = os.environ.get("TF_USE_LEGACY_KERAS", "").lower() in ("1", "true", "yes")

if LEGACY_KERAS:
    keras = tf.keras  # Resolves to tf_keras when TF_USE_LEGACY_KERAS is set.
else:
    import keras  # noqa: F401

KERAS_3 = not LEGACY_KERAS


def variable_path(variable):
    """A model variable's path without the model's name, e.g. "encoder/hidden_0/kernel"."""
    if KERAS_3:
        return variable.path
    # tf-keras names are "encoder/hidden_0/kernel:0", scoped under the outer model only in some versions.
    return variable.name.split(":")[0]
