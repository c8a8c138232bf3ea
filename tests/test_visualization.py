"""Every plot kind of scripts/plot.py drawn from tiny real models (a trained 2-D latent run and a conditional
export) and opened as a valid, non-blank PNG."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import REPO, run_script, write_idx
from tfvae import data, evaluation, export, inference, plots, restore, summaries, visualization
from tfvae.compat import keras
from tfvae.models import likelihoods
from tfvae.models.base import VAE

NUM_CLASSES = 10


class TinyConditionalVAE(VAE):
    """A cvae stand-in: the one-hot label is concatenated to the encoder input and to z."""

    num_classes = NUM_CLASSES

    def encode(self, x, label=None, training=False):
        return super().encode(tf.concat([x, tf.one_hot(tf.cast(label, tf.int32), NUM_CLASSES)], -1), training=training)

    def decode(self, z, label=None, training=False):
        return super().decode(tf.concat([z, tf.one_hot(tf.cast(label, tf.int32), NUM_CLASSES)], -1), training=training)


def assert_valid_png(path, min_size=(150, 100)):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1], image.size
        pixels = np.asarray(image.convert("L"), np.float32)
    assert pixels.std() > 10.0, f"{path} looks blank"


@pytest.fixture(scope="module")
def conditional_export(tmp_path_factory):
    latent_dim = 3
    encoder = keras.Sequential([keras.Input((784 + NUM_CLASSES,)), keras.layers.Dense(2 * latent_dim)])
    decoder = keras.Sequential([keras.Input((latent_dim + NUM_CLASSES,)), keras.layers.Dense(16, "relu"),
                                keras.layers.Dense(784)])
    model = TinyConditionalVAE(encoder, decoder, likelihoods.make_likelihood("bernoulli"), latent_dim, seed=0,
                               name="tiny_cvae")
    model({"input": np.zeros((1, 784), np.float32), "label": np.zeros(1, np.int32)})
    path = str(tmp_path_factory.mktemp("cvae") / "export")
    export.export_saved_model(model, path, {
        "model": "cvae", "input_shape": [784], "image_shape": [28, 28, 1], "latent_dim": latent_dim,
        "likelihood": "bernoulli", "likelihood_is_density": True, "binarize": "dynamic", "dataset": "mnist",
        "num_classes": NUM_CLASSES, "config": {"name": "tiny_cvae", "validation_size": 5000}})
    return path


def test_every_plot_kind_of_a_trained_2d_run(tiny_run, mnist_dir, tmp_path):
    model_dir, _ = tiny_run
    result = run_script("plot.py", f"--model_dir={model_dir}", f"--data_dir={mnist_dir}", "--grid_size=5",
                        "--scatter_examples=500", f"--output_dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    kinds = {"samples", "reconstructions", "manifold", "latent_scatter", "interpolation", "traversal", "loss_curves"}
    assert {f[:-4] for f in os.listdir(tmp_path)} == kinds  # No class grid: not conditional; no temp files left.
    assert "Skipped class_grid: the class grid needs a conditional model" in result.stdout
    for kind in kinds:
        assert_valid_png(tmp_path / f"{kind}.png")


def test_class_grid_and_pca_scatter_of_a_conditional_export(conditional_export, mnist_dir, tmp_path):
    result = run_script("plot.py", f"--saved_model={conditional_export}", f"--data_dir={mnist_dir}",
                        "--kinds=class_grid,latent_scatter,samples,interpolation,traversal", "--scatter_examples=300",
                        f"--output_dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "class_grid.png") as image:
        assert image.size[1] > image.size[0] * 0.8  # ten rows of eight: taller than wide-ish
    for kind in ("class_grid", "latent_scatter", "samples", "interpolation", "traversal"):
        assert_valid_png(tmp_path / f"{kind}.png")


def test_interpolation_pairs_do_not_follow_the_scatter_and_share_a_conditional_models_class(conditional_export,
                                                                                             mnist_dir, tmp_path):
    loaded = restore.load_saved_model(conditional_export)
    drawn = {}
    for scatter_examples in (10, 2000):
        written, _ = plots.run(loaded, ["interpolation", "latent_scatter"], str(tmp_path / str(scatter_examples)),
                               data_dir=mnist_dir, scatter_examples=scatter_examples)
        drawn[scatter_examples] = open(written["interpolation"], "rb").read()
    assert drawn[10] == drawn[2000]  # Before: other pairs with each --scatter_examples, some of two classes.
    labels = np.repeat(np.arange(10), 2)  # Two examples of each class: each pair is of one.
    for conditional in (True, False):
        for a, b in plots.interpolation_pairs(labels, conditional, seed=0):
            assert a != b and (labels[a] == labels[b]) == conditional


def test_interpolation_rows_are_named_by_the_classes_of_their_ends():
    labels = np.array([7, 1, 9, 9, 0], np.int32)
    pairs = [(0, 1), (2, 4), (2, 3)]
    assert plots.interpolation_row_labels({"dataset": "mnist"}, labels, pairs) == ["7 -> 1", "9 -> 0", "9"]
    fashion = plots.interpolation_row_labels({"dataset": "fashion_mnist"}, labels, pairs)
    assert fashion[1] == "9 ankle boot -> 0 T-shirt/top"
    folder = {"dataset": "image_folder", "class_names": ["cats", "dogs"]}
    assert plots.interpolation_row_labels(folder, np.array([1, 0]), [(0, 1)]) == ["1 dogs -> 0 cats"]
    # An unlabelled folder's labels are all 0: its rows stay numbered.
    assert plots.interpolation_row_labels({"dataset": "image_folder", "class_names": []}, labels, pairs) is None


def test_traversal_dimensions_are_ordered_by_their_mean_kl():
    z_mean = np.array([[0.0, 2.0, 0.0], [0.0, -2.0, 0.0]])
    z_logvar = np.array([[0.0, 0.0, np.log(0.25)], [0.0, 0.0, np.log(0.25)]])
    dimensions, kl = plots.traversal_dimensions(z_mean, z_logvar, 2)
    # KL(N(mu, s^2) || N(0, 1)) = (mu^2 + s^2 - log s^2 - 1) / 2.
    np.testing.assert_allclose(kl, [0.0, 2.0, 0.5 * (0.25 - np.log(0.25) - 1.0)])
    assert list(dimensions) == [1, 2]


def test_a_traversal_decodes_one_images_z_mean_with_one_dimension_per_row_set_to_each_column(mnist_dir, tmp_path,
                                                                                          monkeypatch):
    captured = {}
    monkeypatch.setattr(visualization, "save_grid_png", lambda path, images, rows, cols, title, row_labels,
                        col_labels: captured.update(images=images, rows=rows, cols=cols, title=title,
                                                    row_labels=row_labels, col_labels=col_labels))
    export_dir = os.path.join(REPO, "saved_models", "conv_mnist")
    plots.run(restore.load_saved_model(export_dir), ["traversal"], str(tmp_path), mnist_dir, seed=1, grid_size=5)
    assert (captured["rows"], captured["cols"]) == (5, 5)  # Five of the 16 dimensions, five values each.
    assert captured["col_labels"] == ["-1.64", "-0.60", "0.00", "0.60", "1.64"]  # 5%, 27.5%, ... of N(0, 1)
    kls = [float(label.split("KL ")[1].split(",")[0]) for label in captured["row_labels"]]
    assert kls == sorted(kls, reverse=True) and kls[-1] > 0.5  # The dimensions the model uses, most first.
    # Decoded again through the export's own signatures: the image the title names, each row its dimension.
    index = int(captured["title"].split("test image ")[1].split()[0].rstrip(","))
    metadata = json.load(open(os.path.join(export_dir, "tfvae.json")))
    x, _, _ = evaluation.load_split(metadata, mnist_dir, "test", metadata["binarize"], 1, num_examples=index + 1)
    saved = tf.saved_model.load(export_dir)
    z_mean = saved.signatures["encode"](input=tf.constant(x[index:index + 1]))["z_mean"].numpy()[0]
    for row, label in enumerate(captured["row_labels"]):
        dimension = int(label.split("]")[0][2:])
        assert f"here {z_mean[dimension]:+.2f}" in label
        z = np.repeat(z_mean[None], 5, axis=0)
        z[:, dimension] = visualization.gaussian_quantile_grid(5)[1]  # The labels are rounded; the values are not.
        expected = saved.signatures["decode"](z=tf.constant(z, tf.float32))["x_hat"].numpy()
        np.testing.assert_allclose(captured["images"][row * 5:(row + 1) * 5].reshape(5, -1),
                                   expected.reshape(5, -1), atol=1e-5)
    first_row = captured["images"][:5]
    assert np.abs(first_row[0] - first_row[-1]).mean() > 0.02  # The dimension of most KL changes the digit.


def test_pool_plots_take_a_test_split_smaller_than_their_pool_and_flags_beyond_it_are_named(conditional_export,
                                                                                            tmp_path):
    folder = tmp_path / "MNIST_data"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, magic, array in [("train-images-idx3-ubyte.gz", 2051, rng.integers(0, 256, (20, 28, 28))),
                               ("train-labels-idx1-ubyte.gz", 2049, rng.integers(0, 10, 20)),
                               ("t10k-images-idx3-ubyte.gz", 2051, rng.integers(0, 256, (30, 28, 28))),
                               ("t10k-labels-idx1-ubyte.gz", 2049, np.arange(30) % 10)]:
        write_idx(str(folder / name), magic, array)
    loaded = restore.load_saved_model(conditional_export)
    loaded.metadata["config"] = dict(loaded.metadata["config"], validation_size=5)
    written, _ = plots.run(loaded, ["interpolation", "traversal"], str(tmp_path / "plots"), str(folder))
    assert sorted(written) == ["interpolation", "traversal"]  # From the 30 test images there are.
    with pytest.raises(ValueError, match=r"--scatter_examples=40 is more than the 30 examples of the test split"):
        plots.run(loaded, ["interpolation", "latent_scatter"], str(tmp_path / "more"), str(folder),
                  scatter_examples=40)


def test_inapplicable_kinds_are_refused_before_any_file_is_written(conditional_export, tmp_path):
    loaded = restore.load_saved_model(conditional_export)
    with pytest.raises(ValueError, match="2-D latent"):
        plots.run(loaded, ["samples", "manifold"], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    kinds, left_out = plots.applicable_kinds(loaded, ["all"], conditional_export)
    assert "manifold" not in kinds and "2-D latent" in left_out["manifold"]
    result = run_script("plot.py", f"--saved_model={conditional_export}", "--kinds=histogram")
    assert result.returncode == 2 and "--kinds must be" in result.stderr


def test_history_is_read_from_event_files_when_metrics_json_is_missing(tiny_run, tmp_path):
    model_dir, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("metrics.json", "checkpoints"))
    from_events = summaries.read_history(str(copy))
    from_json = summaries.read_history(model_dir)
    for key in ("loss", "val_loss", "kl", "reconstruction"):
        assert from_events[key] == pytest.approx(from_json[key], rel=1e-6), key
    with pytest.raises(ValueError, match="no metrics.json"):
        summaries.read_history(str(tmp_path))
    # Without a checkpoint (a run stopped or diverged in its first epoch), its curves still draw from its files.
    result = run_script("plot.py", f"--model_dir={copy}", "--kinds=loss_curves,loss_curves",
                        f"--output_dir={tmp_path / 'plots'}")
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path / "plots") == ["loss_curves.png"]
    assert result.stdout.count("loss_curves.png") == 1  # A kind asked for twice is drawn once.
    assert_valid_png(tmp_path / "plots" / "loss_curves.png")
    result = run_script("plot.py", f"--model_dir={copy}", "--kinds=loss_curves,samples",
                        f"--output_dir={tmp_path / 'more'}")
    assert result.returncode == 1 and "no checkpoint in checkpoints/ yet; train at least one epoch; " \
        "--kinds=loss_curves draws from the run's files alone" in result.stderr
    assert not os.path.exists(tmp_path / "more")
    # "all", the default, draws what applies and names what it skipped.
    result = run_script("plot.py", f"--model_dir={copy}", f"--output_dir={tmp_path / 'all'}")
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path / "all") == ["loss_curves.png"]
    assert "Skipped samples: the run has no checkpoint yet" in result.stdout


@pytest.mark.parametrize("damage", ['{"history": ', "[]", '{"history": {"loss": 5}}', b"\xff\xfe"])
def test_an_unreadable_metrics_json_leaves_the_history_to_the_event_files(tiny_run, tmp_path, damage):
    model_dir, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("checkpoints"))
    (copy / "metrics.json").write_bytes(damage.encode() if isinstance(damage, str) else damage)
    assert summaries.read_history(str(copy))["loss"] == pytest.approx(summaries.read_history(model_dir)["loss"],
                                                                      rel=1e-6)


def test_history_of_an_older_resumed_run_is_placed_at_its_epochs(tiny_run, tmp_path):
    """An older tfvae's resumed run wrote only the epochs it ran; the event files have them all, and without
    them the earlier epochs are None, so that every list is indexed by epoch."""
    model_dir, _ = tiny_run
    full = summaries.read_history(model_dir)
    copy = tmp_path / "run"
    shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("checkpoints"))
    metrics = json.load(open(copy / "metrics.json"))
    json.dump({**metrics, "epochs_run": [3]}, open(copy / "metrics.json", "w"))  # As if it had run epoch 3 only.
    assert summaries.read_history(str(copy))["loss"] == pytest.approx(full["loss"], rel=1e-6)  # From the events.
    shutil.rmtree(copy / "train")
    shutil.rmtree(copy / "validation")
    assert summaries.read_history(str(copy))["loss"] == [None, None, *full["loss"]]


def test_history_of_a_run_resumed_past_an_older_metrics_json(tmp_path):
    """A run of 2 epochs, then resumed with --epochs=4 and stopped in epoch 4: its metrics.json is the 2-epoch
    run's, its event files hold epoch 3 too, and a resume must carry all three (not None for epoch 3)."""
    for subdir, values in (("train", [358.7, 223.8, 207.4]), ("validation", [240.6, 215.2, 205.0])):
        with tf.summary.create_file_writer(str(tmp_path / subdir)).as_default():
            for step, value in enumerate(values):  # As Keras' TensorBoard callback writes epoch scalars.
                tf.summary.scalar("epoch_loss", value, step=step)
                tf.summary.scalar("epoch_learning_rate", 1e-3, step=step)
    json.dump({"history": {"loss": [358.7, 223.8], "val_loss": [240.6, 215.2]}, "epochs_run": [1, 2]},
              open(tmp_path / "metrics.json", "w"))
    assert summaries.read_history(str(tmp_path))["loss"] == pytest.approx([358.7, 223.8, 207.4])
    # The loss curves' test point is of a run of the epochs drawn: this metrics.json's test is of 2, not 3.
    metrics = json.load(open(tmp_path / "metrics.json"))
    json.dump({**metrics, "test": {"loss": 210.0}}, open(tmp_path / "metrics.json", "w"))
    assert summaries.read_final_test(str(tmp_path), 2) == ({"loss": 210.0}, 2)  # Of the last epoch.
    assert summaries.read_final_test(str(tmp_path), 3) == (None, None)
    assert summaries.read_final_test(str(tmp_path / "train"), 3) == (None, None)  # No metrics.json.
    before = summaries.history_before(str(tmp_path), 3)
    assert before["val_loss"] == pytest.approx([240.6, 215.2, 205.0])
    # Keras' History has no learning rate: neither has a resumed run's metrics.json (it had one None per new epoch).
    assert "learning_rate" not in before
    assert summaries.history_before(str(tmp_path), 2)["loss"] == pytest.approx([358.7, 223.8])


