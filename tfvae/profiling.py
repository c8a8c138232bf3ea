"""Where a CPU run's time goes: TensorFlow profiler traces summarised as time inside kernels, by kind.

The benchmarks use it to show what bounds a training step besides its matmuls (the optimizer's and elementwise
kernels, the input pipeline's), from TensorFlow's own profiler and protobufs, with nothing else installed.
"""

import collections
import glob
import os
import shutil
import tempfile
import time

import tensorflow as tf

# Matmul kernels as oneDNN and Eigen builds name them (forward products are fused with their bias and activation).
MATMUL_KERNELS = frozenset({"MatMul", "BatchMatMulV2", "BatchMatMulV3", "_FusedMatMul", "_MklMatMul",
                            "_MklNativeMatMul", "_MklFusedMatMul", "_MklNativeFusedMatMul",
                            "_MklBatchMatMulV2", "_MklNativeBatchMatMulV2"})
OPTIMIZER_KERNELS = frozenset({"ResourceApplyAdam", "ApplyAdam", "ResourceApplyGradientDescent",
                               "ResourceApplyKerasMomentum", "ResourceApplyRMSProp"})
# Ops that run a function: the function's kernels are traced themselves, and counting both would count them twice.
FUNCTION_CALL_KERNELS = frozenset({"PartitionedCall", "StatefulPartitionedCall", "While", "StatelessWhile", "If",
                                   "StatelessIf"})
# Threads that run a graph's kernels (TF1 sessions and tf.functions alike); tf.data's threads are counted apart.
COMPUTE_THREAD_PREFIXES = ("tf_Compute", "tf_numa_")
INPUT_THREAD_PREFIX = "tf_data"


def kernel_seconds(xplane_path):
    """Sums a host trace's time inside kernels, by kind.

    A kernel's event carries its op type as display name; executor, allocator and thread-pool annotations carry
    none, and tf.data's iterator events are named "Iterator::...". Those are left out: they wrap kernels or waits.

    Args:
      xplane_path: an `*.xplane.pb` written by `tf.profiler.experimental`.

    Returns:
      {"matmul", "optimizer", "other_kernels": seconds inside kernels summed over compute threads (a kernel that
       shares its core with another counts its whole duration), "input_pipeline": the same for the kernels of
       tf.data's threads, "other_kernels_top": {op type: seconds} of the five largest other kernels}.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # Shipped with TensorFlow; private, hence here only.

    space = xplane_pb2.XSpace()
    with open(xplane_path, "rb") as f:
        space.ParseFromString(f.read())
    totals, others = collections.Counter(), collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        kernels = {key: meta.display_name for key, meta in plane.event_metadata.items()
                   if meta.display_name and not meta.display_name.startswith("Iterator::")
                   and meta.display_name not in FUNCTION_CALL_KERNELS}
        for line in plane.lines:
            input_thread = line.name.startswith(INPUT_THREAD_PREFIX)
            if not input_thread and not line.name.startswith(COMPUTE_THREAD_PREFIXES):
                continue
            for event in line.events:
                kernel = kernels.get(event.metadata_id)
                if kernel is None:
                    continue
                seconds = event.duration_ps * 1e-12
                if input_thread:
                    totals["input_pipeline"] += seconds
                elif kernel in MATMUL_KERNELS:
                    totals["matmul"] += seconds
                elif kernel in OPTIMIZER_KERNELS:
                    totals["optimizer"] += seconds
                else:
                    totals["other_kernels"] += seconds
                    others[kernel] += seconds
    result = {kind: totals[kind] for kind in ("matmul", "optimizer", "other_kernels", "input_pipeline")}
    result["other_kernels_top"] = dict(others.most_common(5))
    return result


def memory_allocator(maps_path="/proc/self/maps"):
    """Names the malloc this process runs on: "jemalloc" or "tcmalloc" when one is loaded (by `LD_PRELOAD`), else
    "system"; "unknown" without `/proc` (not Linux). A preloaded allocator moves CPU step times by several percent,
    so the benchmarks record it beside their figures."""
    try:
        with open(maps_path) as f:
            mapped = f.read()
    except OSError:
        return "unknown"
    for name in ("jemalloc", "tcmalloc"):
        if f"lib{name}" in mapped:
            return name
    return "system"


def profile_kernel_seconds(fn):
    """Runs `fn()` under TensorFlow's profiler. Returns (wall seconds, `kernel_seconds` of the trace)."""
    log_dir = tempfile.mkdtemp(prefix="tfvae-profile-")
    try:
        tf.profiler.experimental.start(log_dir)
        start = time.perf_counter()
        try:
            fn()
        finally:
            wall = time.perf_counter() - start
            tf.profiler.experimental.stop()
        paths = glob.glob(os.path.join(log_dir, "**", "*.xplane.pb"), recursive=True)
        if not paths:
            raise RuntimeError(f"the TensorFlow profiler wrote no trace under {log_dir}")
        return wall, kernel_seconds(paths[0])
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
