"""Every picture of `scripts/plot.py`: what each plot needs from a loaded model and the test set, drawn by
`tfvae.visualization` into one PNG per kind."""

import os

import numpy as np
import tensorflow as tf

from tfvae import config, corruption, data, evaluation, export, inference, summaries, visualization

INTERPOLATION_PAIRS = 3
INTERPOLATION_STEPS = 8


def applicable_kinds(loaded, requested, history_folder):
    """The plot kinds to draw, checked before any work, and {kind: why not} of those "all" leaves out.

    `requested`: kind names, or "all" for every kind this model supports.

    Raises:
      ValueError: a requested kind does not apply to this model, naming why.
    """
    reasons = {}
    if not loaded.signatures:  # A run folder's files alone (restore.load_run_files).
        reasons.update({kind: "the run has no checkpoint yet" for kind in config.PLOT_KINDS
                        if kind not in FROM_FILES_ALONE})
    if loaded.latent_dim != 2:
        reasons.setdefault("manifold", f"the manifold needs a 2-D latent; this model has latent_dim="
                                       f"{loaded.latent_dim}")
    if not loaded.num_classes:
        reasons.setdefault("class_grid", "the class grid needs a conditional model (--model=cvae)")
    try:
        summaries.read_history(history_folder)
    except ValueError as e:
        reasons["loss_curves"] = str(e)
    if "all" in requested:
        kinds = [kind for kind in config.PLOT_KINDS if kind not in reasons]
        if not kinds:
            raise ValueError("no plot applies: " + "; ".join(f"{kind}: {why}" for kind, why in reasons.items()))
        return kinds, reasons
    for kind in requested:
        if kind in reasons:
            raise ValueError(f"--kinds={kind}: {reasons[kind]}; drop it from --kinds")
    return list(requested), {}


def _name(loaded):
    return export.model_name(loaded.metadata)


def _images(loaded, x):
    return visualization.as_images(np.asarray(x), loaded.metadata["image_shape"])


def _class_row_labels(loaded):
    return [f"class {data.class_label(loaded.metadata, c)}" for c in range(loaded.num_classes)]


def plot_samples(loaded, path, grid_size, seed, **_):
    """grid_size rows of grid_size; for a conditional model one row per class, each cell a z of its own (the
    class grid holds z fixed down its columns)."""
    rows = loaded.num_classes or grid_size
    z = np.random.default_rng(seed).standard_normal((rows * grid_size, loaded.latent_dim)).astype(np.float32)
    labels = np.repeat(np.arange(rows, dtype=np.int32), grid_size) if loaded.num_classes else None
    visualization.save_grid_png(path, _images(loaded, loaded.decode(z, labels)), rows, grid_size,
                                f"{_name(loaded)}: {inference.decoded_images_are(loaded.metadata)}, z ~ N(0, I), "
                                f"seed {seed}" + (", one row per class" if loaded.num_classes else ""),
                                row_labels=_class_row_labels(loaded) if loaded.num_classes else None)


def load_test_images(loaded, data_dir, seed, asked, pool=0):
    """The first test images prepared as the model was trained on them (binarized, seeded, if it was): as many as
    the largest count in `asked` ({flag name: count}; more than the test split is refused, naming that flag), or
    `pool` when that is more, as far as the split goes.

    Returns:
      (x float32 `[n, *input_shape]` in [0, 1], labels int32 `[n]`, a phrase naming the images for titles).
    """
    trained_on = loaded.metadata.get("binarize", "none")
    flag = max(asked, key=asked.get)
    # All of the split (binarized whole either way), then as many as the kinds take.
    x, labels, split_size = evaluation.load_split(loaded.metadata, data_dir, "test", trained_on, seed)
    evaluation.refuse_more_than(split_size, asked[flag], flag)
    count = max(asked[flag], min(pool, split_size))
    return x[:count], labels[:count], inference.test_images_are(loaded.metadata, seed)


