"""evaluate.py against closed forms (a linear-Gaussian model's exact log-likelihood), checkpoint vs export, errors."""

import dataclasses
import json
import math
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, run_script
from tfvae import data, evaluation, export, losses, restore
from tfvae.compat import keras
from tfvae.models import likelihoods
from tfvae.models.base import VAE

LATENT_DIM = 3
NUM_EXAMPLES = 200


@keras.saving.register_keras_serializable("tfvae_test")
class IdentityMeanGaussian(likelihoods.Likelihood):
    """N(x; decoder output, s^2 I): with a linear decoder, p(x) = N(b, W W^T + s^2 I) in closed form."""

    def __init__(self, stddev, **kwargs):
        super().__init__(**kwargs)
        self.stddev = stddev

    def call(self, logits):
        return logits

    def log_prob(self, x, logits):
        return losses.gaussian_log_prob(x, logits, tf.fill(tf.shape(logits), 2.0 * math.log(self.stddev)))


def _dense(units, kernel, bias):
    layer = keras.layers.Dense(units)
    layer.build((None, kernel.shape[0]))
    layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return layer


@pytest.fixture(scope="module")
def linear_gaussian(tmp_path_factory, mnist_dir):
    """Probabilistic PCA of MNIST as a tfvae export, with a deliberately imperfect (too wide, shrunk) encoder.

    Returns (export dir, exact log p(x) `[NUM_EXAMPLES]` of the test images `evaluate.py --num_examples` takes at
    seed 0, closed-form E_q log p(x|z), the same model exported with the exact posterior as its encoder and one dead
    latent dimension, those test images `[NUM_EXAMPLES, 784]` and their exact posterior means
    `[NUM_EXAMPLES, LATENT_DIM + 1]`).
    """
    train = data.load_idx_split(mnist_dir, "train")[0][:3000].reshape(3000, -1) / 255.0
    test_images = data.load_idx_split(mnist_dir, "test")[0]
    test = test_images[data.seeded_subset(NUM_EXAMPLES, len(test_images), 0)].reshape(NUM_EXAMPLES, -1) / 255.0
    b = train.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(train, rowvar=False))
    order = np.argsort(eigenvalues)[::-1]
    stddev = 0.25
    u = eigenvectors[:, order[:LATENT_DIM]]  # [784, L], orthonormal columns: the posterior is diagonal.
    c = np.sqrt(np.maximum(eigenvalues[order[:LATENT_DIM]] - stddev ** 2, 1e-3))
    w = u * c  # x = W z + b + N(0, s^2 I)
    posterior_var = 1.0 / (1.0 + c ** 2 / stddev ** 2)
    # q(z|x): 0.9 x the posterior mean and twice its variance, so the ELBO is strictly below log p(x).
    encoder_kernel = np.concatenate([0.9 * (w * posterior_var / stddev ** 2), np.zeros_like(w)], axis=1)
    encoder_bias = np.concatenate([-(0.9 * (w * posterior_var / stddev ** 2)).T @ b,
                                   np.log(2.0 * posterior_var)])
    encoder = keras.Sequential([keras.Input((784,)), _dense(2 * LATENT_DIM, encoder_kernel, encoder_bias)])
    decoder = keras.Sequential([keras.Input((LATENT_DIM,)), _dense(784, w.T, b)])
    model = VAE(encoder, decoder, IdentityMeanGaussian(stddev), LATENT_DIM, seed=0)
    model(np.zeros((1, 784), np.float32))
    path = str(tmp_path_factory.mktemp("linear") / "export")
    metadata = {"model": "linear_gaussian", "input_shape": [784], "image_shape": [28, 28, 1],
                "latent_dim": LATENT_DIM, "likelihood": "gaussian", "likelihood_is_density": True,
                "binarize": "none", "dataset": "mnist", "num_classes": 0, "config": {"validation_size": 0}}
    export.export_saved_model(model, path, metadata)

    covariance = w @ w.T + stddev ** 2 * np.eye(784)
    _, logdet = np.linalg.slogdet(covariance)
    centered = test - b
    mahalanobis = np.einsum("nd,nd->n", centered, np.linalg.solve(covariance, centered.T).T)
    exact_log_px = -0.5 * (784 * math.log(2 * math.pi) + logdet + mahalanobis)
    # E_q log N(x; W z + b, s^2 I) = log N(x; W m + b, s^2 I) - sum_j c_j^2 v_j / (2 s^2).
    m = (centered @ (0.9 * w * posterior_var / stddev ** 2))
    residual = test - (m @ w.T + b)
    expected_log_px_z = (-0.5 * (784 * math.log(2 * math.pi * stddev ** 2) + (residual ** 2).sum(1) / stddev ** 2)
                         - (c ** 2 * 2 * posterior_var).sum() / (2 * stddev ** 2))

    # The exact posterior N(P^T (x - b), diag(v)), P = W v / s^2, as the encoder: then every importance log-weight
    # log p(x|z) + log p(z) - log q(z|x) is log p(x) itself, whatever z and K. The extra last dimension is dead:
    # q = N(0, 1) = p(z) there and the decoder ignores it, so p(x) and the weights are unchanged.
    projection = w * posterior_var / stddev ** 2
    zero = np.zeros((784, 1))
    exact_kernel = np.concatenate([projection, zero, np.zeros_like(w), zero], axis=1)
    exact_bias = np.concatenate([-projection.T @ b, [0.0], np.log(posterior_var), [0.0]])
    exact = VAE(keras.Sequential([keras.Input((784,)), _dense(2 * LATENT_DIM + 2, exact_kernel, exact_bias)]),
                keras.Sequential([keras.Input((LATENT_DIM + 1,)),
                                  _dense(784, np.concatenate([w.T, np.zeros((1, 784))]), b)]),
                IdentityMeanGaussian(stddev), LATENT_DIM + 1, seed=0)
    exact(np.zeros((1, 784), np.float32))
    exact_path = str(tmp_path_factory.mktemp("linear_exact") / "export")
    export.export_saved_model(exact, exact_path, {**metadata, "latent_dim": LATENT_DIM + 1})
    posterior_mean = np.concatenate([centered @ projection, np.zeros((NUM_EXAMPLES, 1))], axis=1)
    return path, exact_log_px, expected_log_px_z, exact_path, test, posterior_mean


