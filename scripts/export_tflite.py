"""Converts a tfvae SavedModel's encode, decode and reconstruct signatures to LiteRT (TFLite) and checks them
against it; a conditional model's class names go beside the .tflite file, in NAME.labels.txt.

    python scripts/export_tflite.py --saved_model=saved_models/tf1_tutorial --output=model.tflite [--quantize=dynamic]
"""

import sys

from tfvae import cli, config

config.define_export_tflite_flags()


def main(argv):
    del argv  # parse_flags_or_exit refuses stray arguments.
    from tfvae import export, lite

    cfg = config.export_tflite_config_from_flags()
    try:  # Checked before converting: the check of the converted model runs it in LiteRT's interpreter.
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        print('error: LiteRT\'s interpreter (ai-edge-litert) is not installed; pip install -e ".[lite]"',
              file=sys.stderr)
        sys.exit(1)
    try:
        differences, size = lite.export_tflite(cfg.saved_model, cfg.output, cfg.quantize, cfg.check_examples)
    except export.ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    for name, outputs in differences.items():
        for key, diff in outputs.items():
            print(f"{name}/{key}: max |LiteRT - SavedModel| = {diff:.3g} on {cfg.check_examples} inputs")
    metadata = export.load_metadata(cfg.saved_model)
    precision = (metadata.get("config") or {}).get("mixed_precision", "none")
    if precision != "none":
        print(f"(the SavedModel's layers compute in {precision}, the LiteRT model's in float32: the differences are "
              f"mostly the SavedModel's rounding)")
    elif cfg.quantize == "none":
        print(f"(all within {lite.FLOAT32_TOLERANCE:g}, as a float32 conversion must be)")
    else:
        print("(int8 weights change the outputs: judge the differences above, or the quantized model's images, "
              "against your task)")
    missing = lite.left_out(cfg.saved_model)
    if missing:
        why_sample = ("; sample draws stateless random numbers, which LiteRT has no op for" if "sample" in missing
                      else "")
        print(f"Not in the LiteRT model: {', '.join(missing)} (run {'them' if len(missing) > 1 else 'it'} from the "
              f"SavedModel{why_sample})")
    weights = {"none": "float32 weights", "dynamic": "int8 weights, float activations"}[cfg.quantize]
    print(f"Wrote {cfg.output} ({size} bytes, {weights})")
    if lite.class_names(metadata):
        print(f"Wrote {lite.labels_path(cfg.output)} (the class names, one per line: line i is label i)")


if __name__ == "__main__":
    cli.run_main(main)