def plot_reconstructions(loaded, path, grid_size, x, labels, images_are, seed=0, **_):
    count = min(grid_size, len(x))
    kind = loaded.metadata.get("corruption", "none")
    if kind != "none":  # A restoration model: what it was trained on, corrupted in, restored out, the clean target.
        clean = tf.constant(x[:count], tf.float32)
        strength, seed_pair = loaded.metadata.get("corruption_strength"), tf.constant([seed, 3], tf.int64)
        image_shape, columns = tuple(loaded.metadata["image_shape"]), None
        if kind == "mixed":  # Each column one of the kinds it was trained on, named below it.
            corrupted, columns = corruption.corrupt_one_kind_each(clean, strength, seed_pair, image_shape)
        else:
            corrupted = corruption.corrupt(clean, kind, strength, seed_pair, image_shape=image_shape)
        corrupted = corrupted.numpy()
        restored = loaded.decode(loaded.encode(corrupted, labels[:count])[0], labels[:count])
        images = np.concatenate([_images(loaded, corrupted), _images(loaded, restored), _images(loaded, x[:count])])
        how = f"{kind}, one kind per column" if columns else kind
        visualization.save_grid_png(path, images, 3, count, f"{_name(loaded)}: {images_are} corrupted ({how}), "
                                    f"restored ({inference.decoded_images_are(loaded.metadata, 'z_mean')}), clean",
                                    row_labels=["corrupted", "restored", "clean"], col_labels=columns)
        return
    z_mean, _ = loaded.encode(x[:count], labels[:count])
    reconstructions = loaded.decode(z_mean, labels[:count])
    images = np.concatenate([_images(loaded, x[:count]), _images(loaded, reconstructions)])
    visualization.save_grid_png(path, images, 2, count, f"{_name(loaded)}: {images_are} and reconstructions "
                                f"({inference.decoded_images_are(loaded.metadata, 'z_mean')})",
                                row_labels=["original", "reconstruction"])


def plot_manifold(loaded, path, grid_size, **_):
    z, values = visualization.gaussian_quantile_grid(grid_size)
    labels = np.zeros(len(z), np.int32) if loaded.num_classes else None
    note = ", class 0" if loaded.num_classes else ""
    visualization.save_manifold_png(path, _images(loaded, loaded.decode(z, labels)), values,
                                    f"{_name(loaded)}: 2-D latent manifold, "
                                    f"{inference.decoded_images_are(loaded.metadata)}{note}")