def test_importance_sampled_nll_matches_the_exact_linear_gaussian_likelihood(linear_gaussian, mnist_dir, tmp_path):
    path, exact_log_px, expected_log_px_z, *_ = linear_gaussian
    output = tmp_path / "evaluation.json"
    result = run_script("evaluate.py", f"--saved_model={path}", f"--data_dir={mnist_dir}",
                        f"--num_examples={NUM_EXAMPLES}", "--num_importance_samples=1000", "--batch_size=50",
                        "--samples_per_batch=250", f"--output={output}")
    assert result.returncode == 0, result.stderr
    assert "NLL (K=1000)" in result.stdout and "bits (continuous)" in result.stdout  # Not 8-bit bits/dim.
    results = json.loads(output.read_text())
    exact_nll = -exact_log_px.mean()
    # Off by under 0.007 nats for seeds 0-5 (K=1000 importance sampling, and 1000 samples for the reconstruction).
    assert abs(results["nll"] - exact_nll) < 0.03, (results["nll"], exact_nll)
    assert abs(results["reconstruction"] + expected_log_px_z.mean()) < 0.03
    # The encoder is off on purpose: the bound is loose by more than the sampling error, yet K samples close it.
    assert results["negative_elbo"] > exact_nll + 0.3
    assert results["nll"] <= results["negative_elbo"]
    assert results["num_examples"] == NUM_EXAMPLES and results["binarize"] == "none"
    assert "gray levels" in results["protocol"]["data"] and "continuous density" in results["protocol"]["nll"]
    assert results["bits_per_dim"] == pytest.approx(results["nll"] / (784 * math.log(2)))
    assert results["active_units"] == LATENT_DIM and len(results["kl_per_dimension"]) == LATENT_DIM
    assert sum(results["kl_per_dimension"]) == pytest.approx(results["kl"])


