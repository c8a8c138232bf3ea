"""The VAE model: shapes, the tutorial's exact network, the loss against numpy, and learning on real MNIST."""

import numpy as np
import pytest
import tensorflow as tf

from tfvae import config, data, losses
from tfvae.compat import keras
from tfvae.models import build_model


def _tutorial(**overrides):
    return config.RunConfig(**{"model": "tf1_tutorial", "likelihood": "sse", **overrides})


def test_tutorial_network_is_exactly_the_tf1_one():
    model = build_model(_tutorial(), (28, 28, 1))
    shapes = [tuple(v.shape) for v in model.trainable_variables]
    assert shapes == [(784, 100), (100,), (100, 40), (40,), (20, 100), (100,), (100, 784), (784,)]
    kernels = [v.numpy() for v in model.trainable_variables if v.ndim == 2]
    biases = [v.numpy() for v in model.trainable_variables if v.ndim == 1]
    assert all(np.all(b == 0) for b in biases)
    for kernel in kernels:  # Truncated normal, stddev 0.1: nothing beyond two standard deviations.
        assert np.abs(kernel).max() <= 0.2 and 0.07 < kernel.std() < 0.095
    assert model.encoder.layers[-1].activation.__name__ == "tanh"


def test_shapes_of_flat_model():
    model = build_model(config.RunConfig(model="mlp", hidden_sizes=(64, 32), latent_dim=3,
                                         likelihood="bernoulli"), (28, 28, 1))
    x = tf.random.uniform([5, 784])
    z_mean, z_logvar = model.encode(x)
    assert z_mean.shape == (5, 3) and z_logvar.shape == (5, 3)
    assert model.decode(z_mean).shape == (5, 784)
    x_hat = model(x)
    assert x_hat.shape == (5, 784) and float(tf.reduce_min(x_hat)) >= 0 and float(tf.reduce_max(x_hat)) <= 1


def _numpy_tutorial_loss(weights, x, eps):
    w1, b1, w2, b2, w3, b3, w4, b4 = weights
    hidden = np.maximum(x @ w1 + b1, 0)
    params = np.tanh(hidden @ w2 + b2)
    z_mean, z_logvar = params[:, :20], params[:, 20:]
    z = z_mean + np.exp(0.5 * z_logvar) * eps
    x_hat = 1 / (1 + np.exp(-(np.maximum(z @ w3 + b3, 0) @ w4 + b4)))
    sse = np.sum((x - x_hat) ** 2, axis=1)
    kl = 0.5 * np.sum(z_mean ** 2 + np.exp(z_logvar) - z_logvar - 1, axis=1)
    return np.mean(sse + kl), np.mean(sse), np.mean(kl)


def test_loss_equals_numpy_for_fixed_weights():
    model = build_model(_tutorial(seed=7), (28, 28, 1))
    rng = np.random.default_rng(1)
    weights = [rng.normal(0, 0.1, v.shape).astype(np.float32) for v in model.trainable_variables]
    for variable, value in zip(model.trainable_variables, weights):
        variable.assign(value)
    x = rng.random((6, 784)).astype(np.float32)
    # A fresh generator with the model's seed yields the eps the model draws next.
    eps = keras.random.normal((6, 20), seed=keras.random.SeedGenerator(7)).numpy()
    model.compile(optimizer="adam")
    metrics = model.test_step({"input": x, "target": x, "label": np.zeros(6, np.int32)})
    expected = _numpy_tutorial_loss(weights, x.astype(np.float64), eps.astype(np.float64))
    np.testing.assert_allclose([float(metrics[k]) for k in ("loss", "reconstruction", "kl")], expected, rtol=1e-5)


def test_train_steps_on_real_mnist_lower_the_loss(mnist_dir):
    cfg = _tutorial(data_dir=mnist_dir, validation_size=1000)
    datasets = data.make_datasets(cfg)
    model = build_model(cfg, datasets.image_shape)
    model.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-8))
    before = model.evaluate(datasets.validation, verbose=0, return_dict=True)
    model.fit(datasets.train.take(300), epochs=1, verbose=0, shuffle=False)
    after = model.evaluate(datasets.validation, verbose=0, return_dict=True)
    # Untrained, the sigmoid outputs ~0.5 everywhere (SSE ~ 190); 300 steps bring it near the tutorial's 1st epoch.
    assert before["loss"] > 100
    assert after["loss"] < 55
    assert after["kl"] > 1  # The latent is in use, not collapsed.


