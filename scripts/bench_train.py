"""Training speed of tfvae beside a TF1 feed_dict graph of the same network, the same network in PyTorch eager (when
torch is installed), the matmul-only ceiling of its layer shapes and the bound of those matmuls plus Adam (on whole
batches, and split into micro-batches as tfvae splits them), measured in one run; writes JSON.

    python scripts/bench_train.py --preset=tf1_tutorial --epochs=5 --data_dir=PATH/MNIST_data --output=bench.json
    python scripts/bench_train.py --preset=mlp400 --epochs=5 --data_dir=PATH/MNIST_data
"""

import dataclasses
import os
import platform
import resource
import sys
import time

import numpy as np
from absl import flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from tfvae import artifacts, cli, config, profiling  # noqa: E402

PRESETS = {
    # The TF1 tutorial: 784-100-(2x20, tanh) / 20-100-784, squared error, batch 100.
    "tf1_tutorial": config.RunConfig(model="tf1_tutorial", hidden_sizes=(100,), latent_dim=20, likelihood="sse",
                                     batch_size=100, adam="tf1", steps_per_execution=550, jit_compile=False,
                                     intra_op_threads=1, micro_batches=2),
    # pytorch/examples' VAE: 784-400-(2x20) / 20-400-784, Bernoulli on logits, batch 128.
    # No XLA: 6 epochs each interleaved in one process gave equal steady speed (8,540 vs 8,487 examples/s, load
    # ~3-4.7 on 2 cores), and compiling the 429-step loop adds 4-10 s to the first epoch.
    # Two halves of each batch side by side, one thread per op: 1.44x the TF1 graph, against 1.09x for whole
    # batches with ops split over both cores, in runs a minute apart.
    "mlp400": config.RunConfig(model="mlp", hidden_sizes=(400,), latent_dim=20, likelihood="bernoulli",
                               batch_size=128, adam="tf1", steps_per_execution=429, jit_compile=False,
                               intra_op_threads=1, micro_batches=2),
}

flags.DEFINE_enum("preset", "tf1_tutorial", sorted(PRESETS), "Network to measure.")
flags.DEFINE_integer("epochs", 5, "Epochs per contender; steady state is the median of epochs 2..N.",
                     lower_bound=2)
config.define_path_flag("data_dir", "", "MNIST_data/ IDX folder (or TFDS data dir).")
config.require_existing_folder("data_dir", config.DATA_DIR_HINT)
config.define_output_file_flag("", "JSON file to write (stdout too).", ".json")
flags.DEFINE_bool("jit_compile", None, "Override the preset's XLA choice.")
flags.DEFINE_integer("steps_per_execution", None, "Override the preset's steps per execution.")
flags.DEFINE_integer("micro_batches", None, "Override the preset's micro-batches per train batch.", lower_bound=1)
flags.register_multi_flags_validator(
    ["preset", "micro_batches"],
    lambda f: not f["micro_batches"] or PRESETS[f["preset"]].batch_size % f["micro_batches"] == 0,
    message="--micro_batches must divide the preset's batch size (" +
            ", ".join(f"{name}: {cfg.batch_size}" for name, cfg in sorted(PRESETS.items())) + ")")
flags.DEFINE_enum("mixed_precision", "none", config.MIXED_PRECISION, "tfvae's precision policy (the TF1 graph and "
                  "the ceiling stay float32): mixed_bfloat16 on CPUs with AMX or AVX-512 BF16, mixed_float16 on GPUs.")
flags.DEFINE_bool("profile", False, "Also run one more epoch of each contender under TensorFlow's profiler and report "
                  "milliseconds per step inside kernels by kind (matmul, optimizer, other, input pipeline).")
flags.DEFINE_integer("intra_op_threads", None, "Override the preset's intra-op pool size for tfvae "
                     "(0: one thread per core).", lower_bound=0)
flags.DEFINE_integer("inter_op_threads", None,
                     "Override the preset's inter-op pool size for tfvae, the ceiling and the bound.", lower_bound=0)
flags.DEFINE_list("tf1_intra_op_threads", ["1", "0"], "Intra-op pool sizes the TF1 graph, the matmul ceiling and "
                  "the bound run with, each its own contender (0: one thread per core); the fastest of each is the "
                  "one compared.")
