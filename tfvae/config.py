"""Every training flag and its validator, and the frozen RunConfig built from them; the only reader of FLAGS."""

import dataclasses
import os
import sys

from absl import flags, logging

MODELS = ("tf1_tutorial", "mlp", "conv", "cvae")
DATASETS = ("mnist", "fashion_mnist", "cifar10")
LIKELIHOODS = ("bernoulli", "gaussian", "sse")
BINARIZE = ("none", "dynamic", "static")
# Models whose encoder takes flat vectors; their SavedModel `input` is [None, H*W*C] like the TF1 tutorial.
FLAT_MODELS = ("tf1_tutorial", "mlp", "cvae")
DEFAULT_LIKELIHOOD = {"tf1_tutorial": "sse"}

# Corruptions of denoising / deblurring / enhancement runs (ops in tfvae/corruption.py): what
# --corruption_strength means for each, its default and its range (low exclusive, high inclusive).
CORRUPTION_KINDS = ("gaussian_noise", "gaussian_blur", "mask", "downsample")
CORRUPTIONS = ("none",) + CORRUPTION_KINDS + ("mixed",)
CORRUPTION_UNITS = {
    "gaussian_noise": "stddev of the added noise, pixels in [0, 1]",
    "gaussian_blur": "sigma of the Gaussian kernel, in pixels",
    "mask": "fraction of pixels set to 0",
    "downsample": "shrink factor before scaling back up",
    "mixed": "multiplier of every kind's default strength",
}
DEFAULT_CORRUPTION_STRENGTH = {"gaussian_noise": 0.5, "gaussian_blur": 2.0, "mask": 0.5, "downsample": 4.0,
                               "mixed": 1.0}
CORRUPTION_RANGE = {"gaussian_noise": (0.0, 1.0), "gaussian_blur": (0.0, 4.0), "mask": (0.0, 0.95),
                    "downsample": (1.0, 8.0)}
