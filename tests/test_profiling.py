"""Profiler traces summarised by kernel kind: real kernels, run under TensorFlow's profiler."""

import glob
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_script
from tfvae import profiling


def test_kernel_seconds_sorts_a_real_trace_by_kind():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((256, 512), dtype=np.float32))
    var, m, v = (tf.Variable(tf.zeros([512, 512])) for _ in range(3))

    @tf.function
    def step():
        # A matmul, an optimizer kernel and an elementwise kernel, as in a training step.
        grad = tf.sigmoid(tf.matmul(x, x, transpose_a=True))
        tf.raw_ops.ResourceApplyAdam(var=var.handle, m=m.handle, v=v.handle, beta1_power=0.9, beta2_power=0.999,
                                     lr=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8, grad=grad)

    step()  # Traced outside the profile.
    wall, seconds = profiling.profile_kernel_seconds(lambda: [step() for _ in range(20)])
    assert wall > 0
    assert seconds["matmul"] > 0 and seconds["optimizer"] > 0 and seconds["other_kernels"] > 0, seconds
    assert "Sigmoid" in seconds["other_kernels_top"], seconds["other_kernels_top"]
    assert seconds["input_pipeline"] == 0.0


def test_kernel_seconds_counts_the_input_pipeline_apart():
    dataset = tf.data.Dataset.range(20000).map(lambda i: tf.reduce_sum(tf.sin(tf.cast(tf.fill([200], i), tf.float32))),
                                               num_parallel_calls=1).prefetch(2)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1  # As tfvae's pipelines: their kernels run on tf.data's threads.
    dataset = dataset.with_options(options)
    _, seconds = profiling.profile_kernel_seconds(lambda: [None for _ in dataset])
    assert seconds["input_pipeline"] > 0 and seconds["matmul"] == 0.0 and seconds["optimizer"] == 0.0, seconds
    assert "Sin" not in seconds["other_kernels_top"], seconds


def test_memory_allocator_reads_which_malloc_is_mapped(tmp_path):
    libc = "7f5d2a000000-7f5d2a028000 r--p 00000000 08:01 1053 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
    for mapped, expected in [("", "system"),
                             ("7f5d29e00000-7f5d29e0f000 r--p 00000000 08:01 2091 "
                              "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n", "jemalloc"),
                             ("7f5d29e00000-7f5d29e0f000 r--p 00000000 08:01 2092 "
                              "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4\n", "tcmalloc")]:
        maps = tmp_path / f"maps_{expected}"
        maps.write_text(libc + mapped)
        assert profiling.memory_allocator(str(maps)) == expected
    assert profiling.memory_allocator(str(tmp_path / "missing")) == "unknown"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_memory_allocator_of_real_processes():
    code = "from tfvae import profiling; print(profiling.memory_allocator())"
    plain = run_script(None, code, env={"LD_PRELOAD": ""})
    assert plain.returncode == 0 and plain.stdout.strip() == "system", plain.stderr[-2000:]
    jemalloc = glob.glob("/usr/lib/*/libjemalloc.so.2")
    if not jemalloc:
        pytest.skip("libjemalloc2 is not installed")
    preloaded = run_script(None, code, env={"LD_PRELOAD": jemalloc[0]})
    assert preloaded.returncode == 0 and preloaded.stdout.strip() == "jemalloc", preloaded.stderr[-2000:]
