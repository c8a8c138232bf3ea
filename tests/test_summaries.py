"""TensorBoard beyond scalars, read back the way TensorBoard reads it: KL histograms, active units, gradient norm,
HParams, test metrics and the Embedding Projector files of a real short run."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.projector import projector_config_pb2
from google.protobuf import text_format

from conftest import session_start
from tfvae import data, summaries

LATENT_DIM = 2  # of the shared tiny_run


def _accumulator(path):
    accumulator = event_accumulator.EventAccumulator(path, size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    return accumulator


def test_latent_histograms_active_units_and_gradient_norm(tiny_run, mnist_dir):
    model_dir, export_dir = tiny_run
    latent = _accumulator(os.path.join(model_dir, "latent"))
    (histogram,) = latent.Tensors("kl_per_dimension")
    buckets = tf.make_ndarray(histogram.tensor_proto)  # [buckets, 3]: left edge, right edge, count
    assert buckets[:, 2].sum() == LATENT_DIM
    assert buckets[:, 0].min() >= 0.0  # KL is never negative
    (table,) = latent.Tensors("latent_dimensions")
    rows = tf.make_ndarray(table.tensor_proto).item().decode().splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == ["| z0", "| z1"]
    # Each dimension's KL in the table falls in the histogram's range.
    kls = [float(row.split(" | ")[1]) for row in rows]
    assert all(buckets[:, 0].min() - 1e-4 <= kl <= buckets[:, 1].max() + 1e-4 for kl in kls), kls
    (active,) = latent.Tensors("active_units")
    # Recounted from the export: Var over 1000 held-out digits (the first of the validation split, binarized here
    # with numpy) of the posterior mean, against Burda et al.'s 0.01. Each variance must sit far from 0.01, so that
    # another binarization of the same digits cannot move a unit across it.
    images = data.load_idx_split(mnist_dir, "train")[0][:1000].reshape(1000, 784) / 255.0
    binary = (np.random.default_rng(0).random(images.shape) < images).astype(np.float32)
    z_mean = tf.saved_model.load(export_dir).signatures["encode"](input=tf.constant(binary))["z_mean"].numpy()
    variances = np.var(z_mean.astype(np.float64), axis=0)
    assert np.all((variances > 0.05) | (variances < 0.002)), variances
    assert int(tf.make_ndarray(active.tensor_proto)) == int((variances > 0.01).sum())
    history = json.load(open(os.path.join(model_dir, "metrics.json")))["history"]
    assert history["grad_norm"][0] > 0 and "val_grad_norm" not in history
    train_tags = _accumulator(os.path.join(model_dir, "train")).Tags()["tensors"]
    assert {"epoch_grad_norm", "epoch_learning_rate", "epoch_examples_per_second"} <= set(train_tags)


def test_every_summary_of_an_epoch_shares_keras_step(tiny_run):
    # Keras logs its epoch scalars at the epoch's index (0 for the first); the images, KL histograms, active units
    # and the test metrics sit at the same step, so TensorBoard's sliders and charts line up.
    model_dir, _ = tiny_run
    steps = {}
    for subdir in ("train", "validation", "images", "latent", ""):
        accumulator = _accumulator(os.path.join(model_dir, subdir))
        for tag in accumulator.Tags()["tensors"]:
            if tag.startswith(("epoch_", "test/")) or subdir in ("images", "latent"):
                steps[f"{subdir}/{tag}"] = {event.step for event in accumulator.Tensors(tag)}
    assert {"train/epoch_loss", "validation/epoch_loss", "images/samples", "latent/kl_per_dimension",
            "latent/active_units", "/test/loss"} <= set(steps)
    assert all(tag_steps == {0} for tag_steps in steps.values()), steps  # One epoch: step 0 everywhere.
    # Keras' copies of the validation scalars at the optimizer step (another axis) are left out.
    validation_tags = _accumulator(os.path.join(model_dir, "validation")).Tags()["tensors"]
    assert not [tag for tag in validation_tags if not tag.startswith("epoch_")], validation_tags


def test_hparams_hold_the_flags_and_test_metrics_sit_beside_them(tiny_run):
    model_dir, _ = tiny_run
    start = session_start(model_dir)
    assert start.hparams["latent_dim"].number_value == LATENT_DIM
    assert start.hparams["hidden_sizes"].string_value == "32"
    assert start.hparams["binarize"].string_value == "dynamic" and "model_dir" not in start.hparams
    # What this Bernoulli MLP never reads, and settings of speed, are no columns of its row.
    assert not {"conv_filters", "ar_channels", "gaussian_stddev", "num_importance_samples", "corruption_strength",
                "steps_per_execution", "intra_op_threads", "tpu"} & set(start.hparams)
    assert {"learning_rate", "batch_size", "beta", "likelihood", "seed"} <= set(start.hparams)
    assert start.group_name == "run"  # the run folder's name
    assert "strategy" not in start.hparams  # How it ran, not what it learns.
    root = _accumulator(model_dir)
    test = {tag[len("test/"):]: float(tf.make_ndarray(root.Tensors(tag)[-1].tensor_proto))
            for tag in root.Tags()["tensors"] if tag.startswith("test/")}
    assert {"loss", "reconstruction", "kl", "negative_elbo"} <= set(test)
    assert 60 < test["loss"] < 400 and test["negative_elbo"] == pytest.approx(test["loss"], rel=1e-5)  # beta 1.


def test_the_hparams_table_shows_the_negative_elbo_and_the_flags_a_sweep_varies_first(tiny_run):
    # TensorBoard shows the first five flags and metrics of the experiment until others are ticked.
    from tensorboard.plugins.hparams import metadata

    model_dir, _ = tiny_run
    accumulator = event_accumulator.EventAccumulator(model_dir)
    accumulator.Reload()
    experiment = metadata.parse_experiment_plugin_data(
        accumulator.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.EXPERIMENT_TAG])
    # TensorBoard orders them by `differs`, then by name.
    shown = sorted(experiment.hparam_infos, key=lambda h: (not h.differs, h.name))[:5]
    assert [h.name for h in shown] == ["beta", "latent_dim", "learning_rate", "likelihood", "model"]
    assert set(session_start(model_dir).hparams) <= {h.name for h in experiment.hparam_infos}  # Every column.
    shown = [(m.name.group, m.name.tag) for m in experiment.metric_infos][:5]
    assert shown == [("", "test/negative_elbo"), ("", "test/loss"), ("validation", "epoch_negative_elbo"),
                     ("validation", "epoch_loss"), ("", "test/kl")]
    # Each names a series the run wrote.
    root, validation = _accumulator(model_dir), _accumulator(os.path.join(model_dir, "validation"))
    assert {"test/negative_elbo", "test/loss", "test/kl"} <= set(root.Tags()["tensors"])
    assert {"epoch_negative_elbo", "epoch_loss"} <= set(validation.Tags()["tensors"])


def test_a_runs_hparams_are_those_of_its_latest_process_and_other_event_files_stay(tmp_path):
    """A resumed run writes its flags again; the earlier processes' HParams files go (those of tfvae before
    2026-12-04 too, recognised by their contents), files with anything else stay."""
    from tensorboard.plugins.hparams import api as hp
    from tfvae import config

    folder = str(tmp_path / "run")
    with summaries.writing_to(folder):  # An older tfvae's HParams file: no suffix.
        hp.hparams({"epochs": 1}, trial_id="run")
    with summaries.writing_to(folder, step=0):
        tf.summary.scalar("test/loss", 1.0)
    with summaries.writing_to(folder, filename_suffix=summaries.HPARAMS_SUFFIX):
        hp.hparams({"epochs": 2}, trial_id="run")
    assert len(summaries._hparams_event_files(folder)) == 2
    callback = summaries.HParamsSummary(folder, config.RunConfig(epochs=3, model_dir=folder))
    callback.on_train_begin()
    (left,) = summaries._hparams_event_files(folder)
    assert left.endswith(summaries.HPARAMS_SUFFIX) and len(os.listdir(folder)) == 2
    assert session_start(folder).hparams["epochs"].number_value == 3
    assert "test/loss" in _accumulator(folder).Tags()["tensors"]


def test_projector_has_test_z_mean_labels_and_sprite(tiny_run, mnist_dir):
    model_dir, _ = tiny_run
    folder = os.path.join(model_dir, summaries.PROJECTOR_DIR)
    config = text_format.Parse(open(os.path.join(folder, "projector_config.pbtxt")).read(),
                               projector_config_pb2.ProjectorConfig())
    (embedding,) = config.embeddings
    reader = tf.train.load_checkpoint(folder)
    z_mean = reader.get_tensor(embedding.tensor_name)
    assert z_mean.shape == (10000, LATENT_DIM) and np.isfinite(z_mean).all() and z_mean.std() > 0.05
    labels = open(os.path.join(folder, embedding.metadata_path)).read().split()
    from tfvae import data
    assert labels[:20] == [str(v) for v in data.load_idx_split(mnist_dir, "test")[1][:20]]  # no header row
    assert len(labels) == 10000
    with Image.open(os.path.join(folder, embedding.sprite.image_path)) as sprite:
        assert sprite.size == (100 * 28, 100 * 28)
    assert list(embedding.sprite.single_image_dim) == [28, 28]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(folder))  # so TensorBoard lists it as a run


def test_hparams_leave_out_only_the_flags_this_run_does_not_read():
    from tfvae import config

    elbo = summaries.hparams_of(config.RunConfig(model="mlp", likelihood="bernoulli"))
    assert "num_importance_samples" not in elbo and "gaussian_stddev" not in elbo and "conv_filters" not in elbo
    assert "model_dir" not in elbo and elbo["hidden_sizes"] == "100"
    iwae = summaries.hparams_of(config.RunConfig(model="conv", likelihood="gaussian", objective="iwae",
                                                 num_importance_samples=5, conv_filters=(8, 16)))
    assert (iwae["num_importance_samples"], iwae["gaussian_stddev"], iwae["conv_filters"]) == (5, 0.1, "8,16")


def _write_history(folder, metrics_loss, event_loss):
    with tf.summary.create_file_writer(os.path.join(folder, "train")).as_default():
        for step, value in enumerate(event_loss):
            tf.summary.scalar("epoch_loss", value, step=step)
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        json.dump({"history": {"loss": metrics_loss}, "epochs_run": list(range(1, len(metrics_loss) + 1))}, f)


def test_metrics_json_wins_a_tie_and_history_before_pads_with_none(tmp_path):
    # The same epochs in both: metrics.json (the finished run's own record) is read, not the event files.
    _write_history(str(tmp_path), [1.0, 2.0], [10.0, 20.0])
    assert summaries.read_history(str(tmp_path))["loss"] == [1.0, 2.0]
    # A resume at epoch 4 of a run whose history holds 2 epochs: one value or None per earlier epoch.
    assert summaries.history_before(str(tmp_path), 3) == {"loss": [1.0, 2.0, None]}


def test_active_units_count_dimensions_whose_mean_varies_above_the_threshold(tmp_path):
    # z_mean over 4 examples: variances 1.0, 0.0025 and 0 (numpy's population variance, as reduce_variance).
    z_mean = np.array([[1, 0.05, 3], [-1, -0.05, 3], [1, 0.05, 3], [-1, -0.05, 3]], np.float32)
    assert np.var(z_mean, axis=0).tolist() == pytest.approx([1.0, 0.0025, 0.0])

    class Encoder:
        def encode(self, x, label):
            return tf.constant(z_mean), tf.zeros_like(z_mean)

    callback = summaries.LatentSummaries(str(tmp_path), {"input": np.zeros((4, 3), np.float32),
                                                         "label": np.zeros(4, np.int32)})
    callback.set_model(Encoder())
    callback.on_epoch_end(0)
    accumulator = _accumulator(str(tmp_path))
    assert [int(tf.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors("active_units")] == [1]
    # The text table names each dimension; with z_logvar 0 its KL is mean(z_mean^2) / 2.
    (table,) = accumulator.Tensors("latent_dimensions")
    rows = [row.strip("| ").split(" | ") for row in tf.make_ndarray(table.tensor_proto).item().decode().splitlines()]
    assert rows[0] == ["dimension", "KL (nats)", "Var_x(E_q[z_u])", "active"]
    assert [row[0] for row in rows[2:]] == ["z0", "z1", "z2"]
    assert [float(row[1]) for row in rows[2:]] == pytest.approx([0.5, 0.00125, 4.5], abs=1e-4)
    assert [row[3] for row in rows[2:]] == ["yes", "**no**", "**no**"]


def test_latent_dimension_names_sort_in_order():
    table = summaries.latent_dimensions_table(np.zeros(12), np.ones(12))
    names = [row.split(" | ")[0].strip("| ") for row in table.splitlines()[2:]]
    assert names[0] == "z00" and names[11] == "z11" and sorted(names) == names
