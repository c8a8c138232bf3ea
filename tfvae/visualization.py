"""Pictures of a VAE: sample grids and originals above reconstructions, as arrays and titled PNG files."""

import matplotlib

matplotlib.use("Agg")  # Files only; no display is needed or assumed.
import matplotlib.pyplot as plt  # noqa: E402
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


def save_grid_png(path, images, rows, cols, title, row_labels=None):
    """Saves a titled grid of `[rows*cols, H, W, C]` images in [0, 1] as a PNG (atomically)."""
    grid = tile_images(images, rows, cols)
    height = images.shape[1]
    fig, ax = plt.subplots(figsize=(max(3.0, cols * 0.75), max(3.0, rows * 0.75 + 0.6)), dpi=100)
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0.0, vmax=1.0,
              interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    if row_labels:
        ax.set_yticks([r * (height + 1) + height / 2 for r in range(rows)], row_labels, fontsize=8)
    else:
        ax.set_yticks([])
    fig.tight_layout()
    artifacts.write_bytes_with(path, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"), suffix=".png")
    plt.close(fig)