# "mixed" scales every kind's default, so its range keeps each of them inside its own.
CORRUPTION_RANGE["mixed"] = (0.0, min(high / DEFAULT_CORRUPTION_STRENGTH[kind]
                                      for kind, (_, high) in CORRUPTION_RANGE.items()))

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs; written back as a flagfile beside the run."""

    name: str = "tf1_tutorial"
    model: str = "tf1_tutorial"
    dataset: str = "mnist"
    data_dir: str = ""
    binarize: str = "none"
    corruption: str = "none"
    corruption_strength: float = 0.0
    validation_size: int = 5000
    hidden_sizes: tuple = (100,)
    latent_dim: int = 20
    likelihood: str = "sse"
    epochs: int = 10
    batch_size: int = 100
    learning_rate: float = 1e-3
    adam_epsilon: float = 1e-8
    seed: int = 0
    model_dir: str = "runs/tf1_tutorial"
    export_dir: str = "saved_models/tf1_tutorial"
    resume: bool = False
    overwrite: bool = False
    jit_compile: bool = False
    steps_per_execution: int = 1
    data_threads: int = 1
    keep_checkpoints: int = 3
    image_summaries: bool = True

    @property
    def flatten_inputs(self):
        return self.model in FLAT_MODELS


def _positive(name):
    return lambda value: value is None or value > 0


def define_train_flags():
    """Defines the flags of `scripts/train.py` and their validators. Call once, at import of the script."""
    flags.DEFINE_string("name", None, "Run name; the defaults of --model_dir (runs/NAME) and --export_dir "
                        "(saved_models/NAME) derive from it. Default: the model name.")
    flags.DEFINE_enum("model", "tf1_tutorial", MODELS, "Model preset.")
    flags.DEFINE_enum("dataset", "mnist", DATASETS, "Dataset to train on.")
    flags.DEFINE_string("data_dir", "", "A folder with the TF1 MNIST_data/ IDX .gz files (read directly), or "
                        "a TFDS data directory. Empty: TFDS's default.")
    flags.DEFINE_enum("binarize", "none", BINARIZE, "none: gray levels in [0, 1]; dynamic: a fresh Bernoulli "
                      "sample of each image each epoch; static: one fixed sample.")
    flags.DEFINE_enum("corruption", "none", CORRUPTIONS, "Denoising / deblurring / enhancement: the model sees "
                      "images corrupted this way (seeded, inside tf.data) and learns to reconstruct the clean ones. "
                      "mixed: each image is left clean or gets one of the four kinds, drawn uniformly.")
    flags.DEFINE_float("corruption_strength", None, "Strength of --corruption: " + "; ".join(
        f"{kind}: {CORRUPTION_UNITS[kind]}, in ({low:g}, {high:g}], default {DEFAULT_CORRUPTION_STRENGTH[kind]:g}"
        for kind, (low, high) in CORRUPTION_RANGE.items()) + ".")
    flags.register_multi_flags_validator(["corruption", "corruption_strength"], _check_corruption_strength)
    flags.DEFINE_integer("validation_size", 5000, "Training examples held out for validation (the first ones, "
                         "as TF1's read_data_sets).", lower_bound=0)
    flags.DEFINE_list("hidden_sizes", ["100"], "Hidden layer widths of MLP encoders; decoders mirror them.")
    flags.DEFINE_integer("latent_dim", 20, "Size of z.")
    flags.DEFINE_enum("likelihood", None, LIKELIHOODS, "p(x|z): bernoulli on logits, gaussian, or sse (the TF1 "
                      "tutorial's sum of squared error). Default: sse for tf1_tutorial, bernoulli otherwise.")
    flags.DEFINE_integer("epochs", 10, "Training epochs.")
    flags.DEFINE_integer("batch_size", 100, "Global batch size.")
    flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
    flags.DEFINE_float("adam_epsilon", 1e-8, "Adam epsilon (1e-8 as TF1's AdamOptimizer; Keras' default is 1e-7).")
    flags.DEFINE_integer("seed", 0, "Seeds initialisation, data order, binarization and sampling.")
    flags.DEFINE_string("model_dir", None, "Run folder: TensorBoard logs, checkpoints, flags, metrics. "
                        "Default: runs/NAME.")
    flags.DEFINE_string("export_dir", None, "Where the SavedModel goes at the end. Default: saved_models/NAME.")
    flags.DEFINE_bool("resume", False, "Continue from the latest checkpoint in --model_dir.")
    flags.DEFINE_bool("overwrite", False, "Delete an existing --model_dir and start afresh.")
    flags.DEFINE_bool("jit_compile", False, "Compile the train step with XLA.")
    flags.DEFINE_integer("steps_per_execution", 1, "Train steps per tf.function call.")
    flags.DEFINE_integer("data_threads", 1, "Private tf.data thread pool size (few cores: keep it small).")
    flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept in --model_dir/checkpoints.")
    flags.DEFINE_bool("image_summaries", True, "Write sample and reconstruction images to TensorBoard each epoch.")

    for name in ("latent_dim", "epochs", "batch_size", "learning_rate", "adam_epsilon", "steps_per_execution",
                 "data_threads", "keep_checkpoints"):
        flags.register_validator(name, _positive(name), message=f"--{name} must be > 0")
    flags.register_validator(
        "hidden_sizes", lambda sizes: all(s.isdigit() and int(s) > 0 for s in sizes),
        message="--hidden_sizes must be a comma-separated list of positive integers, e.g. --hidden_sizes=400,200")
    flags.register_validator(
        "data_dir", lambda d: not d or os.path.isdir(d),
        message="--data_dir must be an existing folder (e.g. PATH/MNIST_data), or empty for TFDS's default")
    flags.register_multi_flags_validator(
        ["resume", "overwrite"], lambda f: not (f["resume"] and f["overwrite"]),
        message="--resume and --overwrite conflict; pass one of them")
    flags.register_multi_flags_validator(
        ["model_dir", "name", "model", "resume", "overwrite"], _model_dir_is_usable,
        message="--model_dir exists and is not empty; pass --resume to continue it, --overwrite to replace it, "
                "or another --model_dir")
    _quiet_absl_logging()


def define_generate_flags():
    """Defines the flags of `scripts/generate.py`."""
    flags.DEFINE_string("saved_model", None, "A tfvae SavedModel folder (e.g. saved_models/tf1_tutorial).",
                        required=True)
    flags.DEFINE_string("output", "samples.png", "PNG file to write.")
    flags.DEFINE_integer("rows", 4, "Grid rows.", lower_bound=1, upper_bound=64)
    flags.DEFINE_integer("cols", 4, "Grid columns.", lower_bound=1, upper_bound=64)
    flags.DEFINE_integer("seed", 0, "Seeds z ~ N(0, I).")
    flags.DEFINE_bool("reconstruct", False, "Instead of samples: test originals (top) above reconstructions.")
    flags.DEFINE_string("data_dir", "", "Data for --reconstruct: MNIST_data/ IDX folder or TFDS data dir.")
    flags.DEFINE_string("label", None, "Conditional models: a class (e.g. 7) or 'all' for one row per class.")
    _quiet_absl_logging()


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    saved_model: str
    output: str
    rows: int
    cols: int
    seed: int
    reconstruct: bool
    data_dir: str
    label: str


def generate_config_from_flags():
    return GenerateConfig(**{field.name: getattr(FLAGS, field.name) for field in dataclasses.fields(GenerateConfig)})


def _quiet_absl_logging():
    # TensorFlow logs every saved function at INFO through absl; warnings and errors are what users need.
    FLAGS.set_default("verbosity", logging.WARNING)


def _model_dir_is_usable(f):
    model_dir = f["model_dir"] or os.path.join("runs", f["name"] or f["model"])
    if f["resume"] or f["overwrite"] or not os.path.isdir(model_dir):
        return True
    return not os.listdir(model_dir)


def parse_flags_or_exit(argv):
    """absl `flags_parser`: any flag error or stray argument becomes one line on stderr and exit code 2."""
    try:
        remaining = FLAGS(argv)
    except flags.Error as e:
        message = " ".join(str(e).split())
        print(f"error: {message}; see --helpfull", file=sys.stderr)
        sys.exit(2)
    if len(remaining) > 1:
        print(f"error: unexpected arguments {remaining[1:]}; every setting is a --flag (see --helpfull)",
              file=sys.stderr)
        sys.exit(2)
    return remaining


def config_from_flags():
    """Builds the RunConfig of this process's training flags, filling the defaults that derive from others."""
    name = FLAGS.name or FLAGS.model
    values = {field.name: getattr(FLAGS, field.name) for field in dataclasses.fields(RunConfig)}
    values.update(
        name=name,
        hidden_sizes=tuple(int(s) for s in FLAGS.hidden_sizes),
        likelihood=FLAGS.likelihood or DEFAULT_LIKELIHOOD.get(FLAGS.model, "bernoulli"),
        model_dir=FLAGS.model_dir or os.path.join("runs", name),
        export_dir=FLAGS.export_dir or os.path.join("saved_models", name))
    if FLAGS.corruption_strength is None:  # The kind's default, written out so the run's flagfile shows it.
        values["corruption_strength"] = DEFAULT_CORRUPTION_STRENGTH.get(FLAGS.corruption, 0.0)
    return RunConfig(**values)


