"""The export's signatures refuse bad inputs by name and decode S samples of z per example at once; checked on
live serving functions of a tiny untrained model (what export_saved_model saves), without writing a SavedModel."""

import os
import shutil
import types

import numpy as np
import pytest
import tensorflow as tf

from tfvae import config, export, inference
from tfvae.models import build_model

LATENT_DIM = 2


@pytest.fixture(scope="module")
def conditional():
    cfg = config.RunConfig(model="cvae", hidden_sizes=(8,), latent_dim=LATENT_DIM, likelihood="bernoulli")
    return export.make_serving_functions(build_model(cfg, (28, 28, 1)), [784])


@pytest.fixture(scope="module")
def unconditional():
    cfg = config.RunConfig(model="mlp", hidden_sizes=(8,), latent_dim=LATENT_DIM, likelihood="bernoulli")
    return export.make_serving_functions(build_model(cfg, (28, 28, 1)), [784])


def _x(n):
    return tf.constant(np.random.default_rng(n).random((n, 784)), tf.float32)


def test_labels_outside_the_classes_are_refused(conditional):
    x = _x(2)
    assert conditional["encode"](input=x, label=tf.constant([0, 9]))["z_mean"].shape == (2, LATENT_DIM)
    with pytest.raises(tf.errors.InvalidArgumentError, match="label must be < num_classes=10"):
        conditional["encode"](input=x, label=tf.constant([0, 10]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="label must be >= 0"):
        conditional["decode"](z=tf.zeros((2, LATENT_DIM)), label=tf.constant([-1, 0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="label and z must hold the same number"):
        conditional["decode"](z=tf.zeros((2, LATENT_DIM)), label=tf.constant([0, 1, 2]))


def test_input_and_z_of_the_wrong_shape_are_refused(tmp_path):
    # A loaded SavedModel's signature wrappers pass any shape through; the export's own checks name the tensor.
    cfg = config.RunConfig(model="mlp", hidden_sizes=(8,), latent_dim=LATENT_DIM, likelihood="bernoulli")
    model = build_model(cfg, (28, 28, 1))
    export_dir = str(tmp_path / "export")
    export.export_saved_model(model, export_dir, {"input_shape": [784], "image_shape": [28, 28, 1]})
    signatures = tf.saved_model.load(export_dir).signatures
    assert signatures["decode"](z=tf.zeros((2, LATENT_DIM)))["x_hat"].shape == (2, 784)
    with pytest.raises(tf.errors.InvalidArgumentError, match="z_shape_check"):
        signatures["decode"](z=tf.zeros((2, LATENT_DIM + 1)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="input_shape_check"):
        signatures["reconstruct"](input=tf.zeros((2, 783)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="z_shape_check"):  # [S, batch, latent_dim] too.
        signatures["log_likelihood_samples"](input=tf.zeros((2, 784)), z=tf.zeros((3, 2, LATENT_DIM + 1)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="z and input must hold the same number"):
        signatures["log_likelihood"](input=tf.zeros((3, 784)), z=tf.zeros((2, LATENT_DIM)))


def test_log_likelihood_samples_is_log_likelihood_of_each_sample(unconditional, conditional):
    # S=3 samples of z for each of 5 examples: [3, 5] log-likelihoods, sample s the same as log_likelihood(x, z[s]).
    x = _x(5)
    z = tf.constant(np.random.default_rng(1).standard_normal((3, 5, LATENT_DIM)), tf.float32)
    samples = unconditional["log_likelihood_samples"](input=x, z=z)["log_px_z"].numpy()
    assert samples.shape == (3, 5)
    for s in range(3):
        np.testing.assert_allclose(samples[s], unconditional["log_likelihood"](input=x, z=z[s])["log_px_z"],
                                   rtol=1e-5)
    label = tf.constant([0, 3, 9, 1, 1])
    samples = conditional["log_likelihood_samples"](input=x, z=z, label=label)["log_px_z"].numpy()
    assert samples.shape == (3, 5)
    np.testing.assert_allclose(samples[2], conditional["log_likelihood"](input=x, z=z[2], label=label)["log_px_z"],
                               rtol=1e-5)
    # z's second axis is the batch: 4 examples' samples for 5 inputs are refused, not broadcast.
    with pytest.raises(tf.errors.InvalidArgumentError, match="z and input must hold the same number"):
        unconditional["log_likelihood_samples"](input=x, z=z[:, :4])


def test_read_errors_are_told_damaged_or_of_another_model_in_one_line():
    assert export.is_damaged(IndexError("Read less bytes than requested"))
    assert export.is_damaged(tf.errors.DataLossError(None, None, "Checksum does not match: stored 1 vs. calculated 2"))
    assert not export.is_damaged(tf.errors.InvalidArgumentError(None, None, "Received incompatible tensor"))
    assert not export.is_damaged(AssertionError("Unresolved object in checkpoint"))
    assert export.describe_read_error(IndexError("Read less bytes than requested")) == (
        "its data file is shorter than its index says: truncated or damaged")
    assert export.describe_read_error(AssertionError()) == "AssertionError"  # Never an empty reason.
    # The first line, which holds TensorFlow's reason (later lines are hints), on one line of at most 200 characters.
    assert export.describe_read_error(ValueError("a  b " + "c" * 300)) == ("a b " + "c" * 300)[:200]
    assert export.describe_read_error(ValueError("{{function_node __wrapped__RestoreV2}} Checksum does not match\n"
                                                 "  You may be trying to load on a different device")) == (
        "Checksum does not match")


def test_latest_checkpoint_tells_none_yet_from_files_gone_and_finds_a_moved_folders_own(tmp_path):
    folder = tmp_path / "checkpoints"
    assert export.latest_checkpoint(str(folder)) is None  # No folder, no checkpoint yet.
    step = tf.Variable(3)
    prefix = tf.train.CheckpointManager(tf.train.Checkpoint(step=step), str(folder), max_to_keep=1).save()
    assert export.latest_checkpoint(str(folder)) == prefix
    # TF1's Saver records absolute paths: a copy of the folder still reads its own files.
    copy = tmp_path / "copied"
    shutil.copytree(folder, copy)
    (copy / "checkpoint").write_text(f'model_checkpoint_path: "/elsewhere/{os.path.basename(prefix)}"\n')
    assert export.latest_checkpoint(str(copy)) == str(copy / os.path.basename(prefix))
    os.remove(prefix + ".index")
    with pytest.raises(export.CheckpointFilesMissing, match=f"the latest checkpoint, {prefix}, has no "
                                                           f"{os.path.basename(prefix)}.index"):
        export.latest_checkpoint(str(folder))
    assert export.is_damaged(tf.errors.NotFoundError(None, None, "Failed to find any matching files for ckpt-3"))
    assert not export.is_damaged(tf.errors.NotFoundError(None, None, "Key decoder/kernel not found in checkpoint"))


def test_metadata_that_is_not_a_json_object_is_refused(tmp_path):
    (tmp_path / "tfvae.json").write_text('["tfvae"]')
    with pytest.raises(export.ExportError, match="tfvae.json holds no JSON object; copy or export the model again"):
        export.load_metadata(str(tmp_path))


@pytest.mark.parametrize("model_kind", ["mlp", "cvae", "conv"])
def test_every_signature_takes_an_empty_batch(model_kind):
    # A conv model's export pads an empty batch to one example (TensorFlow's oneDNN Conv2D shapes an empty
    # batch's output wrongly); the others need nothing.
    cfg = config.RunConfig(model=model_kind, hidden_sizes=(8,), latent_dim=LATENT_DIM, likelihood="bernoulli",
                           conv_filters=(4, 8))
    model = build_model(cfg, (28, 28, 1))
    assert export.has_convolutions(model) == (model_kind == "conv")
    image_shape = (28, 28, 1) if model_kind == "conv" else (784,)
    functions = export.make_serving_functions(model, list(image_shape))
    label = {"label": tf.zeros((0,), tf.int32)} if model_kind == "cvae" else {}
    x, z = tf.zeros((0, *image_shape)), tf.zeros((0, LATENT_DIM))
    shapes = lambda outputs: {name: tuple(value.shape) for name, value in outputs.items()}  # noqa: E731
    assert shapes(functions["reconstruct"](input=x, **label)) == {"x_hat": (0, *image_shape)}
    assert shapes(functions["encode"](input=x, **label)) == {"z_mean": (0, LATENT_DIM), "z_logvar": (0, LATENT_DIM)}
    assert shapes(functions["decode"](z=z, **label)) == {"x_hat": (0, *image_shape), "logits": (0, *image_shape)}
    assert shapes(functions["log_likelihood"](input=x, z=z, **label)) == {"log_px_z": (0,)}
    assert shapes(functions["log_likelihood_samples"](input=x, z=tf.zeros((3, 0, LATENT_DIM)), **label)) == {
        "log_px_z": (3, 0)}
    seed = tf.constant(0, tf.int64)
    assert shapes(functions["sample"](z=z, seed=seed, **label)) == {"x_sample": (0, *image_shape)}


@pytest.mark.parametrize("model_kind", ["cvae", "conv"])
def test_a_signature_run_as_one_op_gives_its_outputs_and_keeps_its_checks(model_kind, tmp_path):
    cfg = config.RunConfig(model=model_kind, hidden_sizes=(8,), latent_dim=LATENT_DIM, likelihood="bernoulli",
                           conv_filters=(4, 8))
    image_shape = (28, 28, 1) if model_kind == "conv" else (784,)
    export_dir = str(tmp_path / "export")
    export.export_saved_model(build_model(cfg, (28, 28, 1)), export_dir,
                              {"input_shape": list(image_shape), "image_shape": [28, 28, 1]})
    signatures = tf.saved_model.load(export_dir).signatures
    rng = np.random.default_rng(0)
    label = {"label": np.array([3, 0, 9], np.int32)} if model_kind == "cvae" else {}
    x = rng.random((3, *image_shape))  # float64, as NumPy makes it: converted to float32 as the signature does.
    inputs = {"reconstruct": {"input": x}, "encode": {"input": x}, "decode": {"z": rng.normal(size=(3, LATENT_DIM))},
              "log_likelihood": {"input": x, "z": rng.normal(size=(3, LATENT_DIM))},
              "log_likelihood_samples": {"input": x, "z": rng.normal(size=(4, 3, LATENT_DIM))},
              "sample": {"z": rng.normal(size=(3, LATENT_DIM)), "seed": 7}}
    for name, given in inputs.items():
        given = {**given, **label}
        expected, got = signatures[name](**given), inference.signature_as_one_op(signatures[name])(**given)
        assert sorted(got) == sorted(expected), name
        for key in expected:
            np.testing.assert_array_equal(got[key].numpy(), expected[key].numpy(), err_msg=f"{name} {key}")
    reconstruct = inference.signature_as_one_op(signatures["reconstruct"])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"input has values outside \[0, 1\], or NaN or inf"):
        reconstruct(input=np.full((1, *image_shape), np.nan, np.float32), **{k: v[:1] for k, v in label.items()})
    # The op's own errors name inputs by position (args_0): the call checks them first, by name.
    with pytest.raises(ValueError, match=r"^input has shape \(1, 783\); this signature takes "):
        reconstruct(input=np.zeros((1, 783), np.float32), **{k: v[:1] for k, v in label.items()})
    with pytest.raises(TypeError, match="this signature takes .*input float32 .*; got imput"):
        reconstruct(imput=x[:1], **{k: v[:1] for k, v in label.items()})
    if model_kind == "cvae":
        with pytest.raises(tf.errors.InvalidArgumentError, match="label must be < num_classes=10"):
            reconstruct(input=x[:1], label=np.array([10], np.int32))
        with pytest.raises(TypeError, match="this signature takes input float32 .*, label int32 .*; got input$"):
            reconstruct(input=x[:1])  # The plain call refuses a missing label too.
        # A label TensorFlow's cast would truncate (3.7 -> 3) or wrap (2**32 + 3 -> 3) into range is refused.
        for bad in (np.array([3.7]), np.array([2**32 + 3])):
            with pytest.raises(ValueError, match="^label must hold int32 integers, not (float64|int64) values"):
                reconstruct(input=x[:1], label=bad)
        with pytest.raises(ValueError, match=r"^label has shape \(\); this signature takes"):
            reconstruct(input=x[:1], label=3)
    else:
        with pytest.raises(TypeError, match="got input, label"):  # As the plain call, not silently ignored.
            reconstruct(input=x[:1], label=np.array([1], np.int32))


@pytest.mark.parametrize("likelihood", ["bernoulli", "autoregressive_bernoulli", "gaussian", "sse"])
def test_sample_draws_binary_or_clipped_images_by_its_seed(likelihood):
    cfg = config.RunConfig(model="mlp", hidden_sizes=(8,), latent_dim=LATENT_DIM, likelihood=likelihood,
                           ar_kernel_size=3, ar_channels=4)
    functions = export.make_serving_functions(build_model(cfg, (28, 28, 1)), [784])
    if likelihood == "sse":  # The tutorial's squared error is no distribution: nothing to draw from.
        assert "sample" not in functions
        return
    z = tf.constant(np.random.default_rng(0).normal(size=(64, LATENT_DIM)), tf.float32)
    draw = lambda seed: functions["sample"](z=z, seed=tf.constant(seed, tf.int64))["x_sample"].numpy()  # noqa: E731
    first, again, other = draw(1), draw(1), draw(2)
    assert first.shape == (64, 784) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    assert (first != other).mean() > 0.1
    if likelihood == "gaussian":  # The mean plus noise of stddev 0.1, clipped to images' [0, 1].
        assert 0.0 <= first.min() and first.max() <= 1.0
        x_hat = functions["decode"](z=z)["x_hat"].numpy()
        assert 0.09 < np.std(first - x_hat) < 0.11
    else:
        assert set(np.unique(first)) == {0.0, 1.0}
    with pytest.raises(tf.errors.InvalidArgumentError, match="z has NaN or inf values"):
        functions["sample"](z=tf.fill((1, LATENT_DIM), np.nan), seed=tf.constant(0, tf.int64))


def test_drawing_from_an_export_without_sample_names_the_fix():
    older = types.SimpleNamespace(signatures={"decode": None})  # An export written before `sample` existed.
    with pytest.raises(ValueError, match=r"this export has no `sample` signature \(it predates it\); write it again "
                                         r"with `python scripts/export.py --saved_model=old/export`$"):
        inference.draw_samples(older, {"likelihood": "bernoulli", "latent_dim": 2}, "old/export", 1, 1)
