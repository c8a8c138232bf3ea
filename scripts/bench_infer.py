"""Inference speed of a SavedModel's `reconstruct` beside the TF1 tutorial graph's Session.run; writes JSON.

    python scripts/bench_infer.py --saved_model=saved_models/tf1_tutorial --output=bench_infer.json

The SavedModel path timed is the one tfvae's own tools and the README use:
`tf.saved_model.load(DIR).signatures["reconstruct"](input=tf.constant(x))["x_hat"].numpy()`. Timed beside it, for
comparison: the same signature run as one eager op (`inference.signature_as_one_op`, the README's server path, which
TensorFlow runs in the calling thread), the same signature inside a tf.function of one positional tensor, the
restored tf.function `loaded.reconstruct(x)`, the export's SignatureDef run by a TF1 Session (how TF Serving runs a
SavedModel), the layers of the signature call (its input tensor made beforehand; the runtime alone), the floor of
any signature call (a SavedModel signature that returns its input, and the runtime alone calling such a function),
the signature compiled with XLA (which drops its input checks), with the [lite] extra, the export converted to
LiteRT as `scripts/export_tflite.py` converts it, and, with `--pytorch`, the same network with the export's weights
in PyTorch eager (tests/torch_reference.py, under `torch.inference_mode`). Every runtime gets the same thread pools,
and the contenders take turns, so load from other processes hits them alike: batch-1 calls are timed twice,
alternating call by call, and in turns of `--calls_per_turn` calls in a row (warm, as in a server).
"""

import json
import os
import resource
import sys
import tempfile
import time

import numpy as np
from absl import flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from tfvae import cli, config  # noqa: E402

config.define_path_flag("saved_model", "saved_models/tf1_tutorial", "A tfvae export of the tutorial network.")
config.require_existing_folder("saved_model", "an export of --model=tf1_tutorial, e.g. saved_models/tf1_tutorial")


def _is_tutorial_export(path):
    # The TF1 graph timed beside it is the tutorial's; another network would be compared with something else.
    metadata_file = os.path.join(path or "", "tfvae.json")
    model = json.load(open(metadata_file)).get("model") if os.path.isfile(metadata_file) else None
    if not path or not os.path.isdir(path) or model == "tf1_tutorial":
        return True
    found = f"a {model} export" if model else "not a tfvae export (no tfvae.json)"
    raise flags.ValidationError(f"{found}; bench_infer.py times the TF1 tutorial network beside its TF1 graph, "
                                f"so pass an export of --model=tf1_tutorial, e.g. saved_models/tf1_tutorial")


flags.register_validator("saved_model", _is_tutorial_export)
flags.DEFINE_integer("calls", 2000, "Batch-1 calls timed per contender (after 200 warm-up calls).",
                     lower_bound=1000)
flags.DEFINE_integer("calls_per_turn", 20, "Batch-1 calls a contender makes in a row in the second measurement (the "
                     "first alternates call by call): each call then finds the caches as its own last call left them, "
                     "as in a server that runs one model, where call by call it finds another contender's state.",
                     lower_bound=2)
flags.DEFINE_integer("large_batch", 1024, "Batch size of the throughput measurement.", lower_bound=1)
flags.DEFINE_integer("large_batch_calls", 50, "Calls timed per contender at --large_batch.", lower_bound=1)
flags.DEFINE_integer("inter_op_threads", 1, "Inter-op pool size of both runtimes (TF1 session config and "
                     "tf.config.threading): on few cores a larger pool only adds hand-offs to a serial graph.",
                     lower_bound=1)
flags.DEFINE_integer("intra_op_threads", 2, "Intra-op pool size of both runtimes.", lower_bound=1)
flags.DEFINE_bool("pytorch", False, "Also time the same network in PyTorch eager (needs torch). Off by default: "
                  "PyTorch's OpenMP threads spin between its calls, which keeps the second core awake and made the "
                  "other contenders' calls faster (TF1's p50 0.26 against 0.33 ms on a 2-core Xeon), so their numbers "
                  "would not compare with runs without it.")