flags.DEFINE_list("tf1_inter_op_threads", ["1", "0"], "Inter-op pool sizes the TF1 graph runs with, for each of "
                  "its intra-op sizes (0: one thread per core, TensorFlow's default, as the tutorial's Session had).")
for _name in ("tf1_intra_op_threads", "tf1_inter_op_threads"):
    flags.register_validator(_name, lambda sizes: bool(sizes) and all(s.strip().isdigit() for s in sizes),
                             message=f"--{_name} must be a comma-separated list of integers >= 0, e.g. 1,0")
flags.DEFINE_bool("pytorch", None, "Also train the network in PyTorch eager (tests/torch_reference.py), once per "
                  "pool size of --tf1_intra_op_threads; default: when torch is installed.")
flags.DEFINE_integer("validation_size", 5000, "Training images held out (5,000 as TF1's MNIST_data reader; more "
                     "makes epochs shorter, for a quick check).", lower_bound=0, upper_bound=59000)
FLAGS = flags.FLAGS


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn):
    """Runs `fn()`; returns (wall seconds, process CPU seconds of all threads, fn's result)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - start, time.process_time() - cpu_start, result


class TfvaeContender:
    """tfvae's training path: make_datasets, build_model, compile_model as train.py, one `fit` epoch per call."""

    def __init__(self, cfg):
        from tfvae import data, training
        from tfvae.models import build_model

        self.datasets = data.make_datasets(cfg)
        self.model = build_model(cfg, self.datasets.image_shape)
        training.compile_model(self.model, cfg)
        self.train_batches = training.training_batches(self.model, self.datasets, cfg)  # As train.py fits.
        self.examples = (len(self.datasets.arrays.train_images) // cfg.batch_size) * cfg.batch_size
        self.epoch = 0

    def run_epoch(self):
        self.datasets.train_epoch.assign(self.epoch)  # Each epoch its own shuffle, as in training.train.
        self.epoch += 1
        return self.model.fit(self.train_batches, epochs=1, verbose=0, shuffle=False).history["loss"][-1]

    def validation_loss(self):
        return self.model.evaluate(self.datasets.validation, verbose=0, return_dict=True)["loss"]


class TF1Contender:
    """The same network as a tf.compat.v1 graph (tests/tf1_reference.py), fed batch by batch with feed_dict."""

    def __init__(self, cfg, images, validation, intra_op_threads, inter_op_threads=1):
        """`images`, `validation`: float32 `[n, 784]` in [0, 1], as the TF1 tutorial's reader gives them."""
        import tensorflow as tf
        import tf1_reference

        self.images, self.validation = images, validation
        self.graph = tf1_reference.build_graph(hidden_sizes=cfg.hidden_sizes, latent_dim=cfg.latent_dim,
                                               likelihood=cfg.likelihood, seed=cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.batch_size = cfg.batch_size
        self.steps = len(self.images) // cfg.batch_size
        self.examples = self.steps * cfg.batch_size
        # Ops split over `intra_op_threads`, independent ones (a layer's two gradient products) side by side on
        # `inter_op_threads`: both pools its own (see main()).
        self.sess = tf.compat.v1.Session(graph=self.graph.graph, config=tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=intra_op_threads, inter_op_parallelism_threads=inter_op_threads,
            use_per_session_threads=True))
        self.sess.run(self.graph.init_op)

    def run_epoch(self):
        g, order, total = self.graph, self.rng.permutation(len(self.images)), 0.0
        for step in range(self.steps):
            batch = self.images[order[step * self.batch_size:(step + 1) * self.batch_size]]
            _, loss = self.sess.run([g.train_op, g.loss], {g.input: batch})
            total += loss
        return total / self.steps

    def validation_loss(self):
        return float(np.mean([self.sess.run(self.graph.loss, {self.graph.input: self.validation[i:i + 1000]})
                              for i in range(0, len(self.validation), 1000)]))


class PyTorchContender:
    """The same network in PyTorch eager (tests/torch_reference.py) as a tuned PyTorch loop trains it: the images
    in one float32 tensor, each batch indexed from it, a step of forward, backward and Adam, the loss read back."""

    def __init__(self, cfg, images, validation, threads):
        import torch
        import torch_reference

        self.torch, self.threads = torch, threads
        self.images, self.validation = torch.from_numpy(images), torch.from_numpy(validation)
        torch.manual_seed(cfg.seed)
        self.net = torch_reference.TutorialNet(hidden_sizes=cfg.hidden_sizes, latent_dim=cfg.latent_dim,
                                               likelihood=cfg.likelihood, seed=cfg.seed)
        # Fused: the fastest of PyTorch's three Adam implementations on CPU here (docs/performance.md).
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.learning_rate, eps=cfg.adam_epsilon,
                                          fused=True)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.batch_size = cfg.batch_size
        self.steps = len(images) // cfg.batch_size
        self.examples = self.steps * cfg.batch_size

    def run_epoch(self):
        self.torch.set_num_threads(self.threads)  # PyTorch's intra-op pool is one per process.
        order, total = self.torch.randperm(len(self.images), generator=self.generator), 0.0
        for step in range(self.steps):
            loss = self.net(self.images[order[step * self.batch_size:(step + 1) * self.batch_size]])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            total += loss.item()
        return total / self.steps

    def validation_loss(self):
        self.torch.set_num_threads(self.threads)
        with self.torch.no_grad():
            return float(np.mean([self.net(self.validation[i:i + 1000]).item()
                                  for i in range(0, len(self.validation), 1000)]))