@pytest.mark.parametrize("k", [1, 3])
def test_with_the_exact_posterior_every_k_gives_the_exact_likelihood(linear_gaussian, k):
    """With q(z|x) = p(z|x) each log-weight is log p(x): log-mean-exp over K of them is log p(x) for any K, so a
    wrong log K (say log(K + 1): 0.69 nats at K = 1) shows, and no sampling noise hides it."""
    _, exact_log_px, _, exact_path, test, posterior_mean = linear_gaussian
    loaded = restore.load_saved_model(exact_path)
    results = evaluation.evaluate(loaded, test.astype(np.float32), np.zeros(NUM_EXAMPLES, np.int32),
                                  num_importance_samples=k, batch_size=50, samples_per_batch=2, progress=False)
    assert abs(results["nll"] - (-exact_log_px.mean())) < 0.02, (results["nll"], -exact_log_px.mean())
    # Active units from the variance over examples of the posterior mean (centred): the dead dimension has none.
    np.testing.assert_allclose(results["z_mean_variance"], np.var(posterior_mean, axis=0), rtol=1e-4, atol=1e-12)
    assert results["active_units"] == LATENT_DIM and results["latent_dim"] == LATENT_DIM + 1
    # q = N(0, 1) = p(z) on the dead dimension: no KL there.
    assert abs(results["kl_per_dimension"][-1]) < 1e-6 and min(results["kl_per_dimension"][:-1]) > 1.0


def test_a_checkpoint_and_its_export_give_the_same_numbers(tiny_run, mnist_dir, tmp_path):
    run_dir, export_dir = tiny_run
    outputs = {}
    for flag in (f"--saved_model={export_dir}", f"--model_dir={run_dir}"):
        output = tmp_path / f"{flag.split('=')[0][2:]}.json"
        result = run_script("evaluate.py", flag, f"--data_dir={mnist_dir}", "--num_examples=300",
                            "--num_importance_samples=64", "--samples_per_batch=16", "--split=validation",
                            f"--output={output}")
        assert result.returncode == 0, result.stderr
        outputs[flag] = json.loads(output.read_text())
    from_export, from_checkpoint = outputs.values()
    for key in ("negative_elbo", "reconstruction", "kl", "nll", "bits_per_dim", "active_units"):
        assert from_checkpoint[key] == pytest.approx(from_export[key], rel=1e-5), key
    assert from_export["nll"] <= from_export["negative_elbo"]
    assert 60 < from_export["nll"] < 400  # nats per binarized MNIST digit after one short epoch
    assert from_export["binarize"] == "dynamic" and "dynamically binarized" in from_export["protocol"]["data"]
    # The IDX files and TFDS order the examples differently: the report names which were read.
    assert from_export["data_source"] == f"the IDX files in {os.path.abspath(mnist_dir)}"
    assert from_export["protocol"]["data"].endswith(f"; read from {from_export['data_source']}")


def test_a_run_is_evaluated_on_its_own_data_without_data_dir(tiny_run, tmp_path):
    # Offline, TFDS cannot download: the run's recorded --data_dir (real MNIST IDX files) must be what is read.
    run_dir, _ = tiny_run
    result = run_script("evaluate.py", f"--model_dir={run_dir}", "--num_examples=50", "--num_importance_samples=4")
    assert result.returncode == 0, result.stderr[-2000:]
    # Named by K and the examples, beside the run, so a quick evaluation does not replace a thorough one.
    output = os.path.join(run_dir, "evaluation_test_k4_n50.json")
    assert json.loads(open(output).read())["num_examples"] == 50
    from tfvae import data
    assert data.model_data_dir({"config": {"data_dir": "/nonexistent"}}, "") == ""  # Not here: TFDS's default.
    assert data.model_data_dir({"config": {"data_dir": str(tmp_path)}}, "/flag") == "/flag"  # The flag wins.


@pytest.mark.parametrize("name, label", [("tf1_tutorial", None), ("cvae_mnist", [1, 4, 7])])
def test_an_export_without_the_samples_signature_gives_the_same_log_likelihoods(name, label):
    """Exports made before `log_likelihood_samples` existed: restore tiles x (and the labels) through
    `log_likelihood` instead, and must give the numbers the signature gives."""
    loaded = restore.load_saved_model(os.path.join(REPO, "saved_models", name))
    older = dataclasses.replace(loaded, signatures={key: signature for key, signature in loaded.signatures.items()
                                                    if key != "log_likelihood_samples"})
    rng = np.random.default_rng(0)
    x = rng.random((3, 784), dtype=np.float32)
    z = rng.standard_normal((4, 3, loaded.latent_dim)).astype(np.float32)
    label = None if label is None else tf.constant(label)
    samples = loaded.log_likelihood_samples(x, z, label).numpy()
    assert samples.shape == (4, 3) and np.all(np.isfinite(samples)) and np.std(samples) > 1
    np.testing.assert_allclose(older.log_likelihood_samples(x, z, label).numpy(), samples, rtol=1e-5)
    np.testing.assert_allclose(loaded.log_likelihood(x, z[2], label).numpy(), samples[2], rtol=1e-5)