config.define_output_file_flag("", "JSON file to write (stdout too).", ".json")
FLAGS = flags.FLAGS


def _interleaved_seconds(calls, x, repeats, warmup, calls_per_turn=1):
    """Times each of `calls` ({name: fn(x)}) `repeats` times, taking turns of `calls_per_turn` calls in a row.

    Returns {name: [seconds of each call]}.
    """
    for call in calls.values():
        for _ in range(warmup):
            call(x)
    seconds = {name: [] for name in calls}
    order, rng = list(calls), np.random.default_rng(0)
    for _ in range(-(-repeats // calls_per_turn)):
        # A new order each round: a contender always called right after another one inherits its cache state.
        rng.shuffle(order)
        for name in order:
            for _ in range(calls_per_turn):
                start = time.perf_counter()
                calls[name](x)
                seconds[name].append(time.perf_counter() - start)
    return seconds


def _waits_per_call(call, x, calls=500):
    """How often the calling thread sleeps in a call (voluntary context switches): ~1 where TensorFlow hands the
    call to its inter-op pool and waits for it, ~0 where the call runs in the calling thread."""
    call(x)
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw
    for _ in range(calls):
        call(x)
    return (resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw - before) / calls


def _call_layers(tf, reconstruct, inputs):
    """Where the eager signature call's time goes: the same call with its input tensor made beforehand, and two
    diagnostics (left out where TensorFlow's API differs): the whole call without binding the input to the
    signature's type (the undocumented `call_preflattened` of its documented `inference_fn`), and, through
    TensorFlow's private API, the runtime executing the signature's function alone, without the Python that binds
    keywords, checks captures and packs outputs."""
    tensors = {id(x): tf.constant(x) for x in inputs}
    layers = {"savedmodel_reconstruct_input_made_beforehand":
              lambda x: reconstruct(input=tensors[id(x)])["x_hat"].numpy()}
    captures = tuple(reconstruct.captured_inputs)
    atomic = getattr(reconstruct, "inference_fn", None)
    if hasattr(atomic, "call_preflattened"):
        layers["diagnostic_without_input_binding_undocumented_api"] = lambda x: atomic.call_preflattened(
            (tf.constant(x), *captures))["x_hat"].numpy()
    try:
        from tensorflow.python.eager import context
        function_name = reconstruct._inference_function.name
        run = context.context().call_function
        if len(reconstruct.structured_outputs) == 1:
            layers["diagnostic_runtime_only_private_api"] = lambda x: run(
                function_name, [tensors[id(x)], *captures], 1)[0].numpy()
            # The runtime's fixed cost of calling any function: one that returns its input.
            identity = tf.function(tf.identity).get_concrete_function(reconstruct.inputs[0])
            layers["diagnostic_identity_function_runtime_private_api"] = lambda x: run(
                identity._inference_function.name, [tensors[id(x)]], 1)[0].numpy()
    except (AttributeError, ImportError):
        pass
    return layers


def _identity_signature(tf, input_shape):
    """A SavedModel signature that returns its input, saved and loaded as the export is and called the same way: the
    floor of any signature call from Python, before it computes anything."""

    class Identity(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, *input_shape], tf.float32, name="input")])
        def reconstruct(self, input):
            return {"x_hat": tf.identity(input)}

    module = Identity()
    with tempfile.TemporaryDirectory() as path:
        tf.saved_model.save(module, path, signatures={"reconstruct": module.reconstruct})
        identity = tf.saved_model.load(path).signatures["reconstruct"]
    return lambda x: identity(input=tf.constant(x))["x_hat"].numpy()