def _torch_version():
    """PyTorch's version, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


class MatmulCeiling:
    """Only the matmuls of a training step of the MLP, an epoch's worth of steps per call, in a TF1 Session with
    its own pools (as TF1Contender), so that each pool size gets its own ceiling.

    Per layer [batch, fan_in] x [fan_in, fan_out]: the forward product, the kernel gradient, and the input
    gradient (except for the first layer, whose input needs none); z is the first latent_dim columns of the
    encoder output, as z_mean. The ceiling for any implementation built on TensorFlow's matmul at these shapes.

    With `adam`, the bound for any such implementation that also trains its weights with Adam: the kernels are
    variables, each step reads them after the last step's update, and TensorFlow's Adam kernel (the one tfvae's
    and TF1's Adam run) updates each from its product; nothing else (no biases, activations, loss or sampling).
    With `micro_batches` > 1, the same in tfvae's micro-batch structure: each part of the batch is a chain of its
    own products (whose kernel gradients the bound sums over the parts before each update).
    """

    def __init__(self, cfg, steps, intra_op_threads, adam=False, micro_batches=1):
        import tensorflow as tf

        self.steps = steps
        encoder = [784, *cfg.hidden_sizes, 2 * cfg.latent_dim]
        decoder = [cfg.latent_dim, *reversed(cfg.hidden_sizes), 784]
        rng = np.random.default_rng(cfg.seed)
        graph = tf.Graph()
        with graph.as_default():
            initial = [[rng.standard_normal((a, b), dtype=np.float32) * 0.05 for a, b in zip(w[:-1], w[1:])]
                       for w in (encoder, decoder)]
            x = tf.constant(rng.random((cfg.batch_size, 784), dtype=np.float32))
            if adam:
                variables = [[tf.Variable(k) for k in layers] for layers in initial]
                all_variables = [kernel for layers in variables for kernel in layers]
                slots = [(tf.Variable(tf.zeros_like(kernel)), tf.Variable(tf.zeros_like(kernel)))
                         for kernel in all_variables]
            else:
                constants = [[tf.constant(k) for k in layers] for layers in initial]

            def step(i, total):
                if adam:
                    # After the last step's update: the loop counter that reaches this step waited for it.
                    with tf.control_dependencies([i]):
                        kernels = [[v.read_value() for v in layers] for layers in variables]
                else:
                    kernels = constants
                parts = [_kernel_grads(part, kernels, cfg.latent_dim) for part in tf.split(x, micro_batches)]
                if not adam:
                    # Each step's products feed the carried sum, so none is pruned; one element each keeps it free.
                    return i + 1, total + tf.add_n([g[0, 0] for grads in parts for g in grads])
                grads = [tf.add_n(list(per_part)) for per_part in zip(*parts)]  # One part: the gradient itself.
                # A tiny learning rate keeps the weights, and so the products' numbers, near their start; Adam's
                # cost does not depend on it.
                updates = [tf.raw_ops.ResourceApplyAdam(
                    var=kernel.handle, m=m.handle, v=v.handle, beta1_power=0.9, beta2_power=0.999, lr=1e-7,
                    beta1=0.9, beta2=0.999, epsilon=1e-8, grad=grad)
                    for kernel, (m, v), grad in zip(all_variables, slots, grads)]
                with tf.control_dependencies(updates):
                    return i + 1, total + 1.0

            self.step_count = tf.compat.v1.placeholder(tf.int32, [])
            # One step after another, as in training, where each step needs the weights the last one wrote. With
            # the default 10 parallel iterations the loop overlapped independent steps: 20-35% faster on 2 cores.
            _, self.total = tf.while_loop(lambda i, _: i < self.step_count, step, (0, 0.0), parallel_iterations=1)
            initializer = tf.compat.v1.global_variables_initializer()
        self.sess = tf.compat.v1.Session(graph=graph, config=tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=intra_op_threads, inter_op_parallelism_threads=cfg.inter_op_threads,
            use_per_session_threads=True))
        self.sess.run(initializer)
        self.sess.run(self.total, {self.step_count: 2})  # Warm up.

    def run_epoch(self):
        return float(self.sess.run(self.total, {self.step_count: self.steps}))


def _kernel_grads(x, kernels, latent_dim):
    """The step's products for the batch `x`; returns its kernel gradients, encoder's first layer first."""
    import tensorflow as tf

    params, encoder_inputs = _forward(x, kernels[0])
    logits, decoder_inputs = _forward(params[:, :latent_dim], kernels[1])
    grad_z, decoder_grads = _backward(logits, kernels[1], decoder_inputs, True)
    _, encoder_grads = _backward(tf.concat([grad_z, grad_z], axis=1), kernels[0], encoder_inputs, False)
    return [*reversed(encoder_grads), *reversed(decoder_grads)]


def _forward(h, layer_kernels):
    import tensorflow as tf

    inputs = []
    for kernel in layer_kernels:
        inputs.append(h)
        h = tf.matmul(h, kernel)
    return h, inputs


def _backward(grad, layer_kernels, inputs, input_grad_of_first):
    import tensorflow as tf

    kernel_grads = []
    for i in reversed(range(len(layer_kernels))):
        kernel_grads.append(tf.matmul(inputs[i], grad, transpose_a=True))
        if i or input_grad_of_first:
            grad = tf.matmul(grad, layer_kernels[i], transpose_b=True)
    return grad, kernel_grads


def _summary(seconds, cpu_seconds, examples, losses=None, validation_loss=None):
    summary = {
        "examples_per_second": float(np.median([examples / s for s in seconds[1:]])),
        "first_epoch_seconds": seconds[0],
        # What the first epoch costs beyond a steady one: tracing, graph optimisation, first iterator.
        "first_epoch_overhead_seconds": seconds[0] - float(np.median(seconds[1:])),
        "epoch_seconds": seconds,
        # Process CPU time (all threads): less sensitive than wall time to other processes on a shared machine.
        "epoch_cpu_seconds": cpu_seconds,
    }
    if losses is not None:
        summary.update(final_train_loss=float(losses[-1]), final_validation_loss=float(validation_loss))
    return summary


def _per_round(times, examples, numerator, denominator):
    """Rate ratios of two contenders round by round (rounds 2..N): each pair of epochs ran back to back, so a
    drift in the machine's speed that moves a whole round cancels out, unlike in a ratio of the two medians."""
    return [(examples[numerator] / a) / (examples[denominator] / b)
            for a, b in zip(times[numerator][0][1:], times[denominator][0][1:])]


def _kernel_profile(contenders, steps):
    """One more epoch of each contender under the profiler: kernel milliseconds per step by kind."""
    profile = {"measure": "durations of kernel events summed over threads, per step (tf.data's threads apart); "
                          "kernels running side by side on few cores each count their whole duration, waits for a "
                          "core included"}
    for name, run_epoch in contenders.items():
        wall, seconds = profiling.profile_kernel_seconds(run_epoch)
        kernels = seconds["matmul"] + seconds["optimizer"] + seconds["other_kernels"]
        profile[name] = {
            "wall_ms_per_step": 1e3 * wall / steps,
            **{f"{kind}_ms_per_step": 1e3 * seconds[kind] / steps
               for kind in ("matmul", "optimizer", "other_kernels", "input_pipeline")},
            "other_kernels_top_ms_per_step": {k: 1e3 * v / steps for k, v in seconds["other_kernels_top"].items()},
            # Even if nothing but kernels took time, the step could run at most this fraction of its matmuls' speed.
            "matmul_share_of_kernel_time": seconds["matmul"] / kernels if kernels else 0.0,
        }
    return profile


def _pool_sizes(flag_values):
    """Sorted distinct pool sizes from a flag's list, 0 meaning one thread per core."""
    return sorted({int(size) or os.cpu_count() for size in flag_values})


def _pool_name(contender, pools):
    """`pools`: the intra-op pool size, or (intra-op, inter-op) pool sizes."""
    intra_op, inter_op = pools if isinstance(pools, tuple) else (pools, None)
    return f"{contender}_intra_op_{intra_op}" + (f"_inter_op_{inter_op}" if inter_op else "")


def _best_pool(results, contender, pool_choices):
    """The pools with which `contender` ran fastest, and its results under `contender`'s own name."""
    pools = max(pool_choices, key=lambda choice: results[_pool_name(contender, choice)]["examples_per_second"])
    intra_op, inter_op = pools if isinstance(pools, tuple) else (pools, None)
    return pools, {**results[_pool_name(contender, pools)], "intra_op_threads": intra_op,
                   **({"inter_op_threads": inter_op} if inter_op else {})}


def main(argv):
    del argv
    pool_sizes = _pool_sizes(FLAGS.tf1_intra_op_threads)
    tf1_pools = [(intra_op, inter_op)
                 for intra_op in pool_sizes for inter_op in _pool_sizes(FLAGS.tf1_inter_op_threads)]
    # Each TF1 session gets the intra-op pool its config asks for. Without this, TensorFlow shares one pool among
    # all CPU devices of the process, sized by the first one made (tfvae's), and a session's own setting is moot.
    # The sessions also ask for inter-op pools of their own (`use_per_session_threads`): without it, a later
    # session with the same intra-op size ran on the first one's inter-op pool (one thread for the TF1 graph's),
    # which serialised the micro-batch bound's two chains.
    os.environ["TF_OVERRIDE_GLOBAL_THREADPOOL"] = "1"
    torch_version = _torch_version()
    if FLAGS.pytorch and not torch_version:
        print("error: --pytorch needs PyTorch, which is not installed; install it (CPU build: pip install torch "
              "--index-url https://download.pytorch.org/whl/cpu) or pass --nopytorch", file=sys.stderr)
        sys.exit(1)
    with_pytorch = FLAGS.pytorch is not False and torch_version is not None
    import tensorflow as tf
    from tfvae import data, training

    overrides = {name: FLAGS[name].value for name in ("jit_compile", "steps_per_execution", "micro_batches",
                                                      "intra_op_threads", "inter_op_threads")
                 if FLAGS[name].value is not None}
    cfg = dataclasses.replace(PRESETS[FLAGS.preset], data_dir=FLAGS.data_dir, validation_size=FLAGS.validation_size,
                              mixed_precision=FLAGS.mixed_precision, **overrides)
    # As train.py does it: thread pools first, then the precision policy, before the model is built.
    training.set_thread_pools(cfg)
    training.set_precision_policy(cfg)
    try:
        tfvae = TfvaeContender(cfg)
    except data.DataError as e:  # Missing, truncated or malformed data files: one line, as train.py says it.
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    arrays = tfvae.datasets.arrays
    images = arrays.train_images.reshape(len(arrays.train_images), -1).astype(np.float32) / 255
    validation = arrays.validation_images.reshape(-1, images.shape[1]).astype(np.float32) / 255
    tf1_by_pools = {pools: TF1Contender(cfg, images, validation, *pools) for pools in tf1_pools}
    tf1 = next(iter(tf1_by_pools.values()))
    pytorch_by_threads = {threads: PyTorchContender(cfg, images, validation, threads)
                          for threads in pool_sizes} if with_pytorch else {}
    # The ceiling and the bound of products plus Adam, on whole batches and, when tfvae splits its batches, in its
    # micro-batch structure (name -> (adam, parts)); each once per pool size in its own Session, so an override of
    # tfvae's pools cannot lower them.
    limit_kinds = {"matmul_ceiling": (False, 1), "matmul_adam_bound": (True, 1)}
    if cfg.micro_batches > 1:
        limit_kinds.update(matmul_ceiling_micro_batches=(False, cfg.micro_batches),
                           matmul_adam_bound_micro_batches=(True, cfg.micro_batches))
    limits = {kind: {threads: MatmulCeiling(cfg, tf1.steps, threads, adam=adam, micro_batches=parts)
                     for threads in pool_sizes}
              for kind, (adam, parts) in limit_kinds.items()}
    contenders = {"tfvae": tfvae.run_epoch,
                  **{_pool_name("tf1_feed_dict", pools): c.run_epoch for pools, c in tf1_by_pools.items()},
                  **{_pool_name("pytorch_eager", threads): c.run_epoch for threads, c in pytorch_by_threads.items()},
                  **{_pool_name(kind, threads): c.run_epoch
                     for kind, by_threads in limits.items() for threads, c in by_threads.items()}}
    # Epochs alternate between contenders, in a rotating order, so drifting load from other processes hits all
    # of them alike; the ceilings and bounds run one epoch's worth of steps per round.
    times = {name: ([], [], []) for name in contenders}
    names = list(contenders)
    for epoch in range(FLAGS.epochs):
        for name in names[epoch % len(names):] + names[:epoch % len(names)]:
            for values, value in zip(times[name], _timed(contenders[name])):
                values.append(value)
    results = {"tfvae": _summary(*times["tfvae"][:2], tfvae.examples, times["tfvae"][2], tfvae.validation_loss())}
    for pools, contender in tf1_by_pools.items():
        name = _pool_name("tf1_feed_dict", pools)
        results[name] = _summary(*times[name][:2], contender.examples, times[name][2], contender.validation_loss())
    for threads, contender in pytorch_by_threads.items():
        name = _pool_name("pytorch_eager", threads)
        results[name] = _summary(*times[name][:2], contender.examples, times[name][2], contender.validation_loss())
    for threads in pool_sizes:
        for contender, (_, parts) in limit_kinds.items():
            name = _pool_name(contender, threads)
            results[name] = {**_summary(*times[name][:2], tf1.examples),
                             "matmuls_per_step": parts * (3 * (2 * len(cfg.hidden_sizes) + 2) - 1)}
    # The baseline is the TF1 graph with its fastest pools on this machine, and each ceiling and bound its fastest.
    baseline_pools, results["tf1_feed_dict"] = _best_pool(results, "tf1_feed_dict", tf1_pools)
    limit_threads = {}
    for kind in limits:
        limit_threads[kind], results[kind] = _best_pool(results, kind, pool_sizes)
        times[kind] = times[_pool_name(kind, limit_threads[kind])]
    times["tf1_feed_dict"] = times[_pool_name("tf1_feed_dict", baseline_pools)]
    examples = {"tfvae": tfvae.examples, "tf1_feed_dict": tf1.examples, **{kind: tf1.examples for kind in limits}}
    pytorch = {}  # PyTorch's fastest thread count, as the TF1 graph's fastest pools.
    if pytorch_by_threads:
        pytorch_threads, results["pytorch_eager"] = _best_pool(results, "pytorch_eager", pool_sizes)
        times["pytorch_eager"] = times[_pool_name("pytorch_eager", pytorch_threads)]
        examples["pytorch_eager"] = tf1.examples
        speedup_vs_pytorch_per_round = _per_round(times, examples, "tfvae", "pytorch_eager")
        pytorch = {"speedup_vs_pytorch": results["tfvae"]["examples_per_second"] /
                   results["pytorch_eager"]["examples_per_second"],
                   "speedup_vs_pytorch_per_round": speedup_vs_pytorch_per_round,
                   "speedup_vs_pytorch_median_of_rounds": float(np.median(speedup_vs_pytorch_per_round))}
    else:
        results["pytorch_eager"] = {"skipped": "--nopytorch" if FLAGS.pytorch is False else "torch is not installed"}
    rate = {name: result["examples_per_second"] for name, result in results.items() if "examples_per_second" in result}
    speedup_per_round = _per_round(times, examples, "tfvae", "tf1_feed_dict")
    ceiling_fraction_per_round = _per_round(times, examples, "tfvae", "matmul_ceiling")
    result = {
        "preset": FLAGS.preset,
        "epochs": FLAGS.epochs,
        "config": {k: v for k, v in dataclasses.asdict(cfg).items()
                   if k in ("hidden_sizes", "latent_dim", "likelihood", "batch_size", "jit_compile",
                            "steps_per_execution", "micro_batches", "adam", "data_threads", "validation_size",
                            "mixed_precision", "intra_op_threads", "inter_op_threads")},
        **results,
        "tfvae_compute_dtype": tfvae.model.compute_dtype,  # What the layers ran in, as the policy made them.
        "speedup_vs_tf1": rate["tfvae"] / rate["tf1_feed_dict"],
        "tfvae_fraction_of_matmul_ceiling": rate["tfvae"] / rate["matmul_ceiling"],
        "tf1_fraction_of_matmul_ceiling": rate["tf1_feed_dict"] / rate["matmul_ceiling"],
        # The other limits against the whole-batch ceiling (for the bounds: how much of it is left to anything that
        # also runs Adam), and how much of each tfvae reaches.
        **{key: value for kind in limits if kind != "matmul_ceiling" for key, value in (
            (f"{kind}_fraction_of_matmul_ceiling", rate[kind] / rate["matmul_ceiling"]),
            (f"tfvae_fraction_of_{kind}", rate["tfvae"] / rate[kind]),
            (f"tfvae_fraction_of_{kind}_median_of_rounds",
             float(np.median(_per_round(times, examples, "tfvae", kind)))))},
        # The same ratios round by round, and their medians: less sensitive to the machine's drift.
        "speedup_vs_tf1_per_round": speedup_per_round,
        "speedup_vs_tf1_median_of_rounds": float(np.median(speedup_per_round)),
        **pytorch,
        "tfvae_fraction_of_matmul_ceiling_per_round": ceiling_fraction_per_round,
        "tfvae_fraction_of_matmul_ceiling_median_of_rounds": float(np.median(ceiling_fraction_per_round)),
        "order": "each epoch runs every contender once, starting one later each epoch",
        "peak_rss_mb": _peak_rss_mb(),  # Of the process: all contenders' data and graphs.
        "versions": {"tensorflow": tf.__version__, "python": platform.python_version(),
                     **({"torch": torch_version} if torch_version else {})},
        "memory_allocator": profiling.memory_allocator(),  # A preloaded jemalloc moved every contender here.
        "threads": {"cpus": os.cpu_count(), "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                    "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                    "tf1_session": f"intra_op {pool_sizes} x inter_op {sorted({p[1] for p in tf1_pools})} (one "
                                   "session each, with its own pools)",
                    **({"pytorch": f"torch.set_num_threads {pool_sizes} (one contender each)"}
                       if pytorch_by_threads else {}),
                    "matmul_ceiling_session": f"intra_op {pool_sizes} (one session each), inter_op "
                                              f"{cfg.inter_op_threads or 'one per core'}; the same for the other "
                                              "ceiling and the bounds",
                    "load_average_1min": os.getloadavg()[0]},
    }
    if FLAGS.profile:
        result["kernel_profile"] = _kernel_profile(
            {"tfvae": tfvae.run_epoch, "tf1_feed_dict": tf1_by_pools[baseline_pools].run_epoch,
             **{kind: limits[kind][limit_threads[kind]].run_epoch for kind in limits}}, steps=tf1.steps)
    artifacts.print_json(result, FLAGS.output)


if __name__ == "__main__":
    cli.run_main(main)