def encode_all(loaded, x, labels, batch_size=500):
    """(z_mean, z_logvar) of every example, each `[n, latent_dim]`."""
    parts = [loaded.encode(x[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return tuple(np.concatenate([part[k].numpy() for part in parts]) for k in (0, 1))


def plot_latent_scatter(loaded, path, x, labels, scatter_examples, images_are, **_):
    n = min(scatter_examples, len(x))
    z_mean, _ = encode_all(loaded, x[:n], labels[:n])
    how = "" if loaded.latent_dim <= 2 else f", PCA of {loaded.latent_dim}-D"
    # The encoder of a conditional model is given the label, so z holds the style and the classes overlap.
    given = "\nclasses overlap: given the label, z holds the style" if loaded.num_classes else ""
    visualization.save_latent_scatter_png(path, z_mean, labels[:n],
                                          f"{_name(loaded)}: z_mean of {n} {images_are} by label{how}{given}",
                                          lambda label: data.class_label(loaded.metadata, label))


def interpolation_pairs(labels, conditional, seed):
    """INTERPOLATION_PAIRS (a, b) indices into the first PLOT_POOL examples, chosen with `seed`:
    the same pairs whatever else a plot.py run draws. A conditional model decodes with one label, so its pairs
    share it (the path morphs style, not class); an unconditional model's pairs are of two classes."""
    labels = labels[:config.PLOT_POOL]
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(INTERPOLATION_PAIRS):
        a = int(rng.integers(len(labels)))
        pair_with = labels == labels[a] if conditional else labels != labels[a]
        others = np.flatnonzero(pair_with & (np.arange(len(labels)) != a))
        pairs.append((a, int(rng.choice(others)) if len(others) else int(rng.integers(len(labels)))))
    return pairs


def interpolation_row_labels(metadata, labels, pairs):
    """Each interpolation row named by the classes of its ends ("7 -> 1", "0 cats -> 1 dogs"; one class once, as a
    conditional model's pairs share it), or None for an unlabelled image folder, whose rows are then numbered."""
    if data.num_classes(metadata.get("dataset"), metadata.get("class_names") or ()) < 2:
        return None
    ends = [[data.class_label(metadata, int(labels[i])) for i in pair] for pair in pairs]
    return [" -> ".join(names) if names[0] != names[1] else names[0] for names in ends]


def plot_interpolation(loaded, path, x, labels, seed, images_are, **_):
    rows = []
    pairs = interpolation_pairs(labels, bool(loaded.num_classes), seed)
    for a, b in pairs:
        z_mean, _ = loaded.encode(x[[a, b]], labels[[a, b]])
        z_mean = z_mean.numpy()
        t = np.linspace(0.0, 1.0, INTERPOLATION_STEPS, dtype=np.float32)[:, None]
        z = (1.0 - t) * z_mean[0] + t * z_mean[1]
        steps = loaded.decode(z, np.full(len(z), labels[a], np.int32))
        rows.append(np.concatenate([_images(loaded, x[[a]]), _images(loaded, steps), _images(loaded, x[[b]])]))
    note = " of one class, decoded with its label" if loaded.num_classes else ""
    visualization.save_interpolation_png(path, rows, f"{_name(loaded)}: linear interpolation between the "
                                         f"z_mean of two {images_are}{note}",
                                         interpolation_row_labels(loaded.metadata, labels, pairs))


def traversal_dimensions(z_mean, z_logvar, count):
    """The `count` latent dimensions of most KL(q(z_u|x) || N(0, 1)), averaged over the examples, most first.

    Returns:
      (dimension indices int `[count]`, the mean KL of every dimension float `[latent_dim]`, nats).
    """
    kl = 0.5 * np.mean(np.square(z_mean) + np.exp(z_logvar) - z_logvar - 1.0, axis=0)
    return np.argsort(-kl, kind="stable")[:count], kl


def plot_traversal(loaded, path, grid_size, x, labels, seed, images_are, **_):
    """One test image's z_mean with one latent dimension at a time set to `grid_size` quantiles of N(0, 1) (5% to
    95%): a row per dimension, the dimensions of most KL over the pool first (the ones the model uses)."""
    pool = min(config.PLOT_POOL, len(x))
    z_mean, z_logvar = encode_all(loaded, x[:pool], labels[:pool])
    dimensions, kl = traversal_dimensions(z_mean, z_logvar, min(loaded.latent_dim, grid_size))
    index = int(np.random.default_rng(seed).integers(pool))
    _, values = visualization.gaussian_quantile_grid(grid_size)
    z = np.repeat(z_mean[index][None], len(dimensions) * grid_size, axis=0)
    for row, dimension in enumerate(dimensions):
        z[row * grid_size:(row + 1) * grid_size, dimension] = values
    decoded = loaded.decode(z, np.full(len(z), labels[index], np.int32))
    row_labels = [f"z[{d}]: KL {kl[d]:.2f}, here {z_mean[index, d]:+.2f}" for d in dimensions]
    visualization.save_grid_png(
        path, _images(loaded, decoded), len(dimensions), grid_size,
        f"{_name(loaded)}: latent traversal of test image {index}"
        + (f", decoded with its label {data.class_label(loaded.metadata, labels[index])}"
           if loaded.num_classes else "") + "\n"
        f"({inference.decoded_images_are(loaded.metadata)}); each row sets one dimension\n"
        f"to the column's N(0, 1) quantile, the others at the image's z_mean;\n"
        f"rows by mean KL (nats) over {pool:,} {images_are}",
        row_labels=row_labels, col_labels=[f"{round(float(v), 2) + 0.0:.2f}" for v in values])


def plot_loss_curves(loaded, path, history_folder, **_):
    history = summaries.read_history(history_folder)
    trained_on = loaded.metadata.get("binarize", "none")  # The curves are of the training data.
    is_density = evaluation.likelihood_is_density(loaded.metadata, trained_on)
    units = "nats per example" if is_density else "loss per example"
    epochs = max(len(values) for values in history.values())
    test, tested_epoch = summaries.read_final_test(history_folder, epochs)
    visualization.save_loss_curves_png(path, history, f"{_name(loaded)}: training curves", units, test=test,
                                       tested_epoch=tested_epoch)


def plot_class_grid(loaded, path, grid_size, seed, **_):
    classes = loaded.num_classes
    # The same z in every row, so rows differ only by the class (style held fixed across classes).
    z = np.random.default_rng(seed).standard_normal((grid_size, loaded.latent_dim)).astype(np.float32)
    z = np.tile(z, (classes, 1))
    labels = np.repeat(np.arange(classes, dtype=np.int32), grid_size)
    visualization.save_grid_png(path, _images(loaded, loaded.decode(z, labels)), classes, grid_size,
                                f"{_name(loaded)}: one row per class, same z per column",
                                row_labels=_class_row_labels(loaded))


PLOTTERS = {
    "samples": plot_samples,
    "reconstructions": plot_reconstructions,
    "manifold": plot_manifold,
    "latent_scatter": plot_latent_scatter,
    "interpolation": plot_interpolation,
    "traversal": plot_traversal,
    "loss_curves": plot_loss_curves,
    "class_grid": plot_class_grid,
}
NEEDS_DATA = ("reconstructions", "latent_scatter", "interpolation", "traversal")
# Drawn from the first config.PLOT_POOL test images, or all when the split is smaller.
FROM_THE_POOL = ("interpolation", "traversal")
# Drawn from a run's files alone: a run folder needs no checkpoint for these.
FROM_FILES_ALONE = ("loss_curves",)


def need_a_model(kinds):
    """Whether drawing `kinds` ("all" or names of PLOTTERS) needs the model's weights."""
    return any(kind not in FROM_FILES_ALONE for kind in kinds)


def run(loaded, kinds, output_dir, data_dir="", seed=0, grid_size=8, scatter_examples=None, on_written=None):
    """Draws `kinds` ("all" or names of PLOTTERS) of `loaded` into `output_dir/KIND.png`.

    `scatter_examples`: the latent scatter's test images; None for config.PLOT_SCATTER_EXAMPLES, or all when the
    test split is smaller (a number asked for beyond the split is refused).

    Test images are prepared as the model was trained on them (`load_test_images`). `on_written(kind, path)` is
    called as each file is in place, so a failure later still leaves the earlier ones reported.

    Returns:
      ({kind: path} of the files written, {kind: why not} of the kinds "all" left out).
    """
    history_folder = loaded.source
    kinds, left_out = applicable_kinds(loaded, kinds, history_folder)
    inputs = dict(grid_size=grid_size, seed=seed, scatter_examples=scatter_examples or config.PLOT_SCATTER_EXAMPLES,
                  history_folder=history_folder)
    if any(kind in NEEDS_DATA for kind in kinds):
        # The first test images, as many as the kinds drawn take: reconstructions --grid_size, the scatter
        # --scatter_examples, the interpolation and the traversal the pool.
        asked = {"grid_size": grid_size}
        pool = config.PLOT_POOL if any(kind in FROM_THE_POOL for kind in kinds) else 0
        if "latent_scatter" in kinds and scatter_examples:
            asked["scatter_examples"] = scatter_examples
        elif "latent_scatter" in kinds:
            pool = max(pool, config.PLOT_SCATTER_EXAMPLES)
        inputs["x"], inputs["labels"], inputs["images_are"] = load_test_images(loaded, data_dir, seed, asked, pool)
    written = {}
    for kind in kinds:
        path = os.path.join(output_dir, f"{kind}.png")
        PLOTTERS[kind](loaded, path, **inputs)
        written[kind] = path
        if on_written:
            on_written(kind, path)
    return written, left_out