def test_gaussian_quantile_grid_and_pca_projection():
    z, values = visualization.gaussian_quantile_grid(5)
    assert z.shape == (25, 2) and values[2] == pytest.approx(0.0, abs=1e-6)
    assert values[0] == pytest.approx(-1.6449, abs=1e-3)  # the 5% quantile of N(0, 1)
    assert z[0].tolist() == pytest.approx([values[0], values[-1]])  # top-left: smallest z[0], largest z[1]
    rng = np.random.default_rng(0)
    points = rng.standard_normal((500, 1)) * [[3.0, 0.0, 0.0, 0.0]] + rng.standard_normal((500, 4)) * 0.1
    projected, names = visualization.project_2d(points)
    assert projected.shape == (500, 2) and names[0].startswith("PC1")
    assert abs(np.corrcoef(projected[:, 0], points[:, 0])[0, 1]) > 0.99


@pytest.mark.parametrize("binarize", ["none", "dynamic"])
def test_plots_show_test_images_as_the_model_was_trained_on_them(conditional_export, mnist_dir, binarize):
    # A Bernoulli model trained on gray levels (pytorch_tutorial, denoise_mnist) is shown gray test digits, one
    # trained on binarized digits binary ones; the titles say which.
    loaded = restore.load_saved_model(conditional_export)
    loaded.metadata["binarize"] = binarize
    x, labels, images_are = plots.load_test_images(loaded, mnist_dir, seed=3, asked={"grid_size": 20})
    gray_levels = np.unique(x)
    assert x.shape == (20, 784) and len(labels) == 20
    if binarize == "none":
        assert len(gray_levels) > 100 and images_are == "test images"
    else:
        assert set(gray_levels) == {0.0, 1.0} and images_are == "binarized test images (seed 3)"
    # generate.py --reconstruct shows the same first digits under the same title.
    originals, _ = inference.reconstruct_test_images(tf.saved_model.load(conditional_export), loaded.metadata,
                                                     mnist_dir, 4, seed=3)
    np.testing.assert_array_equal(originals, x[:4].reshape(4, 28, 28, 1))


