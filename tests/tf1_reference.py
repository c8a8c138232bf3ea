"""The TF1 MNIST VAE tutorial rebuilt in `tf.compat.v1` graph mode: the yardstick tfvae is measured against.

Not part of the package. Tests import it as `tf1_reference` (pytest puts tests/ on sys.path); scripts add tests/
to sys.path the same way. The graph is the tutorial's, variable for variable:

    x = placeholder("input", [None, 784])
    h = relu(x W + b)                          Variable   [784, 100]  Variable_1 [100]
    z_mean, z_logvar = split(tanh(h W + b))    Variable_2 [100, 40]   Variable_3 [40]
    z = z_mean + exp(z_logvar / 2) * eps       eps ~ N(0, I) unless fed
    h = relu(z W + b)                          Variable_4 [20, 100]   Variable_5 [100]
    x_hat = sigmoid(h W + b)                   Variable_6 [100, 784]  Variable_7 [784]
    loss = mean(sum (x - x_hat)^2 + 0.5 sum (z_mean^2 + e^z_logvar - z_logvar - 1))
    train_op = AdamOptimizer(1e-3).minimize(loss); saver = Saver()

With `hidden_sizes` of more layers the variables continue in the same order (encoder hidden layers, the latent
layer, decoder hidden layers reversed, the output layer), as tfvae's default TF1 variable map expects.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1


@dataclasses.dataclass
class TutorialGraph:
    """The tensors and ops of one tutorial graph; run them in `tf.compat.v1.Session(graph=graph)`."""

    graph: tf.Graph
    input: tf.Tensor           # placeholder "input" [None, 784]
    eps: tf.Tensor             # placeholder_with_default "eps" [None, latent_dim]; N(0, I) when not fed
    z_mean: tf.Tensor
    z_logvar: tf.Tensor
    x_hat: tf.Tensor           # sigmoid of the decoded sample z (the tutorial's training output)
    x_hat_mean: tf.Tensor      # sigmoid of the decoded z_mean (deterministic reconstruction)
    loss: tf.Tensor            # scalar, mean over the batch of SSE + KL
    train_op: tf.Operation
    variables: list            # Variable ... Variable_7, tutorial order
    init_op: tf.Operation
    saver: v1.train.Saver


def variable_shapes(hidden_sizes=(100,), latent_dim=20, num_pixels=784):
    """The shapes of `Variable`, `Variable_1`, ... in creation order."""
    widths_in = [num_pixels, *hidden_sizes]
    widths_out = [*hidden_sizes, 2 * latent_dim]
    decoder_in = [latent_dim, *reversed(hidden_sizes)]
    decoder_out = [*reversed(hidden_sizes), num_pixels]
    shapes = []
    for fan_in, fan_out in [*zip(widths_in, widths_out), *zip(decoder_in, decoder_out)]:
        shapes += [(fan_in, fan_out), (fan_out,)]
    return shapes


def build_graph(initial_weights=None, hidden_sizes=(100,), latent_dim=20, learning_rate=1e-3, epsilon=1e-8,
                seed=0, likelihood="sse"):
    """Builds the tutorial graph in a new tf.Graph.

    Args:
      initial_weights: optional list of numpy arrays in `variable_shapes()` order; default: the tutorial's
        truncated N(0, 0.1) kernels and zero biases, seeded with `seed`.
      hidden_sizes, latent_dim: the MLP's widths (tutorial: (100,), 20).
      learning_rate, epsilon: of `tf.compat.v1.train.AdamOptimizer` (tutorial: 1e-3 and its default 1e-8).
      seed: graph-level seed (initialisation and the unfed eps).
      likelihood: "sse" (the tutorial: tanh latent layer, squared error of the sigmoid output) or "bernoulli"
        (pytorch/examples' VAE: linear latent layer, summed binary cross-entropy on logits), for benchmarks.

    Returns:
      A TutorialGraph.
    """
    shapes = variable_shapes(hidden_sizes, latent_dim)
    if initial_weights is not None:
        found = [tuple(np.shape(w)) for w in initial_weights]
        if found != shapes:
            raise ValueError(f"initial_weights shapes {found} != tutorial shapes {shapes}")
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(seed)
        variables = []
        for i, shape in enumerate(shapes):
            if initial_weights is not None:
                initial = np.asarray(initial_weights[i], np.float32)
            elif i % 2 == 0:
                initial = v1.truncated_normal(shape, stddev=0.1)
            else:
                initial = tf.zeros(shape)
            # Unnamed, as in the tutorial: TF1 names them Variable, Variable_1, ...
            variables.append(v1.Variable(initial))
        layers = [variables[i:i + 2] for i in range(0, len(variables), 2)]
        encoder_layers, decoder_layers = layers[:len(hidden_sizes) + 1], layers[len(hidden_sizes) + 1:]

        def mlp(h, layers, head_activation):
            for kernel, bias in layers[:-1]:
                h = tf.nn.relu(tf.nn.bias_add(tf.matmul(h, kernel), bias))
            kernel, bias = layers[-1]
            return head_activation(tf.nn.bias_add(tf.matmul(h, kernel), bias))

        x = v1.placeholder(tf.float32, [None, shapes[0][0]], name="input")
        tutorial = likelihood == "sse"
        z_mean, z_logvar = tf.split(mlp(x, encoder_layers, tf.nn.tanh if tutorial else tf.identity), 2, axis=1)
        z_mean = tf.identity(z_mean, name="z_mean")
        z_logvar = tf.identity(z_logvar, name="z_logvar")
        eps = v1.placeholder_with_default(v1.random_normal(tf.shape(z_mean)), [None, latent_dim], name="eps")
        z = z_mean + tf.exp(0.5 * z_logvar) * eps
        decoder = lambda z: mlp(z, decoder_layers, tf.nn.sigmoid)  # noqa: E731
        x_hat = tf.identity(decoder(z), name="x_hat")
        x_hat_mean = tf.identity(decoder(z_mean), name="x_hat_mean")
        if tutorial:
            reconstruction = tf.reduce_sum(tf.square(x - x_hat), axis=1)
        else:
            logits = mlp(z, decoder_layers, tf.identity)
            reconstruction = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits), axis=1)
        kl = 0.5 * tf.reduce_sum(tf.square(z_mean) + tf.exp(z_logvar) - z_logvar - 1.0, axis=1)
        loss = tf.reduce_mean(reconstruction + kl, name="loss")
        train_op = v1.train.AdamOptimizer(learning_rate, epsilon=epsilon).minimize(loss)
        init_op = v1.global_variables_initializer()
        saver = v1.train.Saver()
    return TutorialGraph(graph=graph, input=x, eps=eps, z_mean=z_mean, z_logvar=z_logvar, x_hat=x_hat,
                         x_hat_mean=x_hat_mean, loss=loss, train_op=train_op, variables=variables,
                         init_op=init_op, saver=saver)


def train(initial_weights, batches, eps=None, session_hook=None, **graph_kwargs):
    """Runs `len(batches)` Adam steps of the tutorial graph, as its `sess.run([train_op, loss])` loop.

    Args:
      initial_weights: list of arrays in `variable_shapes()` order, or None for the tutorial's initialisation.
      batches: sequence of float32 `[batch, 784]` arrays in [0, 1].
      eps: optional sequence (one per batch) of float32 `[batch, latent_dim]` noise fed to the `eps` placeholder.
      session_hook: optional `fn(graph, sess)` called after training (e.g. to save a checkpoint).
      **graph_kwargs: forwarded to `build_graph`.

    Returns:
      (losses float64 `[steps]`, each the loss of the batch before its update; final weights, list of arrays).
    """
    g = build_graph(initial_weights, **graph_kwargs)
    losses = []
    with v1.Session(graph=g.graph, config=_single_session_config()) as sess:
        sess.run(g.init_op)
        for step, batch in enumerate(batches):
            feed = {g.input: batch}
            if eps is not None:
                feed[g.eps] = eps[step]
            _, loss = sess.run([g.train_op, g.loss], feed)
            losses.append(loss)
        weights = sess.run(g.variables)
        if session_hook:
            session_hook(g, sess)
    return np.array(losses, np.float64), weights


def save_checkpoint(g, sess, prefix):
    """The tutorial's `saver.save(sess, prefix)`. Returns the checkpoint prefix."""
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    return g.saver.save(sess, prefix)


def save_saved_model(g, sess, export_dir):
    """A TF1 SavedModel of the graph (tag "serve", signature "serving_default": input -> x_hat, z_mean, z_logvar)."""
    builder = v1.saved_model.Builder(export_dir)
    signature = v1.saved_model.predict_signature_def(
        inputs={"input": g.input}, outputs={"x_hat": g.x_hat_mean, "z_mean": g.z_mean, "z_logvar": g.z_logvar})
    builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={"serving_default": signature},
                                         saver=g.saver)
    builder.save()
    return export_dir


def run_outputs(initial_weights, x, **graph_kwargs):
    """The deterministic outputs of the graph with `initial_weights` on x: dict of z_mean, z_logvar, x_hat."""
    g = build_graph(initial_weights, **graph_kwargs)
    with v1.Session(graph=g.graph, config=_single_session_config()) as sess:
        sess.run(g.init_op)
        z_mean, z_logvar, x_hat = sess.run([g.z_mean, g.z_logvar, g.x_hat_mean], {g.input: x})
    return {"z_mean": z_mean, "z_logvar": z_logvar, "x_hat": x_hat}


def _single_session_config():
    # Two shared cores: TF's default pools of one thread per core each oversubscribe them.
    return v1.ConfigProto(intra_op_parallelism_threads=2, inter_op_parallelism_threads=1)
