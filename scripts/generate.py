"""Draws a grid of samples (or reconstructions) from an exported SavedModel to a PNG.

    python scripts/generate.py --saved_model=saved_models/tf1_tutorial --output=samples.png
    python scripts/generate.py --saved_model=saved_models/mnist_best --pixels=sample --output=drawn.png
    python scripts/generate.py --saved_model=saved_models/tf1_tutorial --reconstruct --data_dir=PATH/MNIST_data
"""

import sys

import numpy as np
from tfvae import cli, config

config.define_generate_flags()


def main(argv):
    del argv  # parse_flags_or_exit refuses stray arguments.
    from tfvae import data, export, inference, visualization

    cfg = config.generate_config_from_flags()
    try:
        saved, metadata = export.load_saved_model(cfg.saved_model)
        if cfg.reconstruct:
            # A conditional model reconstructs each test image with that image's own label.
            originals, reconstructions = inference.reconstruct_test_images(
                saved, metadata, cfg.data_dir, cfg.rows * cfg.cols, seed=cfg.seed)
            title = (f"{export.model_name(metadata)}: {inference.test_images_are(metadata, cfg.seed)} and "
                     f"reconstructions")
            # Each row of originals above the row of their reconstructions.
            pairs = [rows[start:start + cfg.cols] for start in range(0, cfg.rows * cfg.cols, cfg.cols)
                     for rows in (originals, reconstructions)]
            visualization.save_grid_png(cfg.output, np.concatenate(pairs), 2 * cfg.rows, cfg.cols, title,
                                        row_labels=["original", "reconstruction"] * cfg.rows)
        else:
            labels, rows = inference.parse_labels(cfg.label, metadata.get("num_classes", 0), cfg.rows, cfg.cols,
                                                  tuple(metadata.get("class_names") or ()))
            if cfg.pixels == "sample":
                samples = inference.draw_samples(saved, metadata, cfg.saved_model, rows, cfg.cols, cfg.seed, labels)
                images_are = inference.drawn_images_are(metadata)
            else:
                samples = inference.decode_samples(saved, metadata, rows, cfg.cols, cfg.seed, labels)
                images_are = inference.decoded_images_are(metadata)
            row_labels = ([data.class_label(metadata, int(label)) for label in labels[::cfg.cols]]
                          if cfg.label == "all" else None)
            visualization.save_grid_png(cfg.output, samples, rows, cfg.cols,
                                        f"{export.model_name(metadata)}: {images_are}, z ~ N(0, I), seed {cfg.seed}"
                                        + (f", label {data.class_label(metadata, int(labels[0]))}"
                                           if cfg.label not in (None, "all") else ""),
                                        row_labels=row_labels)
    except (export.ExportError, data.DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"Wrote {cfg.output}")


if __name__ == "__main__":
    cli.run_main(main)
