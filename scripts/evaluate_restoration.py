r"""Measures restoration on the test set: PSNR / SSIM of corrupted vs clean and of restored vs clean, as JSON.

    python scripts/evaluate_restoration.py --saved_model=saved_models/denoise_mnist --data_dir=PATH/MNIST_data \
        --output=saved_models/denoise_mnist/restoration.json --grid=restoration.png
"""

import sys

from tfvae import cli, config

config.define_restoration_flags()


def main(argv):
    del argv  # parse_flags_or_exit refuses stray arguments.
    from tfvae import artifacts, data, enhance, export, restoration

    cfg = config.restoration_config_from_flags()
    try:
        results, grid, row_labels = restoration.evaluate_restoration(
            cfg.saved_model, cfg.data_dir, cfg.corruptions, cfg.num_examples, cfg.seed)
    except (export.ExportError, data.DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    # The table and its picture together or neither.
    writes = [(cfg.output, lambda tmp: artifacts.write_json(tmp, results))]
    if cfg.grid:
        writes.append((cfg.grid, lambda tmp: restoration.save_grid(tmp, grid, row_labels, results["model_name"])))
    artifacts.write_all_or_none(writes)
    print(f"{'corruption':<16} {'strength':>8}  {'PSNR dB before -> after':>24}  {'SSIM before -> after':>21}")
    for kind, row in results["corruptions"].items():
        before, after = row["corrupted"], row["restored"]
        print(f"{kind:<16} {row['strength']:>8g}  {before['psnr_db']:>11.2f} -> {after['psnr_db']:<9.2f}"
              f"  {before['ssim']:>10.3f} -> {after['ssim']:<7.3f}")
    print(f"clean input: restored PSNR {results['clean_input']['restored']['psnr_db']:.2f} dB, "
          f"SSIM {results['clean_input']['restored']['ssim']:.3f}; wrote {cfg.output}"
          + (f" and {cfg.grid}" if cfg.grid else ""))
    note = enhance.untrained_for_restoration(export.load_metadata(cfg.saved_model))
    if note:
        print(note, file=sys.stderr)


if __name__ == "__main__":
    cli.run_main(main)