@pytest.mark.parametrize("overrides", [
    {},  # The tutorial recipe's network.
    {"model": "mlp", "likelihood": "bernoulli", "hidden_sizes": (64,), "batch_size": 96},
    {"model": "cvae", "likelihood": "bernoulli", "hidden_sizes": (64,), "objective": "iwae",
     "num_importance_samples": 3},
], ids=["tutorial", "mlp_bernoulli", "cvae_iwae"])
def test_micro_batches_train_as_the_whole_batch(mnist_dir, overrides):
    """--micro_batches=2 (or 3) splits each train batch into parts run side by side: the same noise, loss, metrics
    and weights as the whole batch after 20 steps of real MNIST, up to float rounding."""
    from tfvae import training

    results = []
    for parts in (1, 3 if overrides.get("batch_size") == 96 else 2):
        cfg = _tutorial(**{"data_dir": mnist_dir, "validation_size": 50000, "micro_batches": parts,
                           "steps_per_execution": 10, **overrides})
        datasets = data.make_datasets(cfg)
        model = build_model(cfg, datasets.image_shape)
        training.compile_model(model, cfg)
        assert model.micro_batches == parts
        initial = [w.numpy() for w in model.trainable_weights]
        logs = model.fit(datasets.train.take(20), epochs=1, verbose=0, shuffle=False).history
        results.append((logs, [w.numpy() for w in model.trainable_weights], model.seed_generator.state.numpy()))
    (whole_logs, whole_weights, whole_rng), (split_logs, split_weights, split_rng) = results
    for name in ("loss", "reconstruction", "kl", "grad_norm"):
        np.testing.assert_allclose(split_logs[name], whole_logs[name], rtol=2e-5, err_msg=name)
    assert split_logs["bad_steps"] == whole_logs["bad_steps"] == [0.0]
    np.testing.assert_array_equal(split_rng, whole_rng)  # One draw per step either way.
    for split, whole, start in zip(split_weights, whole_weights, initial):
        # Adam divides each gradient by its running RMS, so an element whose gradient nears 0 at some step takes a
        # step that rounding can tip (on a Zen 3, one of the cvae's 50,816 encoder weights ended 7.5e-5 apart, the
        # whole update 5e-5 of its norm apart): each element within a quarter of one step (the learning rate), the
        # update within 0.1% of its norm. Other noise per part or a lost part would be ~100% apart.
        np.testing.assert_allclose(split, whole, rtol=0, atol=cfg.learning_rate / 4)
        assert np.linalg.norm(split - whole) <= 1e-3 * np.linalg.norm(whole - start)
    # Not trivially equal: 20 steps moved the weights (both runs start from the same seeded initialisation).
    assert min(float(np.abs(w - w0).max()) for w, w0 in zip(whole_weights, initial)) > 1e-3


def test_a_step_that_makes_its_batches_from_indices_trains_as_on_tf_datas_batches(mnist_dir):
    """On one CPU device train.py fits on index batches and the train step gathers each batch
    (training.training_batches): the same losses and weights after 30 steps, bit for bit, as on tf.data's batches."""
    from tfvae import training

    cfg = _tutorial(data_dir=mnist_dir, validation_size=57000, steps_per_execution=5)
    assert training.gathers_in_step(cfg)
    results = []
    for in_step in (False, True):
        datasets = data.make_datasets(cfg)
        model = build_model(cfg, datasets.image_shape)
        training.compile_model(model, cfg)
        batches = training.training_batches(model, datasets, cfg) if in_step else datasets.train
        assert ("indices" in batches.element_spec) == in_step
        logs = model.fit(batches, epochs=1, verbose=0, shuffle=False).history
        results.append((logs, [w.numpy() for w in model.trainable_weights]))
    (pipeline_logs, pipeline_weights), (step_logs, step_weights) = results
    assert step_logs == pipeline_logs and step_logs["loss"][0] < 170  # The mean of 30 steps from ~190: it learns.
    for made_in_step, made_by_tf_data in zip(step_weights, pipeline_weights):
        np.testing.assert_array_equal(made_in_step, made_by_tf_data)


@pytest.mark.parametrize("overrides", [{"jit_compile": True}, {"strategy": "mirrored"}])
def test_xla_and_replicas_keep_tf_datas_batches(overrides):
    from tfvae import training

    assert not training.gathers_in_step(_tutorial(**overrides))


def test_a_gpu_keeps_tf_datas_batches(mnist_dir, monkeypatch):
    """Where TensorFlow lists a GPU, the step runs there and cannot gather from the host's arrays: fit gets tf.data's
    batches and the model no batch maker. (This machine has no GPU, so TensorFlow's device list is stood in for.)"""
    from tfvae import training

    cfg = _tutorial(data_dir=mnist_dir, validation_size=59000)
    assert training.gathers_in_step(cfg)
    real_list = tf.config.list_logical_devices
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: (
        [tf.config.LogicalDevice("/device:GPU:0", "GPU")] if kind == "GPU" else real_list(kind)))
    assert not training.gathers_in_step(cfg)
    datasets = data.make_datasets(cfg)
    model = build_model(cfg, datasets.image_shape)
    batches = training.training_batches(model, datasets, cfg)
    assert "indices" not in batches.element_spec and getattr(model, "batch_from_indices", None) is None


def test_index_batches_without_their_batch_maker_are_refused_by_name(mnist_dir):
    from tfvae import training

    cfg = _tutorial(data_dir=mnist_dir, validation_size=59000)
    datasets = data.make_datasets(cfg)
    model = build_model(cfg, datasets.image_shape)
    training.compile_model(model, cfg)
    with pytest.raises(ValueError, match=r"batches of indices .* fit on training\.training_batches"):
        model.fit(datasets.train_indices_from(first_step=0), epochs=1, verbose=0, shuffle=False)


def test_evaluation_means_are_per_example_whatever_the_batches():
    """A last, smaller batch counts by its examples: the means do not depend on the batch size (Keras' Mean with one
    scalar weight per call would count each batch as one value)."""
    model = build_model(config.RunConfig(model="mlp", hidden_sizes=(16,), latent_dim=3, likelihood="bernoulli"),
                        (28, 28, 1))
    model.compile(optimizer=keras.optimizers.Adam())
    x = tf.cast(tf.random.stateless_uniform([10, 784], [1, 2]) < 0.3, tf.float32)
    batch = {"input": x, "target": x, "label": tf.zeros([10], tf.int32)}
    # The KL does not depend on the noise: its per-example mean is exact.
    z_mean, z_logvar = model.encode(x)
    expected_kl = float(tf.reduce_mean(tf.reduce_sum(losses.kl_per_dimension(z_mean, z_logvar), -1)))
    for batch_size in (10, 4, 9):  # 10: one batch; 4: 4 + 4 + 2; 9: 9 + 1.
        results = model.evaluate(tf.data.Dataset.from_tensor_slices(batch).batch(batch_size), verbose=0,
                                 return_dict=True)
        assert results["kl"] == pytest.approx(expected_kl, rel=1e-5), batch_size