def test_protocol_says_when_the_likelihood_is_not_a_density():
    metadata = {"dataset": "mnist", "likelihood": "sse", "likelihood_is_density": False, "input_shape": [784]}
    protocol = evaluation.describe_protocol(metadata, "test", 10, evaluation.resolve_binarize(metadata), 0, 5)
    assert "NOT A DENSITY" in protocol["nll"] and "gray levels" in protocol["data"]
    assert evaluation.resolve_binarize({"likelihood": "bernoulli"}) == "dynamic"


def test_a_model_trained_on_binary_images_is_measured_on_binary_images_by_default():
    # A Gaussian model trained on binarized digits scored ~700 nats apart on gray levels, without a word.
    metadata = {"dataset": "mnist", "likelihood": "gaussian", "input_shape": [784], "binarize": "dynamic"}
    assert evaluation.resolve_binarize(metadata) == "dynamic"
    assert evaluation.resolve_binarize({**metadata, "binarize": "none"}) == "none"
    asked = evaluation.describe_protocol(metadata, "test", 10, "none", 0, 5)["nll"]
    assert asked.endswith("; the model was trained on binary images, evaluated on gray levels")


@pytest.mark.parametrize("likelihood", ["bernoulli", "autoregressive_bernoulli"])
def test_a_bernoulli_of_gray_levels_is_not_called_a_density(likelihood):
    # Over x in [0, 1] the Bernoulli's exp(x l - softplus(l)) integrates to (e^l - 1) / (l (1 + e^l)) <= 1/2 (0.21
    # at p = 0.99): its "nll" of gray levels overstates -log p(x) by at least D ln 2 nats and is no likelihood.
    metadata = {"dataset": "mnist", "likelihood": likelihood, "likelihood_is_density": True, "input_shape": [784],
                "binarize": "none"}  # Trained on gray levels, as configs/pytorch_tutorial.flags.
    assert not evaluation.likelihood_is_density(metadata, "none")
    assert "NOT A DENSITY" in evaluation.describe_protocol(metadata, "test", 10, "none", 0, 5)["nll"]
    # The default protocol binarizes the test digits: then the same model's numbers are nats.
    assert evaluation.resolve_binarize(metadata) == "dynamic" and evaluation.likelihood_is_density(metadata, "dynamic")
    assert "NOT A DENSITY" not in evaluation.describe_protocol(metadata, "test", 10, "dynamic", 0, 5)["nll"]
    gaussian = {**metadata, "likelihood": "gaussian"}
    assert evaluation.likelihood_is_density(gaussian, "none")  # A density of gray levels.


def test_numbers_depend_on_the_seed_not_on_batching(linear_gaussian, mnist_dir):
    # Each example draws its K samples from a seed of its own: batch size and samples per decoder call only
    # regroup the same arithmetic.
    loaded = restore.load_saved_model(linear_gaussian[0])
    x, labels, _ = evaluation.load_split(loaded.metadata, mnist_dir, "test", "none", seed=0, num_examples=60)
    runs = {(batch_size, samples_per_batch, seed): evaluation.evaluate(
        loaded, x, labels, num_importance_samples=50, batch_size=batch_size, samples_per_batch=samples_per_batch,
        seed=seed, progress=False) for batch_size, samples_per_batch, seed in
        [(60, 50, 0), (7, 50, 0), (25, 13, 0), (60, 50, 1)]}
    reference = runs[(60, 50, 0)]
    for key in ("nll", "reconstruction", "negative_elbo"):
        for batching in ((7, 50, 0), (25, 13, 0)):
            assert runs[batching][key] == pytest.approx(reference[key], rel=1e-6), (key, batching)
    assert abs(runs[(60, 50, 1)]["nll"] - reference["nll"]) > 1e-4  # Another seed, other samples.


