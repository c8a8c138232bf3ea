"""tfvae: variational autoencoders for images on TensorFlow 2 / Keras."""

import os

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) hides the training log; users may override.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
