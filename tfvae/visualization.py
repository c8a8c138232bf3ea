"""Pictures of a VAE: sample grids, reconstructions, latent manifold and scatter, interpolations and loss curves,
as arrays and titled PNG files."""

from statistics import NormalDist

import matplotlib

matplotlib.use("Agg")  # Files only; no display is needed or assumed.
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from tfvae import artifacts  # noqa: E402


def as_images(x, image_shape):
    """Reshapes flat or image batches to `[n, H, W, C]` float in [0, 1]."""
    return np.clip(np.asarray(x, np.float32).reshape((-1, *image_shape)), 0.0, 1.0)


def tile_images(images, rows, cols, pad=1):
    """Tiles `[rows*cols, H, W, C]` images into one `[rows*(H+pad)-pad, cols*(W+pad)-pad, C]` array."""
    n, height, width, channels = images.shape
    if n != rows * cols:
        raise ValueError(f"{n} images do not fill a {rows}x{cols} grid")
    grid = np.ones((rows * (height + pad) - pad, cols * (width + pad) - pad, channels), np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * (height + pad):r * (height + pad) + height, c * (width + pad):c * (width + pad) + width] = image
    return grid


def _save_figure(fig, path):
    artifacts.write_bytes_with(path, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
    plt.close(fig)


def _show_grid(ax, grid):
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0.0, vmax=1.0,
              interpolation="nearest")


def save_grid_png(path, images, rows, cols, title, row_labels=None, col_labels=None):
    """Saves a titled grid of `[rows*cols, H, W, C]` images in [0, 1] as a PNG (atomically), with optional labels
    of its rows (left) and columns (below)."""
    grid = tile_images(images, rows, cols)
    height = images.shape[1]
    width = max(3.0, cols * 0.75)
    fig, ax = plt.subplots(figsize=(width, max(3.0, rows * 0.75 + 0.6)), dpi=100)
    _show_grid(ax, grid)
    # Text grows with a wide grid (64 columns are 48 inches), where 10 points would be a speck above it.
    scale = max(1.0, width / 8)
    ax.set_title(title, fontsize=10 * scale)
    if col_labels:
        ax.set_xticks([c * (images.shape[2] + 1) + images.shape[2] / 2 for c in range(cols)], col_labels,
                      fontsize=8 * scale, rotation=90)
    else:
        ax.set_xticks([])
    if row_labels:
        ax.set_yticks([r * (height + 1) + height / 2 for r in range(rows)], row_labels, fontsize=8 * scale)
    else:
        ax.set_yticks([])
    fig.tight_layout()
    _save_figure(fig, path)


def gaussian_quantile_grid(grid_size, low=0.05, high=0.95):
    """Grid of 2-D latent points at equally spaced quantiles of N(0, 1) on each axis, as Kingma & Welling's Fig. 4.

    Returns:
      (z float32 `[grid_size**2, 2]` in row-major order, top row = largest z[1]; values `[grid_size]` per axis).
    """
    quantiles = np.linspace(low, high, grid_size)
    values = np.array([NormalDist().inv_cdf(q) for q in quantiles], np.float32)
    z1, z0 = np.meshgrid(values[::-1], values, indexing="ij")
    return np.stack([z0.ravel(), z1.ravel()], axis=1), values


def save_manifold_png(path, images, values, title):
    """Saves images decoded over `gaussian_quantile_grid` with the z values on the axes.

    Args:
      path: PNG file to write.
      images: `[G*G, H, W, C]` in [0, 1], row-major, top row = largest z[1].
      values: `[G]` z values of the grid columns (and, reversed, rows).
      title: the figure's title.
    """
    grid_size = len(values)
    height, width = images.shape[1:3]
    grid = tile_images(images, grid_size, grid_size)
    fig, ax = plt.subplots(figsize=(max(4.0, grid_size * 0.6), max(4.0, grid_size * 0.6 + 0.4)), dpi=100)
    _show_grid(ax, grid)
    ticks = np.arange(grid_size)
    names = [f"{round(float(v), 2) + 0.0:.2f}" for v in values]  # + 0.0 turns -0.00 into 0.00
    ax.set_xticks(ticks * (width + 1) + width / 2, names, fontsize=7, rotation=90)
    ax.set_yticks(ticks * (height + 1) + height / 2, names[::-1], fontsize=7)
    ax.set_xlabel("z[0] (Gaussian quantiles)")
    ax.set_ylabel("z[1] (Gaussian quantiles)")
    ax.set_title(title, fontsize=10)
    _save_figure(fig, path)


def project_2d(z):
    """`[n, L]` -> (`[n, 2]`, axis names): z itself when L <= 2, else its first two principal components (PCA)."""
    z = np.asarray(z, np.float64)
    if z.shape[1] == 1:
        return np.concatenate([z, np.zeros_like(z)], axis=1), ["z[0]", "(none)"]
    if z.shape[1] == 2:
        return z, ["z[0]", "z[1]"]
    centered = z - z.mean(axis=0)
    _, singular_values, components = np.linalg.svd(centered, full_matrices=False)
    explained = np.square(singular_values) / np.square(singular_values).sum()
    return centered @ components[:2].T, [f"PC{i + 1} of z_mean ({100 * explained[i]:.0f}% of variance)"
                                         for i in range(2)]