def to_flagfile(cfg):
    """Renders a RunConfig as flagfile text that `--flagfile` reads back into the same RunConfig."""
    lines = []
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if field.name in ("resume", "overwrite"):
            continue  # How a run was started, not what it is.
        if isinstance(value, bool):
            lines.append(f"--{'' if value else 'no'}{field.name}")
        elif isinstance(value, tuple):
            lines.append(f"--{field.name}={','.join(str(v) for v in value)}")
        else:
            lines.append(f"--{field.name}={value}")
    return "\n".join(lines) + "\n"


def define_enhance_flags():
    """Defines the flags of `scripts/enhance.py`."""
    flags.DEFINE_string("saved_model", None, "A tfvae SavedModel folder, e.g. saved_models/denoise_mnist.",
                        required=True)
    flags.DEFINE_string("input", None, "An image file (PNG or JPEG, gray or RGB) or a folder of them.", required=True)
    flags.DEFINE_string("output", None, "For one input file: the file to write (.png, .jpg or .jpeg) or a folder; "
                        "for an input folder: the folder to write NAME.png files into.", required=True)
    flags.DEFINE_bool("resize", False, "Scale images whose height and width differ from the model's to fit; "
                      "without it such images are refused. Outputs have the model's size.")
    flags.DEFINE_bool("invert", False, "Invert gray levels before and after restoring: for dark digits on a light "
                      "background, when the model learned light on dark (MNIST).")
    _quiet_absl_logging()


