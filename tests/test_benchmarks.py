"""The benchmark scripts run and report what they compare; they are checked for behaviour, never for speed."""

import glob
import importlib.util
import json
import os

import numpy as np
import pytest

from conftest import error_lines, run_script
from tfvae import profiling

HAS_TORCH = importlib.util.find_spec("torch") is not None


def _run_json(script, tmp_path, *args, env=None):
    output = tmp_path / "result.json"
    result = run_script(script, *args, f"--output={output}", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(output.read_text())


def test_bench_train_trains_tfvae_and_the_tf1_graph_alike(mnist_dir, tmp_path):
    # 10,000 training digits: 100 steps an epoch.
    result = _run_json("bench_train.py", tmp_path, "--preset=tf1_tutorial", "--epochs=2", "--validation_size=50000",
                       "--profile", f"--data_dir={mnist_dir}")
    # The preset splits batches in two, so the ceiling and the bound also run in that structure.
    bounds = ("matmul_adam_bound", "matmul_adam_bound_micro_batches")
    ceilings = ("matmul_ceiling", "matmul_ceiling_micro_batches")
    rates = {name: result[name]["examples_per_second"] for name in ("tfvae", "tf1_feed_dict", *ceilings, *bounds)}
    assert all(rate > 0 for rate in rates.values()), rates
    assert result["speedup_vs_tf1"] == pytest.approx(rates["tfvae"] / rates["tf1_feed_dict"])
    assert result["tfvae_fraction_of_matmul_ceiling"] == pytest.approx(rates["tfvae"] / rates["matmul_ceiling"])
    for limit in (ceilings[1], *bounds):
        assert result[f"tfvae_fraction_of_{limit}"] == pytest.approx(rates["tfvae"] / rates[limit])
        assert result[f"{limit}_fraction_of_matmul_ceiling"] == pytest.approx(rates[limit] / rates["matmul_ceiling"])
    # Each half of the batch runs the step's 11 products.
    assert result["matmul_ceiling"]["matmuls_per_step"] == result["matmul_adam_bound"]["matmuls_per_step"] == 11
    assert all(result[f"{limit}_micro_batches"]["matmuls_per_step"] == 22 for limit in ("matmul_ceiling",
                                                                                       "matmul_adam_bound"))
    # The benchmark runs in this process's environment (LD_PRELOAD and all), so on the malloc this one runs on.
    assert result["memory_allocator"] == profiling.memory_allocator()
    assert len(result["tfvae"]["epoch_seconds"]) == 2 and result["peak_rss_mb"] > 100
    # The same network, optimizer and data, two epochs each: the losses agree up to data order and initialisation.
    tfvae, tf1 = result["tfvae"]["final_validation_loss"], result["tf1_feed_dict"]["final_validation_loss"]
    assert 30 < tfvae < 80 and abs(tfvae - tf1) < 0.05 * tf1, (tfvae, tf1)
    assert result["config"]["validation_size"] == 50000 and result["tfvae_compute_dtype"] == "float32"
    # The preset's pools are the ones tfvae ran with; TF1, the ceiling and the bound ran once per pool size each,
    # and the faster of each is the one compared.
    assert result["config"]["intra_op_threads"] == result["threads"]["intra_op"] == 1
    pool_sizes = sorted({1, os.cpu_count()})
    for contender in (*ceilings, *bounds):
        runs = {threads: result[f"{contender}_intra_op_{threads}"] for threads in pool_sizes}
        fastest = max(runs, key=lambda threads: runs[threads]["examples_per_second"])
        assert result[contender] == {**runs[fastest], "intra_op_threads": fastest}
    # The TF1 graph also runs with an inter-op pool of one thread and of one per core (TensorFlow's default).
    tf1_runs = {(intra, inter): result[f"tf1_feed_dict_intra_op_{intra}_inter_op_{inter}"]
                for intra in pool_sizes for inter in pool_sizes}
    fastest = max(tf1_runs, key=lambda pools: tf1_runs[pools]["examples_per_second"])
    assert result["tf1_feed_dict"] == {**tf1_runs[fastest], "intra_op_threads": fastest[0],
                                       "inter_op_threads": fastest[1]}
    # Pool sizes change speed, not what is computed: one seed, one loss.
    losses = [run["final_validation_loss"] for run in tf1_runs.values()]
    assert losses == pytest.approx([losses[0]] * len(losses), rel=1e-4)
    # One round after the first: its paired ratio is the ratio of that round's two rates.
    tfvae_seconds, tf1_seconds = result["tfvae"]["epoch_seconds"][1], result["tf1_feed_dict"]["epoch_seconds"][1]
    assert result["speedup_vs_tf1_per_round"] == [pytest.approx(tf1_seconds / tfvae_seconds)]
    # PyTorch, where it is installed, trains the same network once per thread count, and the faster is compared.
    if HAS_TORCH:
        torch_runs = {threads: result[f"pytorch_eager_intra_op_{threads}"] for threads in pool_sizes}
        fastest = max(torch_runs, key=lambda threads: torch_runs[threads]["examples_per_second"])
        assert result["pytorch_eager"] == {**torch_runs[fastest], "intra_op_threads": fastest}
        pytorch = result["pytorch_eager"]["final_validation_loss"]
        assert abs(pytorch - tf1) < 0.05 * tf1, (pytorch, tf1)
        assert result["speedup_vs_pytorch"] == pytest.approx(
            rates["tfvae"] / result["pytorch_eager"]["examples_per_second"])
        assert result["speedup_vs_pytorch_per_round"] == [
            pytest.approx(result["pytorch_eager"]["epoch_seconds"][1] / tfvae_seconds)]
        assert result["versions"]["torch"]
    else:
        assert result["pytorch_eager"] == {"skipped": "torch is not installed"}
        assert "speedup_vs_pytorch" not in result and "torch" not in result["versions"]
    for limit in (ceilings[1], *bounds):
        assert result[f"tfvae_fraction_of_{limit}_median_of_rounds"] == pytest.approx(
            result[limit]["epoch_seconds"][1] / tfvae_seconds)
    # The kernel profile: both training paths and the bound run matmuls and Adam, the ceiling only matmuls; only
    # tfvae reads its batches through tf.data.
    profile = result["kernel_profile"]
    assert all(profile[name]["matmul_ms_per_step"] > 0 for name in rates), profile
    assert all(profile[name]["optimizer_ms_per_step"] > 0 for name in ("tfvae", "tf1_feed_dict", *bounds))
    assert all(profile[ceiling]["optimizer_ms_per_step"] == 0.0 for ceiling in ceilings)
    assert profile["tfvae"]["input_pipeline_ms_per_step"] > 0
    assert profile["tf1_feed_dict"]["input_pipeline_ms_per_step"] == 0.0
    shares = {name: profile[name]["matmul_share_of_kernel_time"] for name in rates}
    assert 0 < shares["tfvae"] < shares["matmul_ceiling"] <= 1 and all(shares[bound] < 1 for bound in bounds), shares
    # The bounds run Adam's kernel and, besides the matmuls, (almost) nothing else: the micro-batches' gradient sums.
    assert all(profile[bound]["other_kernels_ms_per_step"] < profile["tfvae"]["other_kernels_ms_per_step"]
               for bound in bounds), profile


def test_bench_train_mixed_bfloat16_trains_tfvae_as_well_as_the_float32_tf1_graph(mnist_dir, tmp_path):
    result = _run_json("bench_train.py", tmp_path, "--preset=tf1_tutorial", "--epochs=2", "--validation_size=50000",
                       "--mixed_precision=mixed_bfloat16", "--nopytorch", f"--data_dir={mnist_dir}")
    assert result["pytorch_eager"] == {"skipped": "--nopytorch"} and "speedup_vs_pytorch" not in result
    assert result["config"]["mixed_precision"] == "mixed_bfloat16" and result["tfvae_compute_dtype"] == "bfloat16"
    # bfloat16 layers with float32 loss: two epochs land where TF1's float32 graph does, up to a few percent.
    tfvae, tf1 = result["tfvae"]["final_validation_loss"], result["tf1_feed_dict"]["final_validation_loss"]
    assert 30 < tfvae < 80 and abs(tfvae - tf1) < 0.05 * tf1, (tfvae, tf1)


def test_bench_infer_compares_equal_outputs(tmp_path):
    # With jemalloc preloaded where it is installed, so the allocator it records is not just the default one.
    jemalloc = glob.glob("/usr/lib/*/libjemalloc.so.2")
    result = _run_json("bench_infer.py", tmp_path, "--saved_model=saved_models/tf1_tutorial", "--calls=1000",
                       "--large_batch=64", "--large_batch_calls=3", *(["--pytorch"] if HAS_TORCH else []),
                       env={"LD_PRELOAD": jemalloc[0]} if jemalloc else None)
    assert result["memory_allocator"] == ("jemalloc" if jemalloc else profiling.memory_allocator())
    # The export's reconstruct, however it is called, its SignatureDef in a Session and the TF1 graph with its
    # weights compute the same.
    assert result["max_abs_output_difference"] == 0.0
    # The same export converted to LiteRT (the test extra installs it) computes the same up to float rounding.
    assert result["litert"]["num_threads"] == result["threads"]["intra_op"]
    assert 0 < result["litert"]["max_abs_output_difference"] < 1e-5, result["litert"]
    # XLA computes the same up to rounding, but compiles the export's finite-input check to nothing: why exports
    # do not use it, though it runs a call without the function runtime's thread hand-off.
    assert result["xla"]["max_abs_output_difference"] < 1e-5, result["xla"]
    assert result["xla"]["export_refuses_nan_input"] and not result["xla"]["refuses_nan_input"], result["xla"]
    for name in ("savedmodel_reconstruct", "savedmodel_reconstruct_one_op", "savedmodel_reconstruct_positional",
                 "savedmodel_signature_def_session_run",
                 "tf1_session_run", "savedmodel_reconstruct_input_made_beforehand",
                 "diagnostic_without_input_binding_undocumented_api", "diagnostic_identity_signature",
                 "diagnostic_identity_function_runtime_private_api",
                 "diagnostic_xla_without_input_checks", "litert_reconstruct"):
        timings = result[name]
        assert 0 < timings["batch1_p50_ms"] <= timings["batch1_p99_ms"], timings
        assert 0 < timings["batch1_in_turns_p50_ms"] <= timings["batch1_in_turns_p99_ms"], timings
        assert timings["batch64_examples_per_second"] > 0
    for suffix in ("", "_in_turns"):
        for contender, name in (("savedmodel", "savedmodel_reconstruct"), ("litert", "litert_reconstruct"),
                                ("savedmodel_one_op", "savedmodel_reconstruct_one_op"),
                                ("identity_signature", "diagnostic_identity_signature"),
                                ("identity_function_runtime_private_api",
                                 "diagnostic_identity_function_runtime_private_api")):
            assert result[f"p50_ratio_{contender}_over_tf1{suffix}"] == pytest.approx(
                result[name][f"batch1{suffix}_p50_ms"] / result["tf1_session_run"][f"batch1{suffix}_p50_ms"])
    assert result["calls_per_turn"] == 20
    # Why the one-op call is faster: it runs in the calling thread, which never sleeps in it. A signature call, like
    # Session.run, hands its work to TensorFlow's inter-op pool and sleeps until it is done, once a call on an idle
    # machine; on a busy one (these tests run in parallel) the caller is often preempted instead, and finds the work
    # done, so their counts are recorded but not asserted.
    waits = result["batch1_calling_thread_waits_per_call"]
    assert waits["savedmodel_reconstruct_one_op"] < 0.05 and set(waits) == {
        "savedmodel_reconstruct", "savedmodel_reconstruct_one_op", "tf1_session_run"}, waits
    # PyTorch, asked for where it is installed, runs the same network with the export's weights: the same up to
    # rounding.
    if HAS_TORCH:
        assert result["pytorch"]["num_threads"] == result["threads"]["intra_op"]
        assert 0 <= result["pytorch"]["max_abs_output_difference"] < 1e-5, result["pytorch"]
        assert result["pytorch_eager_reconstruct"]["batch64_examples_per_second"] > 0
        assert result["p50_ratio_pytorch_over_tf1"] == pytest.approx(
            result["pytorch_eager_reconstruct"]["batch1_p50_ms"] / result["tf1_session_run"]["batch1_p50_ms"])
    else:
        assert result["pytorch"] == "not measured: pass --pytorch" and "pytorch_eager_reconstruct" not in result


def test_bench_fast_path_is_bit_identical_to_the_plain_path(mnist_dir, tmp_path):
    # 10,000 training digits: 100 steps, one call on the fast paths.
    result = _run_json("bench_fast_path.py", tmp_path, "--epochs=1", "--seeds=1", "--paths=plain,fast,fast_micro",
                       "--train_flags=--validation_size=50000", f"--data_dir={mnist_dir}")
    plain, fast, micro = (result["runs"][path][0] for path in ("plain", "fast", "fast_micro"))
    assert result["paths"] == {"plain": "--steps_per_execution=1 --micro_batches=1",
                               "fast": "--steps_per_execution=550 --micro_batches=1",
                               "fast_micro": "--steps_per_execution=550 --micro_batches=2"}
    assert 35 < plain["test_loss"] < 80  # A real epoch of the tutorial (~44.5 on 55,000 digits).
    for key in ("final_train_loss", "final_validation_loss", "test_loss"):
        assert fast[key] == plain[key], key  # The same arithmetic in fewer calls.
        # Halves of each batch side by side: the same numbers up to float rounding, after 100 steps.
        assert micro[key] == pytest.approx(plain[key], rel=1e-3), key
    assert result["summary"]["fast"]["test_loss_minus_plain"] == [0.0]
    assert all(np.isfinite(run["peak_rss_mb"]) and run["peak_rss_mb"] > 100 for run in (plain, fast, micro))


@pytest.mark.parametrize("script, args, message", [
    ("bench_fast_path.py", ["--recipe=configs/missing.flags"], "--recipe=configs/missing.flags: no such flagfile"),
    ("bench_fast_path.py", ["--paths=plain,turbo"], "--paths takes a comma-separated list of"),
    ("bench_fast_path.py", ["--train_flags=validation_size=5"], "each must be a train.py flag starting with --"),
    ("bench_fast_path.py", ["--seeds=0"], "--seeds"),
    ("bench_train.py", ["--preset=tf1_tutorial", "--micro_batches=3"],
     "--micro_batches must divide the preset's batch size (mlp400: 128, tf1_tutorial: 100)"),
    ("bench_train.py", ["--tf1_intra_op_threads=1,x"],
     "--tf1_intra_op_threads must be a comma-separated list of integers >= 0"),
    ("bench_train.py", ["--tf1_inter_op_threads="],
     "--tf1_inter_op_threads must be a comma-separated list of integers >= 0"),
    ("bench_train.py", ["--intra_op_threads=-1"], "--intra_op_threads"),
    ("bench_train.py", ["--preset=mlp800"], "--preset"),
])
def test_benchmark_bad_flags(script, args, message, tmp_path):
    output = tmp_path / "result.json"
    result = run_script(script, *args, f"--output={output}")
    lines = error_lines(result)
    assert result.returncode != 0 and len(lines) == 1 and message in lines[0], result.stderr
    assert not output.exists()


@pytest.mark.parametrize("script, fix", [("bench_train.py", "or pass --nopytorch"),
                                         ("bench_infer.py", "or drop --pytorch")])
def test_benchmarks_asked_for_pytorch_without_it_say_how_to_install_it(script, fix, mnist_dir, tmp_path):
    # A `torch` that cannot be imported, first on the path, stands in for a machine without PyTorch.
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ImportError('No module named torch')\n")
    output = tmp_path / "result.json"
    source = f"--data_dir={mnist_dir}" if script == "bench_train.py" else "--saved_model=saved_models/tf1_tutorial"
    result = run_script(script, "--pytorch", source, f"--output={output}", env={"PYTHONPATH": str(tmp_path)})
    lines = error_lines(result)
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "--pytorch needs PyTorch, which is not installed" in lines[0] and lines[0].endswith(fix)
    assert not output.exists()