def test_plots_name_the_classes_of_datasets_whose_labels_are_not_digits():
    # The datasets' own label order (Fashion-MNIST's 9 is an ankle boot, CIFAR-10's 3 a cat); MNIST's are digits.
    assert data.class_label({"dataset": "fashion_mnist"}, 9) == "9 ankle boot"
    assert data.class_label({"dataset": "fashion_mnist"}, 0) == "0 T-shirt/top"
    assert data.class_label({"dataset": "cifar10"}, 3) == "3 cat"
    assert data.class_label({"dataset": "cifar10"}, 9) == "9 truck"
    assert data.class_label({"dataset": "image_folder", "class_names": ["cats", "dogs"]}, 1) == "1 dogs"
    assert data.class_label({"dataset": "mnist"}, 7) == "7"


def test_tile_images_fills_rows_first_with_white_separators():
    # 6 images of 2x3 pixels, image i filled with i / 10, in 2 rows of 3 with a 1-pixel white gap between them.
    images = np.arange(6, dtype=np.float32)[:, None, None, None] / 10 * np.ones((6, 2, 3, 1), np.float32)
    grid = visualization.tile_images(images, 2, 3)
    assert grid.shape == (2 * 3 - 1, 3 * 4 - 1, 1)  # rows * (H + 1) - 1, cols * (W + 1) - 1
    for i in range(6):
        r, c = i // 3, i % 3
        np.testing.assert_allclose(grid[r * 3:r * 3 + 2, c * 4:c * 4 + 3], i / 10)
    assert np.all(grid[2] == 1.0) and np.all(grid[:, 3] == 1.0) and np.all(grid[:, 7] == 1.0)