def test_a_conditional_models_likelihood_is_named_given_the_label():
    metadata = {"dataset": "mnist", "likelihood": "bernoulli", "likelihood_is_density": True, "input_shape": [784],
                "binarize": "dynamic", "num_classes": 10}
    nll = evaluation.describe_protocol(metadata, "test", 10, "dynamic", 0, 5)["nll"]
    assert nll.startswith("-log p(x|y) given each example's true label") and "log 10 = 2.30 nats" in nll
    unconditional = evaluation.describe_protocol({**metadata, "num_classes": 0}, "test", 10, "dynamic", 0, 5)["nll"]
    assert unconditional.startswith("-log p(x) by importance sampling")


def test_log_mean_exp_is_stable_for_very_small_weights():
    # Weights around exp(-5000) underflow any float; accumulated chunk by chunk, as evaluate() does, their log-sum
    # must still come out: log(e^-5000 + e^-5001 + e^-5002) = -5000 + log(1 + e^-1 + e^-2).
    log_w = np.array([[-5000.0, -10.0], [-5001.0, -10.0], [-5002.0, -10.0]])
    total = np.full(2, -np.inf)
    for chunk in (log_w[:2], log_w[2:]):
        total = evaluation.add_log_sum_exp(total, chunk)
    assert np.all(np.isfinite(total))
    assert total[0] == pytest.approx(-5000.0 + math.log(1 + math.exp(-1) + math.exp(-2)), abs=1e-9)
    assert total[1] == pytest.approx(-10.0 + math.log(3), abs=1e-9)


def test_a_missing_saved_model_fails_in_one_line_and_writes_nothing(tmp_path, mnist_dir):
    output = tmp_path / "out.json"
    result = run_script("evaluate.py", "--saved_model=/nonexistent/export", f"--data_dir={mnist_dir}",
                        f"--output={output}")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    # A bad flag value, like every other: exit code 2, before any work.
    assert result.returncode == 2 and len(errors) == 1 and "no such folder" in errors[0]
    assert not output.exists()


def test_unusable_run_folders_are_named_in_the_error(tmp_path):
    with pytest.raises(ValueError, match="no such folder"):
        restore.load_checkpoint(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="flags.txt: no such file"):
        restore.load_checkpoint(str(tmp_path))
    (tmp_path / "flags.txt").write_text("--model=mlp\n--latent_dim=4\n")
    with pytest.raises(ValueError, match="no checkpoint"):
        restore.load_checkpoint(str(tmp_path))
    (tmp_path / "flags.txt").write_text("--model=mlp\n--not_a_flag=4\n")
    with pytest.raises(ValueError, match="unknown flag --not_a_flag"):
        restore.load_checkpoint(str(tmp_path))


def test_evaluate_needs_exactly_one_model_source():
    result = run_script("evaluate.py", "--saved_model=a", "--model_dir=b")
    assert result.returncode == 2 and "exactly one of" in result.stderr


def test_validation_split_of_a_run_without_one_is_refused(mnist_dir):
    metadata = {"dataset": "mnist", "input_shape": [784], "config": {"validation_size": 0}}
    with pytest.raises(ValueError, match="--split=test"):
        evaluation.load_split(metadata, mnist_dir, "validation", "none", 0)
    x, labels, split_size = evaluation.load_split({**metadata, "config": {"validation_size": 100}}, mnist_dir,
                                                  "validation", "dynamic", 3, num_examples=50)
    assert x.shape == (50, 784) and set(np.unique(x)) <= {0.0, 1.0} and labels.shape == (50,)
    again, _, _ = evaluation.load_split({**metadata, "config": {"validation_size": 100}}, mnist_dir, "validation",
                                        "dynamic", 3, num_examples=50)
    np.testing.assert_array_equal(x, again)  # the fixed-seed protocol: the same binary digits every time
    assert split_size == 100


