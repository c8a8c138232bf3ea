"""How much an exported VAE restores corrupted test images: PSNR and SSIM against the clean ones, before and after."""

import math

import numpy as np
import tensorflow as tf

from tfvae import corruption, data, enhance, export, visualization
from tfvae.config import CORRUPTION_KINDS, CORRUPTION_UNITS, DEFAULT_CORRUPTION_STRENGTH

BATCH_SIZE = 500
GRID_COLUMNS = 8


def kinds_to_measure(metadata, requested=()):
    """{kind: strength}: the requested kinds (default: those the model was trained on, all four for "none" or
    "mixed"), each at the strength the model was trained with, else its default."""
    trained = corruption.kind_strengths(metadata.get("corruption", "none"), metadata.get("corruption_strength", 0))
    kinds = requested or (tuple(trained) if len(trained) == 1 else CORRUPTION_KINDS)
    return {kind: trained.get(kind, DEFAULT_CORRUPTION_STRENGTH[kind]) for kind in kinds}


def _scores(images, clean):
    """Per-example PSNR (dB) and SSIM of `[n, H, W, C]` images against clean ones, pixels in [0, 1]."""
    images, clean = tf.constant(images), tf.constant(clean)
    return tf.image.psnr(images, clean, max_val=1.0).numpy(), tf.image.ssim(images, clean, max_val=1.0).numpy()


def _summary(psnr, ssim):
    # An identical pair has infinite PSNR; report the mean over finite values (infinite if every pair is identical)
    # and how many were dropped.
    finite = np.isfinite(psnr)
    psnr_db = float(psnr[finite].mean()) if finite.any() else math.inf
    return {"psnr_db": psnr_db, "ssim": float(ssim.mean()), "identical": int((~finite).sum())}


def evaluate_restoration(saved_model, data_dir, kinds=(), num_examples=10000, seed=0):
    """Measures restoration on `num_examples` test images of the model's dataset (all, or chosen at random with
    `seed`: `data.seeded_subset`).

    Each kind corrupts the clean images (seeded, as in training); "corrupted" compares the corrupted images with
    the clean ones, "restored" the model's reconstructions of the corrupted images. "clean_input" is the
    reconstruction of uncorrupted images, the model's ceiling.

    Args:
      saved_model: a tfvae SavedModel folder; only its `reconstruct` signature is used.
      data_dir: MNIST_data/ IDX folder or TFDS data dir.
      kinds: corruption kinds to measure; empty: see `kinds_to_measure`.
      num_examples: test images used.
      seed: seeds the corruptions and the choice of images.

    Returns:
      (results dict ready for JSON, grid images `[rows * min(GRID_COLUMNS, n), H, W, C]`, row labels).
    """
    saved, metadata = export.load_saved_model(saved_model)
    image_shape = tuple(metadata["image_shape"])
    arrays = data.load_model_arrays(metadata, data_dir, validation_size=0)
    if num_examples > len(arrays.test_images):
        # Else it would measure fewer images than asked, and say so only inside the JSON.
        raise ValueError(f"--num_examples={num_examples} is more than the {len(arrays.test_images):,} test images of "
                         f"{metadata['dataset']}; pass at most {len(arrays.test_images)}")
    chosen = data.seeded_subset(num_examples, len(arrays.test_images), seed)
    images, labels = arrays.test_images[chosen], arrays.test_labels[chosen]
    clean = data.to_unit_float(images).numpy()
    restored_clean = enhance.restore_images(saved, metadata, clean)
    results = {
        "saved_model": saved_model,
        "model_name": export.model_name(metadata),
        "dataset": metadata["dataset"],
        # IDX files and TFDS order the test images differently, so the seeded subset differs between them.
        "data_source": data.describe_source(metadata["dataset"], data.model_data_dir(metadata, data_dir)),
        "split": "test",
        "num_examples": len(images),
        "seed": seed,
        "psnr_db_means": "the mean over images of each image's PSNR (not the PSNR of the mean squared error)",
        "trained_corruption": metadata.get("corruption", "none"),
        "trained_corruption_strength": metadata.get("corruption_strength", 0.0),
        "trained_corruption_strength_unit": CORRUPTION_UNITS.get(metadata.get("corruption", "none"), ""),
        "identical_means": "images equal to their clean original (infinite PSNR), left out of psnr_db's mean",
        "clean_input": {"restored": _summary(*_scores(restored_clean, clean))},
        "corruptions": {},
    }
    grid, row_labels = [clean[:GRID_COLUMNS]], ["clean"]
    held = [data.hold_on_host(array) for array in (images, labels)]  # One copy for every corruption's pipeline.
    for kind, strength in kinds_to_measure(metadata, kinds).items():
        corrupt_fn = corruption.make_corrupt_fn(kind, strength, image_shape)
        # The training pipeline's own corruption path, seeded per batch.
        pipeline = data.make_pipeline(*held, BATCH_SIZE, seed=seed, corrupt_fn=corrupt_fn)
        corrupted = np.concatenate([batch["input"].numpy() for batch in pipeline])
        restored = enhance.restore_images(saved, metadata, corrupted)
        before, after = _summary(*_scores(corrupted, clean)), _summary(*_scores(restored, clean))
        results["corruptions"][kind] = {
            "strength": strength,
            "strength_unit": CORRUPTION_UNITS[kind],
            "corrupted": before,
            "restored": after,
            "psnr_gain_db": after["psnr_db"] - before["psnr_db"],
            "ssim_gain": after["ssim"] - before["ssim"],
        }
        grid += [corrupted[:GRID_COLUMNS], restored[:GRID_COLUMNS]]
        row_labels += [f"{kind} {strength:g}", "restored"]
    return results, np.concatenate(grid), row_labels


def save_grid(path, grid, row_labels, model_name):
    """Clean test images, then corrupted and restored rows per kind, as one PNG titled with the model's name."""
    visualization.save_grid_png(path, grid, len(row_labels), len(grid) // len(row_labels),
                                f"{model_name}: clean, then corrupted / restored per kind", row_labels=row_labels)