def test_as_images_reshapes_flat_batches_and_clips():
    flat = np.linspace(-0.5, 1.5, 2 * 12).reshape(2, 12)
    images = visualization.as_images(flat, (2, 3, 2))
    assert images.shape == (2, 2, 3, 2) and images.dtype == np.float32
    np.testing.assert_allclose(images, np.clip(flat, 0, 1).reshape(2, 2, 3, 2), rtol=1e-6)


def test_gaussian_quantile_grid_rows_go_down_in_z1_and_columns_up_in_z0():
    z, values = visualization.gaussian_quantile_grid(3, low=0.1, high=0.9)
    q = 1.2815516  # the 90% quantile of N(0, 1)
    np.testing.assert_allclose(values, [-q, 0.0, q], atol=1e-5)
    np.testing.assert_allclose(z.reshape(3, 3, 2)[0, :, 0], [-q, 0.0, q], atol=1e-5)  # top row: z[0] rises
    np.testing.assert_allclose(z.reshape(3, 3, 2)[:, 0, 1], [q, 0.0, -q], atol=1e-5)  # left column: z[1] falls


def test_parse_labels_gives_one_row_per_class_or_one_label_everywhere():
    labels, rows = inference.parse_labels("all", 3, rows=5, cols=4)
    assert rows == 3 and labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    labels, rows = inference.parse_labels("2", 3, rows=2, cols=2)
    assert rows == 2 and labels.tolist() == [2, 2, 2, 2]
    with pytest.raises(ValueError, match=r"--label=3 is not a class of this model \(3 classes\); pass --label=0..2"):
        inference.parse_labels("3", 3, rows=2, cols=2)
    with pytest.raises(ValueError, match="conditional"):
        inference.parse_labels(None, 3, rows=2, cols=2)
    assert inference.parse_labels(None, 0, rows=2, cols=2) == (None, 2)
    # An image folder's classes by name, and named in the error.
    labels, _ = inference.parse_labels("dogs", 2, rows=1, cols=2, class_names=("cats", "dogs"))
    assert labels.tolist() == [1, 1]
    with pytest.raises(ValueError, match=r"--label=cows is not a class of this model \(2 classes: 0 cats, 1 dogs\); "
                                         r"pass --label=0..1, a class name or --label=all"):
        inference.parse_labels("cows", 2, rows=1, cols=2, class_names=("cats", "dogs"))