def test_an_evaluation_of_n_examples_takes_n_at_random_each_binarized_as_in_the_whole_split(mnist_dir):
    # MNIST's first test digits are easier than the rest: a quick evaluation of the first 500 came out ~2 nats
    # better than one of all 10,000.
    metadata = {"dataset": "mnist", "input_shape": [784]}
    whole, whole_labels, size = evaluation.load_split(metadata, mnist_dir, "test", "dynamic", 0)
    x, labels, _ = evaluation.load_split(metadata, mnist_dir, "test", "dynamic", 0, num_examples=300, at_random=True)
    rows = {row.tobytes(): i for i, row in enumerate(whole)}
    chosen = [rows[row.tobytes()] for row in x]  # Each one is a digit of the whole split, binarized alike.
    assert size == 10000 and chosen == sorted(chosen) and chosen[-1] > 5000 and len(set(chosen)) == 300
    np.testing.assert_array_equal(labels, whole_labels[chosen])
    other, _, _ = evaluation.load_split(metadata, mnist_dir, "test", "dynamic", 1, num_examples=300, at_random=True)
    assert not np.array_equal(other, x)  # Another seed, other digits.
    first, _, _ = evaluation.load_split(metadata, mnist_dir, "test", "dynamic", 0, num_examples=300)
    np.testing.assert_array_equal(first, whole[:300])  # Plots keep the first ones.
    text = evaluation.describe_protocol(metadata, "test", 300, "dynamic", 0, 5, split_size=size)["data"]
    assert text.startswith("mnist test, 300 of its 10,000 examples chosen at random with seed 0, binarized")


def test_export_of_a_checkpoint_matches_the_trained_export_without_optimizer_slots(tiny_run, tmp_path):
    model_dir, export_dir = tiny_run
    path, _ = restore.export_checkpoint(model_dir, str(tmp_path / "re_export"))
    fresh, trained = restore.load_saved_model(path), restore.load_saved_model(export_dir)
    x = np.random.default_rng(0).random((5, 784)).astype(np.float32)
    np.testing.assert_allclose(fresh.encode(x)[0], trained.encode(x)[0], rtol=1e-6)
    assert fresh.metadata["latent_dim"] == 2 and "checkpoint" not in fresh.metadata

    def weights_bytes(folder):
        return os.path.getsize(os.path.join(folder, "variables", "variables.data-00000-of-00001"))

    # The trained export holds each weight twice (Keras' and the TF1 Saver's copy) and Adam's two slots: 4 copies;
    # without the slots there are 2.
    assert weights_bytes(path) < 0.6 * weights_bytes(export_dir)
    history = json.load(open(os.path.join(path, "metrics.json")))["history"]
    assert len(history["loss"]) == 1 and "val_loss" in history


def test_reexport_keeps_every_value_and_file_beside_it(tiny_run, tmp_path):
    """export.py --saved_model writes an export again in place (as for the shipped models, which predate the
    signatures' input checks): every variable, output and file beside the SavedModel is the same."""
    _, export_dir = tiny_run
    folder = tmp_path / "export"
    shutil.copytree(export_dir, folder)
    (folder / "plot.png").write_bytes(b"an evaluation artifact")
    before = tf.train.load_checkpoint(str(folder / "variables" / "variables"))
    values = {name: before.get_tensor(name) for name in before.get_variable_to_shape_map()}

    result = run_script("export.py", f"--saved_model={folder}")
    assert result.returncode == 0 and result.stdout.strip() == f"Exported SavedModel to {folder}", result.stderr
    # Quiet: absl's INFO lines from TensorFlow's saver (".py:LINE]") are off unless --verbosity asks for them.
    assert not [line for line in result.stderr.splitlines() if re.match(r"^I\d{4} .*\.py:\d+\]", line)]

    after = tf.train.load_checkpoint(str(folder / "variables" / "variables"))
    for name, value in values.items():
        if name != "_CHECKPOINTABLE_OBJECT_GRAPH":
            np.testing.assert_array_equal(after.get_tensor(name), value, err_msg=name)
    assert (folder / "plot.png").read_bytes() == b"an evaluation artifact"
    assert json.load(open(folder / "metrics.json")) == json.load(open(os.path.join(export_dir, "metrics.json")))
    assert json.load(open(folder / "tfvae.json")) == json.load(open(os.path.join(export_dir, "tfvae.json")))
    assert sorted(os.listdir(tmp_path)) == ["export"]  # No temporary or old folder left beside it.

    compare = ("import sys, numpy as np, tensorflow as tf\n"
               "x = np.random.default_rng(0).random((5, 784)).astype(np.float32)\n"
               "a, b = (tf.saved_model.load(p).signatures['reconstruct'](input=tf.constant(x))['x_hat'].numpy()\n"
               "        for p in sys.argv[1:])\n"
               "print(float(np.abs(a - b).max()), float(a.std()))")
    result = run_script(None, compare, str(folder), export_dir)
    difference, spread = map(float, result.stdout.split())
    assert result.returncode == 0 and difference == 0.0 and spread > 0.01, result.stderr


