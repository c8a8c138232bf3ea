"""Restores image files (denoise / deblur / enhance) through an exported SavedModel's `reconstruct` signature.

    python scripts/enhance.py --saved_model=saved_models/denoise_mnist --input=noisy.png --output=clean.png
    python scripts/enhance.py --saved_model=saved_models/denoise_mnist --input=scans/ --output=restored/ --resize
"""

import sys

from tfvae import cli, config

config.define_enhance_flags()


def main(argv):
    del argv  # parse_flags_or_exit refuses stray arguments.
    from tfvae import enhance, export

    cfg = config.enhance_config_from_flags()
    try:
        pairs, background_note = enhance.enhance_files(cfg.saved_model, cfg.input, cfg.output, resize=cfg.resize,
                                                       invert=cfg.invert)
    except (export.ExportError, enhance.EnhanceError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    for source, destination in pairs:
        print(f"{source} -> {destination}")
    for note in (background_note, enhance.untrained_for_restoration(export.load_metadata(cfg.saved_model))):
        if note:
            print(note, file=sys.stderr)


if __name__ == "__main__":
    cli.run_main(main)
