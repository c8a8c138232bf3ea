"""Where a CPU run's time goes: TensorFlow profiler traces summarised as time inside kernels, by kind.

The benchmarks use it to show what bounds a training step besides its matmuls (optimizer, elementwise kernels,
executor bookkeeping), from TensorFlow's own profiler and protobufs, with nothing else installed.
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
# Executor, allocator and thread-pool annotations, and ops that run a function (whose kernels are traced
# themselves): they wrap kernels or mark points, and counting them would count their kernels twice.
ANNOTATIONS = frozenset({"Process", "Record", "StartRegion", "StopRegion", "Start", "ParallelFor",
                         "ExecutorDoneCallback", "MemoryAllocation", "MemoryDeallocation", "PartitionedCall",
                         "StatefulPartitionedCall", "While", "StatelessWhile", "If", "StatelessIf"})
# Threads that run a graph's kernels (TF1 sessions and tf.functions alike); tf.data's threads are counted apart.
COMPUTE_THREAD_PREFIXES = ("tf_Compute", "tf_numa_")
INPUT_THREAD_PREFIX = "tf_data"


def kernel_seconds(xplane_path):
    """Sums a host trace's kernel times by kind.

    Args:
      xplane_path: an `*.xplane.pb` written by `tf.profiler.experimental`.

    Returns:
      {"matmul", "optimizer", "other_kernels": seconds inside kernels summed over compute threads (a kernel that
       shares its core with another counts its whole duration), "input_pipeline": tf.data threads' busy seconds,
       "other_kernels_top": {kernel type: seconds} of the five largest other kernels}.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # Shipped with TensorFlow; private, hence here only.

    space = xplane_pb2.XSpace()
    with open(xplane_path, "rb") as f:
        space.ParseFromString(f.read())
    totals, others = collections.Counter(), collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            if line.name.startswith(INPUT_THREAD_PREFIX):
                # Nested iterator events overlap; the thread's top-level time is its busy time.
                totals["input_pipeline"] += _top_level_seconds(line.events)
                continue
            if not line.name.startswith(COMPUTE_THREAD_PREFIXES):
                continue
            for event in line.events:
                kernel = names.get(event.metadata_id, "").rsplit(":", 1)[-1]  # "op_name:OpType" -> OpType.
                if not kernel or kernel in ANNOTATIONS:
                    continue
                seconds = event.duration_ps * 1e-12
                if kernel in MATMUL_KERNELS:
                    totals["matmul"] += seconds
                elif kernel in OPTIMIZER_KERNELS:
                    totals["optimizer"] += seconds
                else:
                    totals["other_kernels"] += seconds
                    others[kernel] += seconds
    result = {kind: totals[kind] for kind in ("matmul", "optimizer", "other_kernels", "input_pipeline")}
    result["other_kernels_top"] = dict(others.most_common(5))
    return result


def _top_level_seconds(events):
    end, total = 0, 0
    for event in sorted(events, key=lambda e: e.offset_ps):
        start, stop = event.offset_ps, event.offset_ps + event.duration_ps
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total * 1e-12


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