def _xla_reconstruct(tf, reconstruct, input_shape):
    """The signature compiled with XLA, which runs it in the caller's thread without the function runtime: (call,
    details). Exports do not use it: XLA compiles the signature's input checks (Assert) to nothing, and compiles again
    for every new batch size."""
    compiled = tf.function(lambda images: reconstruct(input=images)["x_hat"], jit_compile=True).get_concrete_function(
        tf.TensorSpec([None, *input_shape], tf.float32))
    start = time.perf_counter()
    compiled(tf.zeros([1, *input_shape]))
    compile_seconds = time.perf_counter() - start
    nan_input = np.full([1, *input_shape], np.nan, np.float32)
    try:
        compiled(tf.constant(nan_input)).numpy()
        refuses_nan_input = False
    except tf.errors.InvalidArgumentError:
        refuses_nan_input = True
    try:  # The export's own signature, for comparison.
        reconstruct(input=tf.constant(nan_input))
        export_refuses_nan_input = False
    except tf.errors.InvalidArgumentError:
        export_refuses_nan_input = True
    return (lambda x: compiled(tf.constant(x)).numpy()), {
        "first_call_seconds_batch1": compile_seconds, "refuses_nan_input": refuses_nan_input,
        "export_refuses_nan_input": export_refuses_nan_input}


def _litert_reconstruct(saved_model, threads):
    """The export's `reconstruct` signature converted to LiteRT and run by its interpreter on `threads` threads:
    (call, details), or (None, why not) without the [lite] extra."""
    try:
        import ai_edge_litert
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None, "not measured: ai-edge-litert is not installed (pip install -e \".[lite]\")"
    from tfvae import lite

    runner = Interpreter(model_content=lite.convert(saved_model), num_threads=threads).get_signature_runner(
        "reconstruct")
    return (lambda x: runner(input=x)["x_hat"]), {"version": getattr(ai_edge_litert, "__version__", "unknown"),
                                                  "num_threads": threads}


def _torch_importable():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _pytorch_reconstruct(weights, hidden_sizes, latent_dim, threads):
    """The same network with the same weights in PyTorch eager, x_hat of z_mean under `torch.inference_mode`, on
    `threads` threads: (call, details)."""
    import torch
    import torch_reference

    torch.set_num_threads(threads)
    net = torch_reference.TutorialNet(initial_weights=weights, hidden_sizes=hidden_sizes, latent_dim=latent_dim)

    def call(x):
        with torch.inference_mode():
            return net.reconstruct(torch.from_numpy(x)).numpy()

    return call, {"version": torch.__version__, "num_threads": threads}


