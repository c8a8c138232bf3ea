"""Class accuracy of a label-conditioned SavedModel's samples, judged by the project's classifier, as JSON.

    python scripts/evaluate_cvae.py --saved_model=saved_models/cvae_mnist [--output=cvae_accuracy.json]
"""

import sys

from tfvae import cli, config

config.define_evaluate_cvae_flags()


def main(argv):
    del argv  # parse_flags_or_exit refuses stray arguments.
    from tfvae import artifacts, classifier, export

    cfg = config.evaluate_cvae_config_from_flags()
    try:
        saved, metadata = export.load_saved_model(cfg.saved_model)
        classifier_dir = cfg.classifier or classifier.default_classifier_dir(metadata)
        classify, classifier_metadata = classifier.load_classifier(classifier_dir)
        result = classifier.evaluate_conditional_samples(saved, metadata, classify, classifier_metadata,
                                                         cfg.samples_per_class, cfg.seed)
    except (export.ExportError, classifier.ClassifierError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    result.update(saved_model=cfg.saved_model, classifier=classifier_dir)
    artifacts.write_json(cfg.output, result)
    print("class     " + " ".join(f"{c:>5}" for c in result["per_class"]))
    print("accuracy  " + " ".join(f"{a:5.2f}" for a in result["per_class"].values()))
    print(f"overall {result['accuracy']:.4f} of {cfg.samples_per_class} samples per class; wrote {cfg.output}")
    judge = result["classifier_test_accuracy"]
    print(f"judged by {classifier_dir}, right on "
          + (f"{judge:.2%} of its test images" if judge is not None else "an unknown share of test images"))
    if judge is None or judge < classifier.TRUSTED_TEST_ACCURACY:
        print(f"note: a classifier right on fewer than {classifier.TRUSTED_TEST_ACCURACY:.0%} of test images "
              f"cannot tell whether samples show their class; train one with scripts/train_classifier.py and pass "
              f"--classifier", file=sys.stderr)


if __name__ == "__main__":
    cli.run_main(main)