def test_loss_curves_show_the_negative_elbo_beside_another_objective_and_name_epochs_not_finite(monkeypatch):
    figures = []
    monkeypatch.setattr(visualization, "_save_figure", lambda fig, path: figures.append(fig))
    history = {"loss": [220.0, 170.0], "val_loss": [177.0, 165.0], "val_negative_elbo": [170.5, 159.1],
               "kl": [8.0, 6.0], "val_kl": [6.5, float("inf")], "reconstruction": [200.0, 160.0],
               "bad_steps": [0.0, 2.0]}
    visualization.save_loss_curves_png("unused.png", history, "run", test={"loss": 166.0, "kl": 6.2})
    titles = {title: name for name, title in visualization.PANEL_TITLES.items()}  # Titled by what they show.
    panels = {titles[ax.get_title()]: [t.get_text() for t in ax.get_legend().get_texts()]
              for ax in figures[0].axes if ax.get_legend()}
    # The final model's test point beside the curves, in the panels it has a value for.
    assert panels["loss"] == ["train", "validation", "validation negative ELBO", "test (final model)"]
    assert panels["kl"] == ["train", "validation (not finite in epoch 2)", "test (final model)"]
    assert panels["reconstruction"] == ["train"]
    assert panels["bad_steps"] == ["train"]
    # The negative ELBO is the loss (beta 1): no second line; no skipped step: no bad_steps panel.
    figures.clear()
    visualization.save_loss_curves_png("unused.png", {**history, "val_negative_elbo": history["val_loss"],
                                                      "bad_steps": [0.0, 0.0]}, "run")
    panels = {titles[ax.get_title()]: [t.get_text() for t in ax.get_legend().get_texts()]
              for ax in figures[0].axes if ax.get_legend()}
    assert panels["loss"] == ["train", "validation"] and "bad_steps" not in panels


