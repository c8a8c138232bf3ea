"""The benchmark's PyTorch peer is the TF1 tutorial's network: the same loss from the same weights and noise, and
the same course under Adam. Needs PyTorch (not a tfvae dependency); skipped without it."""

import numpy as np
import pytest

import tf1_reference
from tfvae import data

torch_reference = pytest.importorskip(
    "torch_reference", reason="PyTorch is not installed (CPU build: pip install torch --index-url "
                              "https://download.pytorch.org/whl/cpu)", exc_type=ImportError)


@pytest.mark.parametrize("likelihood, hidden_sizes, batch_size", [("sse", (100,), 100), ("bernoulli", (400,), 128)],
                         ids=["tf1_tutorial", "mlp400"])
def test_pytorch_network_trains_as_the_tf1_graph(mnist_dir, likelihood, hidden_sizes, batch_size):
    steps = 20
    images, _ = data.load_idx_split(mnist_dir, "train")
    images = images[:steps * batch_size].reshape(steps, batch_size, -1).astype(np.float32) / 255
    rng = np.random.default_rng(0)
    eps = rng.standard_normal((steps, batch_size, 20)).astype(np.float32)
    initial = [rng.standard_normal(shape).astype(np.float32) * 0.05
               for shape in tf1_reference.variable_shapes(hidden_sizes, 20)]
    kwargs = dict(hidden_sizes=hidden_sizes, likelihood=likelihood)
    tf1_losses, _ = tf1_reference.train(initial, images, eps, **kwargs)
    torch_losses, _ = torch_reference.train(initial, images, eps, **kwargs)
    # The first loss is of the same weights: equal up to float32 rounding. After it, the two Adams differ only in
    # where epsilon enters, so the courses stay within 1e-4 of each other.
    assert torch_losses[0] == pytest.approx(tf1_losses[0], rel=1e-6)
    np.testing.assert_allclose(torch_losses, tf1_losses, rtol=1e-4)
    assert tf1_losses[-1] < 0.9 * tf1_losses[0]


def test_pytorch_reconstruction_is_the_tf1_graphs_x_hat_of_z_mean():
    import torch

    rng = np.random.default_rng(1)
    weights = [rng.standard_normal(shape).astype(np.float32) * 0.1 for shape in tf1_reference.variable_shapes()]
    x = rng.random((5, 784), dtype=np.float32)
    with torch.inference_mode():
        x_hat = torch_reference.TutorialNet(initial_weights=weights).reconstruct(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(x_hat, tf1_reference.run_outputs(weights, x)["x_hat"], atol=1e-6)


def test_pytorch_network_starts_from_the_tutorials_initialisation():
    net = torch_reference.TutorialNet(seed=3)
    weights = net.tf1_weights()
    assert [w.shape for w in weights] == tf1_reference.variable_shapes()
    kernels, biases = weights[::2], weights[1::2]
    # Truncated N(0, 0.1): nothing beyond two standard deviations, a spread a little under 0.1.
    assert all(np.abs(k).max() <= 0.2 and 0.08 < k.std() < 0.1 for k in kernels)
    assert all(not b.any() for b in biases)
    assert all(np.array_equal(a, b) for a, b in zip(weights, torch_reference.TutorialNet(seed=3).tf1_weights()))
    with pytest.raises(ValueError, match="initial_weights shapes"):
        torch_reference.TutorialNet(initial_weights=weights[:-1])
