"""The tutorial's network in PyTorch eager, trained as a PyTorch user trains it: the benchmark's second peer.

Not part of the package, nor one of its dependencies (on a CPU-only machine, PyTorch's CPU build:
`pip install torch --index-url https://download.pytorch.org/whl/cpu`). Tests import it as `torch_reference`, and
`scripts/bench_train.py` as it imports `tf1_reference`. Layer for layer it is the graph of tf1_reference.py, with
the same initialisation scheme and, given the same weights and noise, the same loss:

    h = relu(x W + b)
    z_mean, z_logvar = split(tanh(h W + b))        linear for likelihood="bernoulli"
    z = z_mean + exp(z_logvar / 2) * eps
    logits = relu(z W + b) W + b                   x_hat = sigmoid(logits)
    loss = mean(sum (x - x_hat)^2 + KL)            sum of binary cross-entropy on logits for "bernoulli"
    torch.optim.Adam(learning_rate, eps=epsilon)

The layers are `torch.nn.Linear`, whose weights are the transposes of TensorFlow's [fan_in, fan_out] kernels.
"""

import numpy as np
import torch
import torch.nn.functional as F

import tf1_reference


class TutorialNet(torch.nn.Module):
    """The tutorial's VAE (or pytorch/examples' with likelihood="bernoulli"); `forward` returns the batch's loss."""

    def __init__(self, initial_weights=None, hidden_sizes=(100,), latent_dim=20, likelihood="sse", seed=0):
        """`initial_weights`: arrays in `tf1_reference.variable_shapes()` order, or None for the tutorial's
        truncated N(0, 0.1) kernels and zero biases, seeded with `seed`."""
        super().__init__()
        shapes = tf1_reference.variable_shapes(hidden_sizes, latent_dim)
        kernels = [fan for fan, _ in zip(shapes[::2], shapes[1::2])]
        layers = [torch.nn.Linear(fan_in, fan_out) for fan_in, fan_out in kernels]
        self.encoder = torch.nn.ModuleList(layers[:len(hidden_sizes) + 1])
        self.decoder = torch.nn.ModuleList(layers[len(hidden_sizes) + 1:])
        self.latent_dim, self.tutorial = latent_dim, likelihood == "sse"
        with torch.no_grad():
            if initial_weights is None:
                generator = torch.Generator().manual_seed(seed)
                for layer in layers:
                    torch.nn.init.trunc_normal_(layer.weight, std=0.1, a=-0.2, b=0.2, generator=generator)
                    layer.bias.zero_()
            else:
                found = [tuple(np.shape(w)) for w in initial_weights]
                if found != shapes:
                    raise ValueError(f"initial_weights shapes {found} != tutorial shapes {shapes}")
                for layer, kernel, bias in zip(layers, initial_weights[::2], initial_weights[1::2]):
                    layer.weight.copy_(torch.from_numpy(np.asarray(kernel, np.float32).T))
                    layer.bias.copy_(torch.from_numpy(np.asarray(bias, np.float32)))

    @staticmethod
    def _mlp(h, layers):
        for layer in layers[:-1]:
            h = F.relu(layer(h))
        return layers[-1](h)

    def encode(self, x):
        """(z_mean, z_logvar) of a batch of flat images."""
        params = self._mlp(x, self.encoder)
        return torch.split(torch.tanh(params) if self.tutorial else params, self.latent_dim, dim=1)

    def reconstruct(self, x):
        """x_hat of z_mean: the deterministic reconstruction, as the TF1 graph's `x_hat_mean` and tfvae's
        `reconstruct` signature compute it."""
        return torch.sigmoid(self._mlp(self.encode(x)[0], self.decoder))

    def forward(self, x, eps=None):
        z_mean, z_logvar = self.encode(x)
        if eps is None:
            eps = torch.randn_like(z_mean)
        logits = self._mlp(z_mean + torch.exp(0.5 * z_logvar) * eps, self.decoder)
        if self.tutorial:
            reconstruction = torch.sum(torch.square(x - torch.sigmoid(logits)), dim=1)
        else:
            reconstruction = torch.sum(F.binary_cross_entropy_with_logits(logits, x, reduction="none"), dim=1)
        kl = 0.5 * torch.sum(torch.square(z_mean) + torch.exp(z_logvar) - z_logvar - 1.0, dim=1)
        return torch.mean(reconstruction + kl)

    def tf1_weights(self):
        """The weights in `tf1_reference.variable_shapes()` order and layout."""
        return [w for layer in [*self.encoder, *self.decoder]
                for w in (layer.weight.detach().numpy().T, layer.bias.detach().numpy())]


def train(initial_weights, batches, eps=None, learning_rate=1e-3, epsilon=1e-8, **net_kwargs):
    """Adam steps of the network, one per batch, as `tf1_reference.train` runs the graph.

    Returns:
      (losses float64 `[steps]`, each the loss of the batch before its update; final weights as arrays in
      `tf1_reference.variable_shapes()` order).
    """
    net = TutorialNet(initial_weights, **net_kwargs)
    optimizer = torch.optim.Adam(net.parameters(), lr=learning_rate, eps=epsilon)
    losses = []
    for step, batch in enumerate(batches):
        loss = net(torch.from_numpy(batch), None if eps is None else torch.from_numpy(eps[step]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return np.array(losses, np.float64), net.tf1_weights()
