"""The one place that knows whether Keras 3 or Keras 2 (`tf-keras`, TF_USE_LEGACY_KERAS=1) is in use."""

import os

import tensorflow as tf

LEGACY_KERAS = os.environ.get("TF_USE_LEGACY_KERAS", "").lower() in ("1", "true", "yes")

if LEGACY_KERAS:
    keras = tf.keras  # Resolves to tf_keras when TF_USE_LEGACY_KERAS is set.
else:
    import keras  # noqa: F401