def test_a_restoration_models_reconstructions_show_corrupted_restored_and_clean_rows(mnist_dir, tmp_path, monkeypatch):
    captured = {}
    monkeypatch.setattr(visualization, "save_grid_png", lambda path, images, rows, cols, title, row_labels,
                        col_labels: captured.update(images=images, rows=rows, title=title, row_labels=row_labels,
                                                    col_labels=col_labels))
    loaded = restore.load_saved_model(os.path.join(REPO, "saved_models", "denoise_mnist"))
    # A scatter size beyond the test split: reconstructions alone read only their grid's images.
    plots.run(loaded, ["reconstructions"], str(tmp_path), mnist_dir, grid_size=6, scatter_examples=20000)
    assert captured["rows"] == 3 and captured["row_labels"] == ["corrupted", "restored", "clean"]
    corrupted, restored, clean = np.split(captured["images"], 3)
    # The restoration is nearer the clean digit than the corrupted input is.
    assert np.abs(restored - clean).mean() < 0.7 * np.abs(corrupted - clean).mean()
    # Trained on a mix, it is shown each kind of the mix in turn, each column named: before, columns were drawn at
    # random, some left clean, none named.
    assert "corrupted (mixed, one kind per column)" in captured["title"]
    assert captured["col_labels"] == ["left clean", "gaussian_noise", "gaussian_blur", "mask", "downsample",
                                      "left clean"]
    np.testing.assert_array_equal(corrupted[0], clean[0])
    assert all(np.abs(corrupted[i] - clean[i]).mean() > 0.01 for i in range(1, 5))


def test_a_conditional_models_samples_are_one_row_per_class_and_titles_say_what_a_decoded_image_is(monkeypatch,
                                                                                                  tmp_path):
    captured = []
    monkeypatch.setattr(visualization, "save_grid_png", lambda path, images, rows, cols, title, row_labels=None: (
        captured.append(dict(shape=images.shape, rows=rows, cols=cols, title=title, row_labels=row_labels))))
    for name in ("cvae_mnist", "mnist_best"):
        plots.run(restore.load_saved_model(os.path.join(REPO, "saved_models", name)), ["samples"], str(tmp_path),
                  grid_size=4)
    conditional, autoregressive = captured
    assert (conditional["rows"], conditional["cols"], conditional["shape"][0]) == (10, 4, 40)
    assert conditional["row_labels"] == [f"class {c}" for c in range(10)]
    assert conditional["title"].endswith("seed 0, one row per class")
    # The autoregressive likelihood's mean has no closed form: its decoded image is not called a sample's mean.
    assert "mean-field image of p(x|z)" in autoregressive["title"] and autoregressive["row_labels"] is None