def main(argv):
    del argv
    if FLAGS.pytorch and not _torch_importable():
        print("error: --pytorch needs PyTorch, which is not installed; install it (CPU build: pip install torch "
              "--index-url https://download.pytorch.org/whl/cpu) or drop --pytorch", file=sys.stderr)
        sys.exit(1)
    import tensorflow as tf

    # Before anything initialises the eager runtime; the TF1 session below gets the same numbers.
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op_threads)
    import tf1_reference
    from tfvae import artifacts, export, inference, profiling

    saved, metadata = export.load_saved_model(FLAGS.saved_model)
    rng = np.random.default_rng(0)
    x_one = rng.random((1, 784), dtype=np.float32)
    x_large = rng.random((FLAGS.large_batch, 784), dtype=np.float32)
    reconstruct = saved.signatures["reconstruct"]
    # The TF1 graph with the export's own weights, so both compute the same function.
    weights = [v.numpy() for v in saved.tf1_variables if v.name.startswith(("encoder/", "decoder/"))]
    g = tf1_reference.build_graph(initial_weights=weights, hidden_sizes=tuple(metadata["config"]["hidden_sizes"]),
                                  latent_dim=metadata["latent_dim"])
    session_config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=FLAGS.intra_op_threads,
                                              inter_op_parallelism_threads=FLAGS.inter_op_threads)
    # Not `with Session(...)`: that would make the TF1 graph the default one, and the SavedModel calls would
    # build ops into it instead of running eagerly.
    sess = tf.compat.v1.Session(graph=g.graph, config=session_config)
    sess.run(g.init_op)
    # The same export through its SignatureDef in a Session, as TF Serving and TF1 code run it.
    serving_graph = tf.Graph()
    with serving_graph.as_default():
        serving_sess = tf.compat.v1.Session(graph=serving_graph, config=session_config)
        signature = tf.compat.v1.saved_model.loader.load(serving_sess, ["serve"], FLAGS.saved_model).signature_def[
            "reconstruct"]
    feed, fetch = signature.inputs["input"].name, signature.outputs["x_hat"].name
    # The signature inside a tf.function of one positional tensor: the call binds no keywords and packs no dict.
    reconstruct_positional = tf.function(lambda images: reconstruct(input=images)["x_hat"]).get_concrete_function(
        tf.TensorSpec([None, *metadata["input_shape"]], tf.float32))
    reconstruct_one_op = inference.signature_as_one_op(reconstruct)
    calls = {
        "savedmodel_reconstruct": lambda x: reconstruct(input=tf.constant(x))["x_hat"].numpy(),
        "savedmodel_reconstruct_one_op": lambda x: reconstruct_one_op(input=tf.constant(x))["x_hat"].numpy(),
        "savedmodel_reconstruct_positional": lambda x: reconstruct_positional(tf.constant(x)).numpy(),
        "savedmodel_restored_function": lambda x: saved.reconstruct(tf.constant(x))["x_hat"].numpy(),
        "savedmodel_signature_def_session_run": lambda x: serving_sess.run(fetch, {feed: x}),
        "tf1_session_run": lambda x: sess.run(g.x_hat_mean, {g.input: x}),
        **_call_layers(tf, reconstruct, (x_one, x_large)),
    }
    calls["diagnostic_identity_signature"] = _identity_signature(tf, metadata["input_shape"])
    xla_call, xla = _xla_reconstruct(tf, reconstruct, metadata["input_shape"])
    calls["diagnostic_xla_without_input_checks"] = xla_call
    litert_call, litert = _litert_reconstruct(FLAGS.saved_model, FLAGS.intra_op_threads)
    if litert_call:
        calls["litert_reconstruct"] = litert_call
    pytorch_call, pytorch = None, "not measured: pass --pytorch"
    if FLAGS.pytorch:
        pytorch_call, pytorch = _pytorch_reconstruct(weights, tuple(metadata["config"]["hidden_sizes"]),
                                                     metadata["latent_dim"], FLAGS.intra_op_threads)
        calls["pytorch_eager_reconstruct"] = pytorch_call
    small = _interleaved_seconds(calls, x_one, FLAGS.calls, warmup=200)
    small_turns = _interleaved_seconds(calls, x_one, FLAGS.calls, warmup=0, calls_per_turn=FLAGS.calls_per_turn)
    large = _interleaved_seconds(calls, x_large, FLAGS.large_batch_calls, warmup=2)
    outputs = {name: call(x_large) for name, call in calls.items()}
    waits = {name: _waits_per_call(calls[name], x_one)
             for name in ("savedmodel_reconstruct", "savedmodel_reconstruct_one_op", "tf1_session_run")}
    # LiteRT's and PyTorch's kernels round differently from TensorFlow's, whose outputs agree exactly: their
    # differences go apart.
    litert_output = outputs.pop("litert_reconstruct", None)
    pytorch_output = outputs.pop("pytorch_eager_reconstruct", None)
    for name in ("diagnostic_identity_signature", "diagnostic_identity_function_runtime_private_api"):
        outputs.pop(name, None)  # They return their input.
    xla["max_abs_output_difference"] = float(np.abs(outputs.pop("diagnostic_xla_without_input_checks")
                                                    - outputs["tf1_session_run"]).max())
    sess.close()
    serving_sess.close()
    result = {"saved_model": FLAGS.saved_model}
    for name in calls:
        result[name] = {"batch1_p50_ms": 1e3 * float(np.percentile(small[name], 50)),
                        "batch1_p99_ms": 1e3 * float(np.percentile(small[name], 99)),
                        "batch1_in_turns_p50_ms": 1e3 * float(np.percentile(small_turns[name], 50)),
                        "batch1_in_turns_p99_ms": 1e3 * float(np.percentile(small_turns[name], 99)),
                        f"batch{FLAGS.large_batch}_examples_per_second":
                            FLAGS.large_batch * len(large[name]) / float(np.sum(large[name]))}
    result.update({
        "p50_ratio_savedmodel_over_tf1": (result["savedmodel_reconstruct"]["batch1_p50_ms"]
                                          / result["tf1_session_run"]["batch1_p50_ms"]),
        "p50_ratio_savedmodel_over_tf1_in_turns": (result["savedmodel_reconstruct"]["batch1_in_turns_p50_ms"]
                                                   / result["tf1_session_run"]["batch1_in_turns_p50_ms"]),
        "p50_ratio_savedmodel_one_op_over_tf1": (result["savedmodel_reconstruct_one_op"]["batch1_p50_ms"]
                                                 / result["tf1_session_run"]["batch1_p50_ms"]),
        "p50_ratio_savedmodel_one_op_over_tf1_in_turns": (
            result["savedmodel_reconstruct_one_op"]["batch1_in_turns_p50_ms"]
            / result["tf1_session_run"]["batch1_in_turns_p50_ms"]),
        "litert": litert,
        "pytorch": pytorch,
        "xla": xla,
        "calls_per_turn": FLAGS.calls_per_turn,
        "batch1_calling_thread_waits_per_call": waits,
        "max_abs_output_difference": max(float(np.abs(outputs[name] - outputs["tf1_session_run"]).max())
                                         for name in outputs),
        "savedmodel_path": 'tf.saved_model.load(DIR).signatures["reconstruct"](input=tf.constant(x))["x_hat"]'
                           '.numpy()',
        "savedmodel_one_op_path": "tf.raw_ops.StatefulPartitionedCall(args=[tf.constant(x), *signature.captured_inputs]"
                                  ", Tout=[tf.float32], f=signature) (README: Inference from the SavedModel alone)",
        "threads": {"inter_op": FLAGS.inter_op_threads, "intra_op": FLAGS.intra_op_threads,
                    "cpus": os.cpu_count()},
        "tensorflow": tf.__version__,
        "memory_allocator": profiling.memory_allocator(),
        "load_average_1min": os.getloadavg()[0],
    })
    for suffix in ("", "_in_turns"):
        # The floor of any signature call from Python (and of the runtime's part of it), beside TF1's whole call.
        for floor in ("identity_signature", "identity_function_runtime_private_api"):
            if f"diagnostic_{floor}" in result:
                result[f"p50_ratio_{floor}_over_tf1{suffix}"] = (result[f"diagnostic_{floor}"][f"batch1{suffix}_p50_ms"]
                                                               / result["tf1_session_run"][f"batch1{suffix}_p50_ms"])
    if litert_call:
        for suffix in ("", "_in_turns"):
            result[f"p50_ratio_litert_over_tf1{suffix}"] = (result["litert_reconstruct"][f"batch1{suffix}_p50_ms"]
                                                          / result["tf1_session_run"][f"batch1{suffix}_p50_ms"])
        litert["max_abs_output_difference"] = float(np.abs(litert_output - outputs["tf1_session_run"]).max())
    if pytorch_call:
        for suffix in ("", "_in_turns"):
            result[f"p50_ratio_pytorch_over_tf1{suffix}"] = (
                result["pytorch_eager_reconstruct"][f"batch1{suffix}_p50_ms"]
                / result["tf1_session_run"][f"batch1{suffix}_p50_ms"])
        pytorch["max_abs_output_difference"] = float(np.abs(pytorch_output - outputs["tf1_session_run"]).max())
    artifacts.print_json(result, FLAGS.output)


if __name__ == "__main__":
    cli.run_main(main)