def test_a_run_flagfile_reads_back_into_the_same_config(tmp_path):
    from tfvae import config

    cfg = config.RunConfig(name="x", model="mlp", hidden_sizes=(512, 256), latent_dim=32, binarize="dynamic",
                           likelihood="bernoulli", learning_rate=3e-4, jit_compile=True, image_summaries=False)
    (tmp_path / "flags.txt").write_text(config.to_flagfile(cfg))
    assert config.run_config_from_flagfile(str(tmp_path / "flags.txt")) == cfg


@pytest.mark.parametrize("line, message", [
    (b"--hidden_sizes=abc", "--hidden_sizes=abc is not a comma-separated list of integers; put back the value"),
    (b"--learning_rate=fast", "--learning_rate=fast is not a number"),
    (b"--epochs=1.5", "--epochs=1.5 is not an integer"),
    (b"--epochs=\xff", "cannot be read ("),
])
def test_a_damaged_run_flagfile_is_named_with_the_flag_and_the_fix(tmp_path, line, message):
    from tfvae import config

    path = tmp_path / "flags.txt"
    path.write_bytes(config.to_flagfile(config.RunConfig()).encode() + line + b"\n")
    with pytest.raises(ValueError) as raised:
        config.run_config_from_flagfile(str(path))
    assert str(raised.value).startswith(f"{path}: ") and message in str(raised.value)


def test_a_restoration_models_protocol_says_it_is_measured_on_clean_inputs():
    metadata = {"dataset": "mnist", "likelihood": "bernoulli", "input_shape": [784], "binarize": "dynamic"}
    assert "corrupted" not in evaluation.describe_protocol(metadata, "test", 10, "dynamic", 0, 5)["data"]
    denoising = {**metadata, "corruption": "gaussian_noise"}
    data_text = evaluation.describe_protocol(denoising, "test", 10, "dynamic", 0, 5)["data"]
    assert data_text.endswith("; clean inputs, although this model was trained to restore gaussian_noise-corrupted "
                              "ones (evaluate_restoration.py measures that)")


def test_the_nll_standard_error_is_the_spread_over_examples_over_sqrt_n(linear_gaussian):
    _, exact_log_px, _, exact_path, test, _ = linear_gaussian
    results = evaluation.evaluate(restore.load_saved_model(exact_path), test.astype(np.float32),
                                  np.zeros(NUM_EXAMPLES, np.int32), num_importance_samples=3, batch_size=50,
                                  samples_per_batch=3, progress=False)
    # With the exact posterior every example's NLL is its exact -log p(x): the error is their sample std / sqrt(n)
    # (ddof=1: the population std, 0.25% smaller at 200 examples, would fail this).
    assert results["nll_standard_error"] == pytest.approx(
        np.std(exact_log_px, ddof=1) / math.sqrt(NUM_EXAMPLES), rel=5e-4)


def test_a_gaussian_models_numbers_are_labelled_continuous_on_binary_images_too():
    # Before, a Gaussian evaluated on binarized digits printed nats and discrete "bits" without a word.
    metadata = {"likelihood": "gaussian", "binarize": "dynamic", "image_shape": [28, 28, 1], "input_shape": [784],
                "dataset": "mnist"}
    protocol = evaluation.describe_protocol(metadata, "test", 100, "dynamic", 0, 10)
    assert "continuous density" in protocol["nll"] and "values at 0 and 1 alone" in protocol["nll"]
    assert "trained on" not in protocol["nll"]
    assert "trained on binary images, evaluated on gray levels" in evaluation.describe_protocol(
        metadata, "test", 100, "none", 0, 10)["nll"]
    results = dict(negative_elbo=-900.0, reconstruction=-910.0, kl=10.0, num_importance_samples=10, nll=-905.0,
                   nll_standard_error=1.0, bits_per_dim=-1.665, active_units=2, latent_dim=2, kl_per_dimension=[5, 5],
                   likelihood="gaussian", likelihood_is_density=True, binarize="dynamic", num_classes=0)
    assert "bits (continuous)" in evaluation.format_table(results, protocol)
    bernoulli = dict(results, likelihood="bernoulli")
    assert "bits (continuous)" not in evaluation.format_table(bernoulli, protocol)