@dataclasses.dataclass(frozen=True)
class EnhanceConfig:
    saved_model: str
    input: str
    output: str
    resize: bool
    invert: bool


def enhance_config_from_flags():
    return EnhanceConfig(**{field.name: getattr(FLAGS, field.name) for field in dataclasses.fields(EnhanceConfig)})


def define_restoration_flags():
    """Defines the flags of `scripts/evaluate_restoration.py`."""
    flags.DEFINE_string("saved_model", None, "A tfvae SavedModel folder, e.g. saved_models/denoise_mnist.",
                        required=True)
    flags.DEFINE_string("data_dir", "", "MNIST_data/ IDX folder or TFDS data dir holding the model's dataset.")
    flags.DEFINE_string("output", "restoration.json", "JSON file to write the PSNR / SSIM table to.")
    flags.DEFINE_list("corruptions", [], "Corruption kinds to measure (" + ", ".join(CORRUPTION_KINDS) + "), each "
                      "at the strength the model was trained with, else its default. Empty: the model's own kinds "
                      "(all four for mixed).")
    flags.DEFINE_integer("num_examples", 10000, "Test images to measure on (the first ones).", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seeds the corruptions.")
    flags.DEFINE_string("grid", "", "Optional PNG: a few test images, clean, then corrupted and restored per kind.")
    flags.register_validator(
        "corruptions", lambda kinds: all(kind in CORRUPTION_KINDS for kind in kinds),
        message="--corruptions must be a comma-separated list of " + ", ".join(CORRUPTION_KINDS))
    _quiet_absl_logging()


@dataclasses.dataclass(frozen=True)
class RestorationConfig:
    saved_model: str
    data_dir: str
    output: str
    corruptions: tuple
    num_examples: int
    seed: int
    grid: str


def restoration_config_from_flags():
    values = {field.name: getattr(FLAGS, field.name) for field in dataclasses.fields(RestorationConfig)}
    return RestorationConfig(**{**values, "corruptions": tuple(values["corruptions"])})


def corruption_strength_error(kind, strength):
    """None when `strength` (None: the default) suits corruption `kind`, else a one-line message with the range."""
    if strength is None:
        return None
    if kind == "none":
        return None if strength == 0 else "--corruption_strength needs --corruption=" + "|".join(CORRUPTIONS[1:])
    low, high = CORRUPTION_RANGE[kind]
    if low < strength <= high:
        return None
    return (f"--corruption_strength={strength:g} is outside ({low:g}, {high:g}] for --corruption={kind} "
            f"({CORRUPTION_UNITS[kind]}; default {DEFAULT_CORRUPTION_STRENGTH[kind]:g})")


def _check_corruption_strength(f):
    message = corruption_strength_error(f["corruption"], f["corruption_strength"])
    if message:
        raise flags.ValidationError(message)  # Its message replaces the validator's generic one.
    return True