def save_latent_scatter_png(path, z_mean, labels, title, label_names=str):
    """Scatter of `z_mean` `[n, L]` coloured by integer `labels` `[n]` (PCA to 2-D when L > 2), with a legend
    naming each label by `label_names(label)`."""
    points, axis_names = project_2d(z_mean)
    fig, ax = plt.subplots(figsize=(6.5, 5.5), dpi=100)
    cmap = plt.get_cmap("tab10")
    for label in np.unique(labels):
        mask = labels == label
        ax.scatter(points[mask, 0], points[mask, 1], s=4, alpha=0.6, color=cmap(int(label) % 10),
                   label=label_names(int(label)))
    ax.legend(title="label", markerscale=3, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    _save_figure(fig, path)


def save_interpolation_png(path, rows, title, row_labels=None):
    """Saves interpolation rows: each `[steps + 2, H, W, C]` is original A, decoded steps, original B; rows are
    labelled by `row_labels` or "pair N"."""
    steps = len(rows[0])
    images = np.concatenate(rows)
    grid = tile_images(images, len(rows), steps)
    height, width = images.shape[1:3]
    fig, ax = plt.subplots(figsize=(max(5.0, steps * 0.7), max(2.0, len(rows) * 0.8 + 0.6)), dpi=100)
    _show_grid(ax, grid)
    fractions = np.linspace(0.0, 1.0, steps - 2)
    ax.set_xticks(np.arange(steps) * (width + 1) + width / 2,
                  ["A"] + [f"{t:.2f}" for t in fractions] + ["B"], fontsize=7)
    ax.set_xlabel("original A | decoded (1 - t) z_A + t z_B, t as marked | original B")
    ax.set_yticks([r * (height + 1) + height / 2 for r in range(len(rows))],
                  row_labels or [f"pair {r + 1}" for r in range(len(rows))], fontsize=7)
    ax.set_title(title, fontsize=10)
    _save_figure(fig, path)


def _differs(values, others):
    """Whether two per-epoch series (None: not logged) differ anywhere both are logged."""
    return bool(values) and bool(others) and any(
        a is not None and b is not None and not np.isclose(a, b, rtol=1e-6, equal_nan=True)
        for a, b in zip(values, others))


# The loss curves' panels by what they show, not by their metric's name.
PANEL_TITLES = {"loss": "loss", "reconstruction": "reconstruction, -log p(x|z)", "kl": "KL(q(z|x) || p(z))",
                "grad_norm": "gradient norm (global L2)", "examples_per_second": "training speed",
                "learning_rate": "learning rate", "bad_steps": "skipped (non-finite) steps"}
PANEL_UNITS = {"grad_norm": "L2 norm, mean over steps", "examples_per_second": "examples per second",
               "bad_steps": "steps per epoch"}


def save_loss_curves_png(path, history, title, units="nats per example", test=None, tested_epoch=None):
    """Plots per-epoch curves of `history` ({"loss": [...], "val_loss": [...], "kl": [...], ...}; None = not logged).

    One panel per quantity (loss, reconstruction, kl, then grad_norm and examples_per_second when logged, the
    learning rate when it changed, and bad_steps when a step was skipped), training solid and validation dashed;
    the loss panel adds the validation negative ELBO where the loss is another objective (--beta, --free_bits,
    iwae). A value that is not finite (a diverged run) cannot be drawn: its series' legend names the epochs.
    `test` (the final model's test metrics, {"loss": ...}) adds a point at the last epoch of each panel it has, or
    at `tested_epoch` when the model tested is that epoch's (--keep_best).
    """
    names = [k for k in ("loss", "reconstruction", "kl") if k in history]
    names += sorted(k for k in history if not k.startswith("val_") and k not in names
                    and k in ("grad_norm", "examples_per_second"))
    # The learning rate only where it changed (a resume with another --learning_rate): a constant says nothing.
    if len({v for v in history.get("learning_rate", []) if v is not None}) > 1:
        names.append("learning_rate")
    if any(v for v in history.get("bad_steps", []) if v is not None):
        names.append("bad_steps")
    if not names:
        raise ValueError("the run's history has no loss values to plot")
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.4 * rows), dpi=100, squeeze=False)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    num_epochs = max(len(values) for values in history.values())
    for ax, name in zip(axes.ravel(), names):
        series = [(name, "-", "train"), (f"val_{name}", "--", "validation")]
        if name == "loss" and _differs(history.get("val_negative_elbo"), history.get("val_loss")):
            series.append(("val_negative_elbo", ":", "validation negative ELBO"))
        for key, style, label in series:
            values = history.get(key)
            if values:
                values = np.array([np.nan if v is None else v for v in values], np.float64)
                not_finite = [str(epoch + 1) for epoch, v in enumerate(history[key])
                              if v is not None and not np.isfinite(v)]
                if not_finite:
                    label += f" (not finite in epoch {', '.join(not_finite)})"
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, marker="o" if len(values) < 20 else None, markersize=3, label=label)
        if test and isinstance(test.get(name), (int, float)) and np.isfinite(test[name]):
            kept = tested_epoch is not None and tested_epoch != num_epochs
            ax.plot([tested_epoch if kept else num_epochs], [test[name]], "k*", markersize=9,
                    label=f"test (epoch {tested_epoch}'s weights, the best)" if kept else "test (final model)")
        # Whole epochs only, one tick at least: with fewer than two integers in view matplotlib falls back to
        # fractional ticks.
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlim(0.5, num_epochs + 0.5)
        ax.set_xlabel("epoch")
        # The KL is between two densities of z, in nats whatever p(x|z) is.
        ax.set_ylabel("nats per example" if name == "kl" else units if name in ("loss", "reconstruction") else
                      PANEL_UNITS.get(name, name))
        ax.set_title(PANEL_TITLES.get(name, name))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save_figure(fig, path)
