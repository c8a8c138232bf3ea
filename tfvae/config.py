"""Every script's flags and validators, and the frozen configs (RunConfig, ...) built from them: the library's only
reader of FLAGS."""

import dataclasses
import json
import math
import os
import re
import sys
import tempfile

from absl import flags, logging

from tfvae import artifacts

# The resolved flags train.py writes first into every run folder (`to_flagfile`), and its checkpoints' folder there.
RUN_FLAGS_FILE = "flags.txt"
CHECKPOINTS_DIR = "checkpoints"
# Where --keep_best keeps the weights of the epoch of lowest validation loss, beside the checkpoints.
BEST_DIR = "best"

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu")
MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")
MODELS = ("tf1_tutorial", "mlp", "conv", "cvae")
DATASETS = ("mnist", "fashion_mnist", "cifar10")
# What train.py also takes: a folder of your own images (tfvae/image_folder.py).
IMAGE_FOLDER = "image_folder"
TRAIN_DATASETS = DATASETS + (IMAGE_FOLDER,)
LIKELIHOODS = ("bernoulli", "autoregressive_bernoulli", "gaussian", "sse")
# Likelihoods of binary pixels: their data are binarized and their losses are discrete nats.
BINARY_LIKELIHOODS = ("bernoulli", "autoregressive_bernoulli")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # What enhance.py reads and writes.
SINGLE_CHANNEL_DATASETS = ("mnist", "fashion_mnist")

OBJECTIVES = ("elbo", "iwae")
BINARIZE = ("none", "dynamic", "static")
# Models whose encoder takes flat vectors; their SavedModel `input` is [None, H*W*C] like the TF1 tutorial.
FLAT_MODELS = ("tf1_tutorial", "mlp", "cvae")
DEFAULT_LIKELIHOOD = {"tf1_tutorial": "sse"}
ADAM_VARIANTS = ("tf1", "keras")
DEFAULT_ADAM = {"tf1_tutorial": "tf1"}

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
# "mixed" scales every kind's default, so its range keeps each of them inside its own (downsample's lower bound of
# 1, no downsampling, is what bounds it below).
CORRUPTION_RANGE["mixed"] = (
    max(low / DEFAULT_CORRUPTION_STRENGTH[kind] for kind, (low, _) in CORRUPTION_RANGE.items()),
    min(high / DEFAULT_CORRUPTION_STRENGTH[kind] for kind, (_, high) in CORRUPTION_RANGE.items()))

FLAGS = flags.FLAGS


def _flag_values(config_class):
    """{field: value of the flag of that name} for each field of a config dataclass."""
    return {field.name: getattr(FLAGS, field.name) for field in dataclasses.fields(config_class)}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs; written back as a flagfile beside the run."""

    name: str = "tf1_tutorial"
    model: str = "tf1_tutorial"
    dataset: str = "mnist"
    data_dir: str = ""
    image_size: tuple = ()
    binarize: str = "none"
    corruption: str = "none"
    corruption_strength: float = 0.0
    validation_size: int = 5000
    hidden_sizes: tuple = (100,)
    latent_dim: int = 20
    likelihood: str = "sse"
    gaussian_stddev: float = 0.1
    learn_variance: bool = False
    ar_kernel_size: int = 7
    ar_channels: int = 32
    conv_filters: tuple = (32, 64)
    objective: str = "elbo"
    num_importance_samples: int = 1
    beta: float = 1.0
    kl_warmup_epochs: float = 0.0
    free_bits: float = 0.0
    epochs: int = 10
    batch_size: int = 100
    learning_rate: float = 1e-3
    adam_epsilon: float = 1e-8
    adam: str = "tf1"
    seed: int = 0
    model_dir: str = "runs/tf1_tutorial"
    export_dir: str = "saved_models/tf1_tutorial"
    resume: bool = False
    overwrite: bool = False
    jit_compile: bool = False
    steps_per_execution: int = 1
    micro_batches: int = 1
    data_threads: int = 1
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    keep_checkpoints: int = 3
    checkpoint_every_steps: int = 0
    deterministic: bool = False
    image_summaries: bool = True
    init_from: str = ""
    init_from_tf1: str = ""
    strategy: str = "default"
    tpu: str = ""
    cpu_devices: int = 1
    mixed_precision: str = "none"
    max_bad_steps: int = 20
    clip_grad_norm: float = 0.0
    early_stopping_patience: int = 0
    early_stopping_min_delta: float = 0.0
    keep_best: bool = False

    @property
    def flatten_inputs(self):
        return self.model in FLAT_MODELS


def _positive(name):
    # isfinite: `inf > 0` holds, and an infinite learning rate or epsilon trains to nothing or to NaN.
    return lambda value: value is None or (math.isfinite(value) and value > 0)


def _finite_non_negative(value):
    return math.isfinite(value) and value >= 0


# Keras' set_random_seed takes seeds below 2**32, TensorFlow's int32 seed attributes below 2**31: one range for all.
MAX_SEED = 2**31 - 1


def _is_positive_integer(text):
    """Digits 0-9 only (str.isdigit also takes "²", which int() refuses) and above 0."""
    return bool(re.fullmatch("[0-9]+", text)) and int(text) > 0


class _PathParser(flags.ArgumentParser):
    """A path flag's parser: a leading ~ or ~user becomes that home folder, which a shell does for a bare word but
    not after "--flag=" (nor does a flagfile)."""

    def parse(self, argument):
        return os.path.expanduser(super().parse(argument))

    def flag_type(self):
        return "string"


def define_path_flag(name, default, help_text, **kwargs):
    """DEFINE_string for a file or folder: the value, and so every validator and flags.txt, has ~ expanded."""
    flags.DEFINE(_PathParser(), name, default, help_text, serializer=flags.ArgumentSerializer(), **kwargs)


def define_seed_flag(help_text):
    flags.DEFINE_integer("seed", 0, help_text, lower_bound=0, upper_bound=MAX_SEED)


def _broken_link(path):
    """"LINK is a symbolic link to TARGET, which does not exist" for the first such link on the way to `path` (which
    writing would trip over, after the work), or None."""
    parts = os.path.abspath(path).split(os.sep)
    for end in range(2, len(parts) + 1):
        link = os.sep.join(parts[:end])
        if os.path.islink(link) and not os.path.exists(link):
            target = os.readlink(link)
            return f"{link} is a symbolic link to {target}, which does not exist; create {target} or pass another path"
        if not os.path.lexists(link):
            return None
    return None


def find_write_problem(path, beside=False):
    """Why nothing can be written at `path` (inside it when it is a folder, else beside it), or None: the nearest
    folder above it that exists must be a folder this process may write in (the rest is created).

    `beside`: `path` is a folder replaced whole through a temporary sibling (an export), so the writing happens in
    its parent even when it exists.
    """
    folder = os.path.abspath(path)
    broken = _broken_link(folder)
    if broken:
        return broken
    if beside or not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    missing = artifacts.first_missing_folder(folder)
    folder = os.path.dirname(missing) if missing else folder
    if not os.path.isdir(folder):
        return f"{folder} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        read_only = hasattr(os, "statvfs") and os.statvfs(folder).f_flag & os.ST_RDONLY
        return f"cannot write in {folder} ({'a read-only file system' if read_only else 'permission denied'})"
    try:  # os.access says yes to root everywhere; a folder made and removed says what /proc or /sys would do.
        os.rmdir(tempfile.mkdtemp(prefix=".tfvae-write-check-", dir=folder))
    except OSError as e:
        return f"cannot write in {folder} ({e.strerror.lower()})"
    return None


def refuse_unwritable(name, beside=False):
    """Validates --NAME, a file or folder to write, as creatable (see `find_write_problem`): checked before any work
    starts, not at its end."""
    def check(path):
        problem = path and find_write_problem(path, beside)
        if problem:
            fix = "" if "; " in problem else "; pass a path in a folder you can write to"  # Or its own fix.
            raise flags.ValidationError(problem + fix)
        return True
    flags.register_validator(name, check)


def define_output_file_flag(default, help_text, extension, name="output"):
    """Defines --NAME, a file to write: a folder, another kind of file or a place that cannot be written is refused
    before any work starts, and so is an empty value where the default names a file."""
    define_path_flag(name, default, help_text)
    flags.register_validator(
        name, lambda path: (not path and not default) or (
            path.lower().endswith(extension) and not os.path.isdir(path)),
        message=f"--{name} must name a {extension} file, not a folder or another kind of file; e.g. "
                f"--{name}=results/out{extension}")
    refuse_unwritable(name)


def require_existing_folder(name, what):
    """Validates --NAME, when given, as an existing folder: a missing path or a file is a bad flag (exit 2)."""
    def check(path):
        if not path or os.path.isdir(path):
            return True
        problem = "names a file, not a folder" if os.path.exists(path) else "no such folder"
        raise flags.ValidationError(f"{problem}; pass {what}")  # absl puts "flag --NAME=PATH: " before it.
    flags.register_validator(name, check)


def define_saved_model_flag(example, kind="tfvae SavedModel folder"):
    """Defines the required --saved_model of a script that reads one export: an existing folder, or exit 2."""
    define_path_flag("saved_model", None, f"A {kind}, e.g. {example}.", required=True)
    require_existing_folder("saved_model", f"a {kind}, e.g. {example}")


DATA_DIR_HINT = ("an existing folder (an IDX folder such as PATH/MNIST_data, or a TFDS data dir), or nothing for "
                 "TFDS's default")


def define_model_data_dir_flag(what):
    """Defines --data_dir for the scripts that read an existing model's data (`data.model_data_dir`)."""
    define_path_flag("data_dir", "", f"{what}: MNIST_data/ IDX folder, TFDS data dir, or the image folder of an "
                     f"--dataset=image_folder model. Default: the model's own --data_dir when that folder exists "
                     f"here, else TFDS's default.")
    require_existing_folder("data_dir", DATA_DIR_HINT)


def refuse_existing_file(name, what, replaced_whole=False, required=False):
    """Validates --NAME, a folder to write into (`replaced_whole`: an export, replaced through a sibling), as not
    an existing file, and as a place that can be written; `required`: not empty either (elsewhere an empty value
    means the default)."""
    if required:
        flags.register_validator(name, lambda path: path is None or bool(path.strip()),
                                 message=f"is empty; pass {what}")
    # rstrip: "notes.txt/" names the file notes.txt too, though isfile says no.
    flags.register_validator(name, lambda path: not path or not os.path.isfile(path.rstrip(os.sep)),
                             message=f"names an existing file, not a folder; pass {what}")
    if replaced_whole:
        flags.register_validator(name, lambda path: not path or not artifacts.holds_the_working_folder(path),
                                 message=f"is the current folder or holds it, which the export would replace whole; "
                                         f"pass {what} elsewhere")
    refuse_unwritable(name, beside=replaced_whole)


def _require_data_dir_for_an_image_folder():
    flags.register_multi_flags_validator(
        ["dataset", "data_dir"], lambda f: f["dataset"] != IMAGE_FOLDER or bool(f["data_dir"]),
        message=f"--dataset={IMAGE_FOLDER} reads your images from --data_dir: pass --data_dir=a folder holding "
                f"train/ and test/, each of images or of one subfolder of images per class")


def _define_image_size_flag():
    flags.DEFINE_list("image_size", [], f"--dataset={IMAGE_FOLDER}: HEIGHT,WIDTH to bring every image to (its centre "
                      f"cropped to that shape, then resized); empty: the images must all have one size.")
    flags.register_validator(
        "image_size", lambda size: not size or (len(size) == 2 and all(_is_positive_integer(s) for s in size)),
        message="--image_size must be HEIGHT,WIDTH in pixels, e.g. --image_size=64,64")
    flags.register_multi_flags_validator(
        ["image_size", "dataset"], lambda f: not f["image_size"] or f["dataset"] == IMAGE_FOLDER,
        message=f"--image_size resizes the images of --dataset={IMAGE_FOLDER}; the named datasets have their own "
                f"size, so drop it")


def define_train_flags():
    """Defines the flags of `scripts/train.py` and their validators. Call once, at import of the script."""
    flags.DEFINE_string("name", None, "Run name; the defaults of --model_dir (runs/NAME) and --export_dir "
                        "(saved_models/NAME) derive from it. Default: the model name.")
    flags.DEFINE_enum("model", "tf1_tutorial", MODELS, "Model preset.")
    flags.DEFINE_enum("dataset", "mnist", TRAIN_DATASETS, "Dataset to train on; image_folder: your own images in "
                      "--data_dir.")
    define_path_flag("data_dir", "", "A folder with the TF1 MNIST_data/ IDX .gz files (read directly), or "
                     "a TFDS data directory. Empty: TFDS's default. With --dataset=image_folder: a folder holding "
                     "train/ and test/, each of images or of one subfolder of images per class.")
    _define_image_size_flag()
    flags.DEFINE_enum("binarize", "none", BINARIZE, "none: gray levels in [0, 1]; dynamic: a fresh Bernoulli "
                      "sample of each image each epoch; static: one fixed sample (a colour image's channels are each "
                      "drawn on their own, so its pixels take 8 colours).")
    flags.DEFINE_enum("corruption", "none", CORRUPTIONS, "Denoising / deblurring / enhancement: the model sees "
                      "images corrupted this way (seeded, inside tf.data) and learns to reconstruct the clean ones. "
                      "mixed: each image is left clean or gets one of the four kinds, drawn uniformly.")
    flags.DEFINE_float("corruption_strength", None, "Strength of --corruption: " + "; ".join(
        f"{kind}: {CORRUPTION_UNITS[kind]}, in ({low:g}, {high:g}], default {DEFAULT_CORRUPTION_STRENGTH[kind]:g}"
        for kind, (low, high) in CORRUPTION_RANGE.items()) + ".")
    flags.register_multi_flags_validator(["corruption", "corruption_strength"], _check_corruption_strength)
    flags.DEFINE_integer("validation_size", 5000, "Training examples held out for validation (the first ones, "
                         "as TF1's read_data_sets); unless set, for --dataset=image_folder a tenth of train/'s "
                         "images, 5000 at most.", lower_bound=0)
    flags.DEFINE_list("hidden_sizes", ["100"], "Hidden layer widths of the MLP encoder, or of the dense layers "
                      "after the conv encoder's convolutions (--model=conv); decoders mirror them.")
    flags.DEFINE_integer("latent_dim", 20, "Size of z.")
    flags.DEFINE_enum("likelihood", None, LIKELIHOODS, "p(x|z): bernoulli on logits, autoregressive_bernoulli (a "
                      "PixelCNN-style decoder head), gaussian, or sse (the TF1 tutorial's sum of squared error). "
                      "Default: sse for tf1_tutorial, bernoulli otherwise.")
    flags.DEFINE_float("gaussian_stddev", 0.1, "--likelihood=gaussian: the fixed pixel stddev, or the initial one "
                       "with --learn_variance. Its log-density includes -0.5 log(2 pi stddev^2) per number (+1.38 "
                       "nats at 0.1), so a loss can be negative.")
    flags.DEFINE_bool("learn_variance", False, "--likelihood=gaussian: learn one variance per pixel.")
    flags.DEFINE_integer("ar_kernel_size", 7, "--likelihood=autoregressive_bernoulli: each pixel sees the pixels "
                         "above and left of it within a square of this odd size.")
    flags.DEFINE_integer("ar_channels", 32, "--likelihood=autoregressive_bernoulli: hidden units of the network of "
                         "those pixels.")
    flags.DEFINE_list("conv_filters", ["32", "64"], "--model=conv: filters of the stride-2 Conv2D blocks of the "
                      "encoder; the decoder mirrors them with Conv2DTranspose.")
    flags.DEFINE_enum("objective", "elbo", OBJECTIVES, "Training bound: elbo, or iwae (the importance-weighted "
                      "bound of --num_importance_samples samples; Burda et al. 2016).")
    flags.DEFINE_integer("num_importance_samples", 1, "K, samples of q(z|x) per example for --objective=iwae.")
    flags.DEFINE_float("beta", 1.0, "Weight of the KL term (beta-VAE); 1 is the ELBO.")
    flags.DEFINE_float("kl_warmup_epochs", 0.0, "Raise the KL's factor linearly from 0 to --beta over this many "
                       "epochs (step by step; TensorBoard's kl_weight is the fraction of --beta); 0: no warm-up.")
    flags.DEFINE_float("free_bits", 0.0, "Nats per latent dimension below which the batch-mean KL is not "
                       "penalised (Kingma et al. 2016); 0: off.")
    flags.DEFINE_integer("epochs", 10, "Training epochs.")
    flags.DEFINE_integer("batch_size", 100, "Global batch size.")
    flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
    flags.DEFINE_float("adam_epsilon", 1e-8, "Adam epsilon (1e-8 as TF1's AdamOptimizer; Keras' default is 1e-7).")
    flags.DEFINE_enum("adam", None, ADAM_VARIANTS, "tf1: Adam with TF1 AdamOptimizer's arithmetic (the "
                      "tutorial bit for bit; tfvae.optimizers.TF1Adam); keras: keras.optimizers.Adam. Default: tf1 "
                      "for tf1_tutorial, keras otherwise.")
    define_seed_flag("Seeds initialisation, data order, binarization and sampling.")
    define_path_flag("model_dir", None, "Run folder: TensorBoard logs, checkpoints, flags, metrics. "
                     "Default: runs/NAME.")
    define_path_flag("export_dir", None, "Where the SavedModel goes at the end. Default: saved_models/NAME.")
    flags.DEFINE_bool("resume", False, "Continue from the latest checkpoint in --model_dir.")
    flags.DEFINE_bool("overwrite", False, "Empty an existing --model_dir (the folder, or a link to it, stays) and "
                      "start afresh.")
    flags.DEFINE_bool("jit_compile", False, "Compile the train step with XLA.")
    flags.DEFINE_integer("steps_per_execution", 1, "Train steps per tf.function call.")
    flags.DEFINE_integer("micro_batches", 1, "Split each train batch into this many equal parts whose passes run "
                         "side by side, each op on one core (with --intra_op_threads=1): the same gradients up to "
                         "float rounding, faster on CPUs when layers are too small to split well (see README, "
                         "Performance).")
    flags.DEFINE_enum("strategy", "default", STRATEGIES, "tf.distribute strategy: default (one device, the GPU if "
                      "any), mirrored (all local GPUs), multi_worker_mirrored (hosts from TF_CONFIG), tpu.")
    flags.DEFINE_string("tpu", "", "TPU address for --strategy=tpu (e.g. grpc://10.0.0.2:8470, or a TPU name).")
    flags.DEFINE_integer("cpu_devices", 1, "Split the host CPU into this many logical devices (to run --strategy="
                         "mirrored without GPUs, e.g. in tests).")
    flags.DEFINE_enum("mixed_precision", "none", MIXED_PRECISION, "Keras mixed precision policy; outputs, loss and "
                      "exported signatures stay float32 (float16 uses dynamic loss scaling).")
    flags.DEFINE_integer("data_threads", 1, "Private tf.data thread pool size (few cores: keep it small).")
    flags.DEFINE_integer("intra_op_threads", 0, "Threads one op may split its work over (TensorFlow's intra-op "
                         "pool); 0: one per core. Layers 100 wide run faster unsplit: 1 (see README, Performance).",
                         lower_bound=0)
    flags.DEFINE_integer("inter_op_threads", 0, "Ops run side by side (TensorFlow's inter-op pool); 0: one per "
                         "core.", lower_bound=0)
    flags.DEFINE_integer("max_bad_steps", 20, "Train steps with a non-finite loss or gradient are skipped (the weights "
                         "never see them); this many in a row stop the run with an error.")
    flags.DEFINE_float("clip_grad_norm", 0.0, "Scale gradients down to this global L2 norm when larger; 0: no "
                       "clipping.")
    flags.DEFINE_integer("early_stopping_patience", 0, "Stop once this many epochs in a row have not lowered the "
                         "validation loss (then test and export as after the last epoch); 0: train all --epochs.",
                         lower_bound=0)
    flags.DEFINE_float("early_stopping_min_delta", 0.0, "For --early_stopping_patience: an epoch lowers the "
                       "validation loss only when it goes more than this many nats below the last epoch that did; "
                       "0: lower by any amount.", lower_bound=0.0)
    flags.register_multi_flags_validator(
        ["early_stopping_min_delta", "early_stopping_patience"],
        lambda f: not f["early_stopping_min_delta"] or f["early_stopping_patience"],
        message="--early_stopping_min_delta says what counts as lower for --early_stopping_patience, which is 0 "
                "(off); set --early_stopping_patience=N or drop --early_stopping_min_delta")
    flags.DEFINE_bool("keep_best", False, "Test and export the weights of the epoch of lowest validation loss (kept "
                      "in --model_dir/best) instead of the last epoch's.")
    for name in ("early_stopping_patience", "keep_best"):
        flags.register_multi_flags_validator(
            [name, "validation_size"], lambda f, name=name: not f[name] or f["validation_size"] != 0,
            message=f"--{name} judges epochs by their validation loss, and --validation_size=0 holds out none; "
                    f"hold out some (e.g. --validation_size=5000) or drop --{name}")
    flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept in --model_dir/checkpoints.")
    flags.DEFINE_integer("checkpoint_every_steps", 0, "Also save a checkpoint every this many train steps, so "
                         "--resume after a crash or kill loses at most that many; 0: only at epoch ends. With "
                         "--steps_per_execution > 1 the save waits for the end of the execution.")
    flags.DEFINE_bool("deterministic", False, "Bit-reproducible runs: seeds everything from --seed and makes TF ops "
                      "deterministic (tf.config.experimental.enable_op_determinism; can be slower). Without it "
                      "--seed still fixes initialisation, data order and binarization.")
    flags.DEFINE_bool("image_summaries", True, "Write sample and reconstruction images to TensorBoard each epoch, "
                      "and the test set's Embedding Projector at the end.")
    define_path_flag("init_from", "", "Start from a tfvae export (its weights, and its Adam state if it has one, "
                     "e.g. from import_tf1.py --with_optimizer), a tfvae checkpoint prefix (runs/NAME/"
                     "checkpoints/ckpt-N) or a run folder (runs/NAME: its latest checkpoint): continues that run "
                     "in a new --model_dir.")
    define_path_flag("init_from_tf1", "", "Start from the weights of a TF1 tutorial graph: a tf.train.Saver "
                     "checkpoint prefix or a TF1 SavedModel folder (see scripts/import_tf1.py).")

    flags.register_multi_flags_validator(
        ["cpu_devices", "strategy"], lambda f: (f["cpu_devices"] or 1) <= 1 or f["strategy"] == "mirrored",
        message="--cpu_devices splits the CPU into devices for --strategy=mirrored, which is not set; add it or drop "
                "--cpu_devices")
    # Keras' model_supports_jit says no under tf.config.experimental.enable_op_determinism.
    flags.register_multi_flags_validator(
        ["jit_compile", "deterministic"], lambda f: not (f["jit_compile"] and f["deterministic"]),
        message="--jit_compile and --deterministic conflict: Keras compiles nothing with XLA under op determinism "
                "(it would train without XLA); drop one")
    # XLA-compiled steps on logical CPU devices read a variable of the other replica's device and fail (TensorFlow
    # 2.21); on GPUs XLA and mirrored work together.
    flags.register_multi_flags_validator(
        ["jit_compile", "cpu_devices"], lambda f: not (f["jit_compile"] and (f["cpu_devices"] or 1) > 1),
        message="--jit_compile cannot run over --cpu_devices (XLA on logical CPU devices mixes up the replicas' "
                "variables); drop one of them")
    flags.register_multi_flags_validator(
        ["init_from_tf1", "model"], lambda f: not f["init_from_tf1"] or f["model"] in ("tf1_tutorial", "mlp"),
        message="--init_from_tf1 starts the tutorial's MLP (--model=tf1_tutorial or mlp) from TF1 weights; for "
                "another --model drop it")
    flags.register_multi_flags_validator(
        ["strategy", "tpu"], lambda f: (f["strategy"] == "tpu") == bool(f["tpu"]),
        message="--tpu is needed with --strategy=tpu and only then; pass both or neither")
    # Keras 3 runs each step of its multi-step loop inside a tf.cond, and the optimizer's merge_call (which these
    # strategies use for variable updates, except XLA on GPUs alone) cannot run inside one: a placeholder is never
    # fed (keras-team/keras#19246; Keras 3.15 and TensorFlow 2.21 fail even for a built-in Sequential model).
    flags.register_multi_flags_validator(
        ["strategy", "steps_per_execution"],
        lambda f: f["strategy"] not in ("mirrored", "multi_worker_mirrored") or f["steps_per_execution"] in (None, 1),
        message="--strategy=mirrored and multi_worker_mirrored run one step per execution (Keras 3 cannot run "
                "their updates inside its multi-step loop); pass --steps_per_execution=1")
    flags.register_multi_flags_validator(
        ["batch_size", "micro_batches"],
        # Sizes <= 0 are left to their own validators, which say so.
        lambda f: (f["batch_size"] or 0) <= 0 or (f["micro_batches"] or 0) <= 0
        or f["batch_size"] % f["micro_batches"] == 0,
        message="--batch_size must be a multiple of --micro_batches (equal parts); change one of them")
    for name in ("cpu_devices", "latent_dim", "epochs", "batch_size", "steps_per_execution", "micro_batches",
                 "data_threads", "keep_checkpoints", "num_importance_samples", "max_bad_steps"):
        flags.register_validator(name, _positive(name), message=f"--{name} must be > 0")
    for name in ("learning_rate", "adam_epsilon", "gaussian_stddev"):
        flags.register_validator(name, _positive(name), message=f"--{name} must be a finite number > 0")
    flags.register_validator(
        "hidden_sizes", lambda sizes: all(_is_positive_integer(s) for s in sizes),
        message="--hidden_sizes must be a comma-separated list of positive integers, e.g. --hidden_sizes=400,200")
    flags.register_validator(
        "conv_filters", lambda sizes: bool(sizes) and all(_is_positive_integer(s) for s in sizes),
        message="--conv_filters must be a comma-separated list of positive integers, e.g. --conv_filters=32,64")
    for name in ("beta", "kl_warmup_epochs", "free_bits", "clip_grad_norm", "early_stopping_min_delta"):
        flags.register_validator(name, _finite_non_negative, message=f"--{name} must be a finite number >= 0")
    flags.register_validator("checkpoint_every_steps", lambda steps: steps >= 0,
                             message="--checkpoint_every_steps must be >= 0")
    flags.register_multi_flags_validator(
        ["likelihood", "learn_variance"], lambda f: not f["learn_variance"] or f["likelihood"] == "gaussian",
        message="--learn_variance needs --likelihood=gaussian")
    flags.register_validator("ar_kernel_size", lambda k: k >= 3 and k % 2 == 1,
                             message="--ar_kernel_size must be an odd number >= 3, e.g. 7")
    flags.register_validator("ar_channels", _positive("ar_channels"), message="--ar_channels must be > 0")
    flags.register_multi_flags_validator(
        ["likelihood", "dataset"],
        # An image folder's channels are known once it is read (training.run checks them then).
        lambda f: f["likelihood"] != "autoregressive_bernoulli" or f["dataset"] in SINGLE_CHANNEL_DATASETS + (
            IMAGE_FOLDER,),
        message="--likelihood=autoregressive_bernoulli models single-channel images; use --dataset="
                + " or --dataset=".join(SINGLE_CHANNEL_DATASETS) + ", or --likelihood=bernoulli")
    _require_data_dir_for_an_image_folder()
    flags.register_multi_flags_validator(
        ["objective", "free_bits"], lambda f: not (f["objective"] == "iwae" and f["free_bits"]),
        message="--free_bits clamps the KL term of --objective=elbo; the iwae bound has none, drop one of them")
    # A setting the chosen model never reads would pass silently (e.g. --conv_filters on an MLP): only at default.
    for name, needed, values in (("conv_filters", "model", ("conv",)),
                                 ("ar_kernel_size", "likelihood", ("autoregressive_bernoulli",)),
                                 ("ar_channels", "likelihood", ("autoregressive_bernoulli",)),
                                 ("gaussian_stddev", "likelihood", ("gaussian",))):
        flags.register_multi_flags_validator(
            [needed, name], lambda f, name=name, needed=needed, values=values: (
                f[needed] in values or f[name] == FLAGS[name].default),
            message=f"--{name} is read only with --{needed}={'|'.join(values)}, which is not set; add it or drop "
                    f"--{name}")
    flags.register_multi_flags_validator(
        ["objective", "num_importance_samples"],
        lambda f: f["objective"] == "iwae" or f["num_importance_samples"] == 1,
        message="--num_importance_samples is K of --objective=iwae; add --objective=iwae or drop it")
    flags.register_validator(
        "data_dir", lambda d: not d or os.path.isdir(d),
        message="--data_dir must be an existing folder (e.g. PATH/MNIST_data, or your image folder), or empty for "
                "TFDS's default")
    flags.register_multi_flags_validator(
        ["model", "corruption"], lambda f: not (f["model"] == "cvae" and f["corruption"] != "none"),
        message="--corruption trains a restoration model for enhance.py, which restores unlabelled images; use "
                "--model=mlp or --model=conv with it, or drop --corruption for a cvae")
    flags.register_multi_flags_validator(
        ["resume", "overwrite"], lambda f: not (f["resume"] and f["overwrite"]),
        message="--resume and --overwrite conflict; pass one of them")
    flags.register_multi_flags_validator(
        ["resume", "strategy"], lambda f: not (f["resume"] and f["strategy"] == "multi_worker_mirrored"),
        message="--resume is not supported with --strategy=multi_worker_mirrored (only the chief keeps "
                "checkpoints, so the workers would restart at different steps); resume on one host with "
                "--strategy=mirrored, or start afresh")
    flags.register_multi_flags_validator(
        ["model_dir", "name", "model", "resume", "overwrite"], _model_dir_is_usable,
        message="--model_dir exists and is not empty; pass --resume to continue it, --overwrite to replace it, "
                "or another --model_dir")
    flags.register_multi_flags_validator(
        ["export_dir", "name", "model"], _export_dir_is_usable,
        message="--export_dir exists and is not a tfvae export (no tfvae.json); the export would replace it, so "
                "remove it or choose another --export_dir")
    flags.register_multi_flags_validator(["model_dir", "export_dir", "name", "model"], _default_run_paths_writable)
    flags.register_multi_flags_validator(
        ["model_dir", "export_dir", "name", "model"], _run_outside_export,
        message="--model_dir is --export_dir or inside it, and the export replaces that folder whole; pass an "
                "--export_dir outside the run folder, e.g. saved_models/NAME")
    flags.register_multi_flags_validator(["model_dir", "name", "model"], _run_outside_any_export)
    flags.register_multi_flags_validator(
        ["init_from", "init_from_tf1"], lambda f: not (f["init_from"] and f["init_from_tf1"]),
        message="--init_from and --init_from_tf1 conflict; pass one of them")
    for name in ("init_from", "init_from_tf1"):
        require_checkpoint_or_folder(name, "an existing folder or a checkpoint prefix (PREFIX.index exists)")
    refuse_existing_file("model_dir", "a folder for the run (created if missing)")
    refuse_existing_file("export_dir", "a folder for the SavedModel (created if missing)", replaced_whole=True)
    # Last, so that a flag conflict of the strategy is named before the environment is.
    flags.register_validator("strategy", _check_tf_config)
    _quiet_absl_logging()


TF_CONFIG_EXAMPLE = ("""TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": """
                     """"worker", "index": 0}}' (index: this host's place in the list)""")


def _check_tf_config(strategy):
    """--strategy=multi_worker_mirrored needs TF_CONFIG naming the cluster and this task; TensorFlow would train
    alone without it, or fail with a traceback on a malformed one."""
    if strategy != "multi_worker_mirrored":
        return True
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        problem = "needs TF_CONFIG, which is not set"
    else:
        problem = _tf_config_problem(text)
    if problem:
        raise flags.ValidationError(f"{problem}; set {TF_CONFIG_EXAMPLE} on each host, or on one machine use "
                                    f"--strategy=mirrored")
    return True


def _tf_config_problem(text):
    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as e:
        return f"TF_CONFIG is not JSON ({e})"
    cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
    task = tf_config.get("task") if isinstance(tf_config, dict) else None
    if not isinstance(cluster, dict) or not all(isinstance(v, list) and v for v in cluster.values()) or not cluster:
        return "TF_CONFIG has no \"cluster\" of job names and host:port lists"
    if not isinstance(task, dict) or "type" not in task or not isinstance(task.get("index"), int):
        return "TF_CONFIG has no \"task\" with this process's \"type\" and \"index\""
    hosts = cluster.get(task["type"])
    if hosts is None:
        return f"TF_CONFIG's task type {task['type']!r} is not a job of its cluster ({', '.join(cluster)})"
    if not 0 <= task["index"] < len(hosts):
        return f"TF_CONFIG's task index {task['index']} is outside its {len(hosts)} {task['type']} hosts"
    return None


# The files of a checkpoint whose prefix is what TensorFlow reads: model.ckpt.index, model.ckpt.data-00000-of-00001,
# and TF1's model.ckpt.meta.
CHECKPOINT_FILE = re.compile(r"(.+)\.(index|meta|data-\d+-of-\d+)$")


def require_checkpoint_or_folder(name, what):
    """Validates --NAME as an existing folder or checkpoint prefix; one of a checkpoint's files gets its prefix."""
    def check(path):
        if not path or os.path.isdir(path) or os.path.isfile(path + ".index"):
            return True
        one_file = CHECKPOINT_FILE.fullmatch(path)
        if one_file and os.path.isfile(one_file.group(1) + ".index"):
            raise flags.ValidationError(f"names one file of a checkpoint; pass its prefix, --{name}="
                                        f"{one_file.group(1)}")
        raise flags.ValidationError(f"must be {what}")  # absl puts "flag --NAME=PATH: " before it.
    flags.register_validator(name, check)


# The keys of an import_tf1.py --variable_map: the tutorial MLP's variables in tfvae.
VARIABLE_MAP_KEYS = ("encoder/hidden_0/kernel, encoder/latent_params/kernel, decoder/hidden_0/kernel, "
                     "decoder/logits/kernel and the same with bias (more hidden layers: hidden_1, ...)")


def define_import_tf1_flags():
    """Defines the flags of `scripts/import_tf1.py`."""
    define_path_flag("source", None, "A TF1 tf.train.Saver checkpoint prefix (e.g. model.ckpt, beside "
                     "model.ckpt.index) or a TF1 SavedModel folder of the tutorial graph.", required=True)
    define_path_flag("export_dir", None, "Where the tfvae SavedModel goes, e.g. saved_models/NAME.",
                     required=True)
    refuse_existing_file("export_dir", "a folder for the SavedModel, e.g. saved_models/NAME", replaced_whole=True,
                         required=True)
    flags.register_validator(
        "export_dir", lambda export_dir: _is_replaceable(export_dir, "tfvae.json"),
        message="--export_dir exists and is not a tfvae export (no tfvae.json); the export would replace it, so "
                "remove it or choose another --export_dir")
    define_path_flag("variable_map", None, "JSON file {tfvae variable path: TF1 variable name}, for graphs "
                     f"whose variables are not the tutorial's Variable ... Variable_7. Its keys: "
                     f"{VARIABLE_MAP_KEYS}; import_tf1.py lists the checkpoint's names, the values.")
    flags.DEFINE_bool("with_optimizer", False, "Also carry Adam's slots and step, so train.py --init_from="
                      "EXPORT continues the TF1 run.")
    flags.DEFINE_enum("dataset", "mnist", DATASETS, "The data the TF1 model was trained on (sets image shape "
                      "and the export's metadata).")
    flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate recorded in the export's tfvae.json; a run "
                       "continued from it (train.py --init_from) trains at its own --learning_rate.")
    flags.DEFINE_float("adam_epsilon", 1e-8, "Adam epsilon of the TF1 run (AdamOptimizer's default 1e-8).")
    for name in ("learning_rate", "adam_epsilon"):
        flags.register_validator(name, _positive(name), message=f"--{name} must be a finite number > 0")
    require_checkpoint_or_folder("source", "a TF1 checkpoint prefix (PREFIX.index exists) or a SavedModel folder")
    flags.register_validator("variable_map", lambda path: path is None or os.path.isfile(path),
                             message="--variable_map must be an existing JSON file")
    _quiet_absl_logging()


@dataclasses.dataclass(frozen=True)
class ImportConfig:
    source: str
    export_dir: str
    variable_map: str
    with_optimizer: bool
    dataset: str
    learning_rate: float
    adam_epsilon: float


def import_config_from_flags():
    return ImportConfig(**_flag_values(ImportConfig))


def define_export_tflite_flags():
    """Defines the flags of `scripts/export_tflite.py`."""
    define_saved_model_flag("saved_models/tf1_tutorial")
    define_output_file_flag("model.tflite", "The .tflite file to write.", ".tflite")
    flags.DEFINE_enum("quantize", "none", ("none", "dynamic"), "none: float32; dynamic: int8 weights, float "
                      "activations (about 4x smaller, less exact).")
    # Both models' outputs of every input are held at once: 10,000 MNIST inputs take ~100 MB.
    flags.DEFINE_integer("check_examples", 256, "Random inputs compared between LiteRT and the SavedModel.",
                         lower_bound=1, upper_bound=10000)
    _quiet_absl_logging()


@dataclasses.dataclass(frozen=True)
class ExportTfliteConfig:
    saved_model: str
    output: str
    quantize: str
    check_examples: int


def export_tflite_config_from_flags():
    return ExportTfliteConfig(**_flag_values(ExportTfliteConfig))


def define_generate_flags():
    """Defines the flags of `scripts/generate.py`."""
    define_saved_model_flag("saved_models/tf1_tutorial")
    define_output_file_flag("samples.png", "PNG file to write.", ".png")
    flags.DEFINE_integer("rows", None, "Grid rows of samples (default 4); with --reconstruct, pairs of rows, "
                         "originals over their reconstructions (default 1).", lower_bound=1, upper_bound=64)
    flags.DEFINE_integer("cols", 4, "Grid columns.", lower_bound=1, upper_bound=64)
    define_seed_flag("Seeds z ~ N(0, I).")
    flags.DEFINE_bool("reconstruct", False, "Instead of samples: the first test images, each row of them above a "
                      "row of their reconstructions.")
    define_model_data_dir_flag("Data for --reconstruct")
    flags.DEFINE_string("label", None, "Conditional models: a class (e.g. 7, or an image folder's class name) or "
                        "'all' for one row per class (the rows are then the classes, whatever --rows says).")
    # Its range and names depend on the model, checked once it is loaded.
    flags.register_validator("label", lambda label: label is None or bool(label.strip()),
                             message="--label must be a class number (e.g. 7), a class name or 'all'")
    flags.DEFINE_enum("pixels", "mean", ("mean", "sample"), "mean: each image is the decoded mean of p(x|z) (for "
                      "--likelihood=autoregressive_bernoulli its mean-field image); sample: each pixel drawn from "
                      "p(x|z) (binary for Bernoulli likelihoods, the autoregressive one pixel by pixel given the "
                      "pixels drawn before), seeded by --seed, through the export's `sample` signature.")
    flags.register_multi_flags_validator(
        ["label", "reconstruct"], lambda f: not (f["label"] is not None and f["reconstruct"]),
        message="--reconstruct reconstructs each test image with its own label; drop --label")
    flags.register_multi_flags_validator(
        ["pixels", "reconstruct"], lambda f: not (f["pixels"] == "sample" and f["reconstruct"]),
        message="--reconstruct shows decoded means; drop --pixels=sample")
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
    pixels: str


def generate_config_from_flags():
    values = _flag_values(GenerateConfig)
    if values["rows"] is None:
        values["rows"] = 1 if values["reconstruct"] else 4
    return GenerateConfig(**values)


def define_classifier_flags():
    """Defines the flags of `scripts/train_classifier.py`."""
    flags.DEFINE_enum("dataset", "mnist", TRAIN_DATASETS, "Dataset whose labels the classifier learns; "
                      "image_folder: the class folders of --data_dir, as train.py reads them.")
    define_path_flag("data_dir", "", "MNIST_data/ IDX folder, TFDS data dir, or with --dataset=image_folder a "
                     "folder holding train/ and test/ with one subfolder of images per class.")
    _define_image_size_flag()
    flags.DEFINE_integer("validation_size", 5000, "Training examples held out for validation; unless set, for "
                         "--dataset=image_folder a tenth of train/'s images, 5000 at most.", lower_bound=0)
    flags.DEFINE_integer("epochs", 3, "Training epochs.", lower_bound=1)
    flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1)
    flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
    flags.register_validator("learning_rate", _positive("learning_rate"),
                             message="--learning_rate must be a finite number > 0")
    define_seed_flag("Seeds initialisation and data order.")
    define_path_flag("export_dir", None, "Where the classifier SavedModel goes. Default: "
                     "saved_models/DATASET_classifier (evaluate_cvae.py's default for models of that dataset).")
    require_existing_folder("data_dir", DATA_DIR_HINT)
    _require_data_dir_for_an_image_folder()
    refuse_existing_file("export_dir", "a folder for the SavedModel", replaced_whole=True)
    # Checked before training, not when the export is written minutes later.
    flags.register_multi_flags_validator(
        ["export_dir", "dataset"],
        lambda f: _is_replaceable(f["export_dir"] or classifier_export_dir(f["dataset"]), "classifier.json"),
        message="--export_dir exists and is not a classifier export (no classifier.json); the export would replace "
                "it, so remove it or choose another --export_dir")
    _quiet_absl_logging()


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    dataset: str
    data_dir: str
    image_size: tuple
    validation_size: int
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    export_dir: str


def _default_validation_size(values):
    """`values["validation_size"]`, or for an image folder where the flag was not set, a tenth of its training
    images (at least one of two or more), at most the flag's default: 5,000 of a folder of 2,000 would be refused."""
    if values["dataset"] != IMAGE_FOLDER or FLAGS["validation_size"].present:
        return values["validation_size"]
    from tfvae import image_folder  # Local: it imports TensorFlow, which --help does without.

    try:
        count = len(image_folder.scan(values["data_dir"], warn=False)[1]["train"])
    except image_folder.FolderError:  # Reading the folder says what is wrong with it, in its own words.
        return values["validation_size"]
    return min(values["validation_size"], max(1, count // 10) if count > 1 else 0)


def classifier_config_from_flags():
    values = _flag_values(ClassifierConfig)
    values["validation_size"] = _default_validation_size(values)
    values["image_size"] = tuple(int(s) for s in values["image_size"])
    values["export_dir"] = values["export_dir"] or classifier_export_dir(values["dataset"])
    return ClassifierConfig(**values)


def classifier_export_dir(dataset):
    """train_classifier.py's default --export_dir for `dataset`, where evaluate_cvae.py looks by default."""
    return os.path.join("saved_models", f"{dataset}_classifier")


def shipped_path(path):
    """A shipped file's `path` from here when it is here, else beside the tfvae package (a source checkout used
    from another folder)."""
    if os.path.exists(path):
        return path
    beside_package = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), path)
    return beside_package if os.path.exists(beside_package) else path


# A million samples of ten classes take minutes; beyond, their z alone would fill memory.
MAX_SAMPLES_PER_CLASS = 100000


def define_evaluate_cvae_flags():
    """Defines the flags of `scripts/evaluate_cvae.py`."""
    define_saved_model_flag("saved_models/cvae_mnist", kind="label-conditioned tfvae SavedModel folder")
    define_path_flag("classifier", "", "The classifier export of scripts/train_classifier.py that judges the "
                     "samples. Default: saved_models/DATASET_classifier of the model's dataset (for MNIST the "
                     "shipped one), from here or beside the tfvae package.")
    require_existing_folder("classifier", "the folder of a train_classifier.py export")
    flags.DEFINE_integer("samples_per_class", 100, "Samples z ~ N(0, I) decoded per class.", lower_bound=1,
                         upper_bound=MAX_SAMPLES_PER_CLASS)
    define_seed_flag("Seeds z.")
    define_output_file_flag("", "JSON file to write: overall and per-class accuracy, confusion matrix. Default: "
                            "class_accuracy_nN_seedS.json (N: --samples_per_class; with --classifier=DIR, "
                            "class_accuracy_nN_seedS_by_DIR.json) in the --saved_model folder.",
                            ".json")
    _quiet_absl_logging()


@dataclasses.dataclass(frozen=True)
class EvaluateCVAEConfig:
    saved_model: str
    classifier: str
    samples_per_class: int
    seed: int
    output: str


def evaluate_cvae_config_from_flags():
    values = _flag_values(EvaluateCVAEConfig)
    # Another judge's report is another file: named by the --classifier's folder.
    judge = f"_by_{os.path.basename(os.path.normpath(values['classifier']))}" if values["classifier"] else ""
    values["output"] = _output_beside_model(
        values, values["saved_model"],
        f"class_accuracy_n{values['samples_per_class']}_seed{values['seed']}{judge}.json")
    return EvaluateCVAEConfig(**values)


EVAL_BINARIZE = ("auto",) + BINARIZE
# plot.py's interpolation draws its pairs (with --seed) from this many first test images, whatever else it draws.
# The first test images the interpolation draws its pairs from and the traversal its image and dimensions' KL.
PLOT_POOL = 1000
PLOT_SCATTER_EXAMPLES = 5000  # The latent scatter's test images unless --scatter_examples says.
PLOT_KINDS = ("samples", "reconstructions", "manifold", "latent_scatter", "interpolation", "traversal",
              "loss_curves", "class_grid")


def _define_model_source_flags():
    define_path_flag("saved_model", None, "A tfvae SavedModel folder (e.g. saved_models/tf1_tutorial).")
    define_path_flag("model_dir", None, "Instead of --saved_model: a run folder; the model is rebuilt from its "
                     "flags.txt and its latest checkpoint restored.")
    flags.register_multi_flags_validator(
        ["saved_model", "model_dir"], lambda f: bool(f["saved_model"]) != bool(f["model_dir"]),
        message="pass exactly one of --saved_model=EXPORT_DIR and --model_dir=RUN_DIR")
    require_existing_folder("saved_model", "a tfvae SavedModel folder, e.g. saved_models/tf1_tutorial")
    require_existing_folder("model_dir", "a run folder of train.py, e.g. runs/tf1_tutorial")


def define_evaluate_flags():
    """Defines the flags of `scripts/evaluate.py`."""
    _define_model_source_flags()
    define_model_data_dir_flag("Data to evaluate on")
    flags.DEFINE_enum("split", "test", ("test", "validation"), "Split to evaluate; validation is the first "
                      "--validation_size training examples of the run.")
    flags.DEFINE_integer("num_importance_samples", 1000, "K, samples of q(z|x) per example for the "
                         "importance-sampled log-likelihood.", lower_bound=1)
    flags.DEFINE_integer("num_examples", 0, "Evaluate N examples of the split, chosen at random with --seed "
                         "(its first ones are easier than the rest); 0: all.", lower_bound=0)
    flags.DEFINE_integer("batch_size", 100, "Examples per batch.", lower_bound=1)
    flags.DEFINE_integer("samples_per_batch", 100, "Importance samples per decoder call; memory grows with "
                         "batch_size * samples_per_batch decoded examples, plus batch_size * "
                         "num_importance_samples * latent_dim floats of noise.", lower_bound=1)
    flags.DEFINE_enum("binarize", "auto", EVAL_BINARIZE, "Test-data protocol. auto: dynamic (a fresh Bernoulli "
                      "sample with --seed, the standard protocol) for Bernoulli models and models trained on binary "
                      "images, gray levels otherwise.")
    define_seed_flag("Seeds binarization, the samples of q(z|x) and the choice of --num_examples.")
    define_output_file_flag(None, "JSON file to write. Default: evaluation_SPLIT_kK_nN.json (N: --num_examples "
                            "or all; then _BINARIZE and _seedS when not the defaults) in the --saved_model or "
                            "--model_dir folder, so that a quick evaluation does not replace a thorough one.", ".json")
    _quiet_absl_logging()


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    saved_model: str
    model_dir: str
    data_dir: str
    split: str
    num_importance_samples: int
    num_examples: int
    batch_size: int
    samples_per_batch: int
    binarize: str
    seed: int
    output: str


def _output_beside_model(values, folder, name):
    """`values["output"]`, or when not given `folder/name`: an evaluation's JSON goes beside the model it measures,
    named by what it measured, so a quick one never replaces a thorough one (as the shipped ones are named)."""
    if values["output"]:
        return values["output"]
    output = os.path.join(folder, name)
    # The flag's validator checked only an --output given; this default is checked before minutes of work.
    problem = find_write_problem(output)
    if problem:
        print(f"error: the default --output={output}: {problem}; pass --output=PATH.json", file=sys.stderr)
        sys.exit(2)
    return output


def evaluate_config_from_flags():
    values = _flag_values(EvaluateConfig)
    # Every protocol choice away from the default is in the name, so that no evaluation replaces another measured
    # otherwise (gray levels are not nats; another seed is another estimate).
    protocol = (f"_{values['binarize']}" if values["binarize"] != "auto" else "") + (
        f"_seed{values['seed']}" if values["seed"] else "")
    values["output"] = _output_beside_model(
        values, values["saved_model"] or values["model_dir"],
        f"evaluation_{values['split']}_k{values['num_importance_samples']}_n{values['num_examples'] or 'all'}"
        f"{protocol}.json")
    return EvaluateConfig(**values)


def define_plot_flags():
    """Defines the flags of `scripts/plot.py`."""
    _define_model_source_flags()
    flags.DEFINE_list("kinds", ["all"], f"Plots to draw: all, or some of {', '.join(PLOT_KINDS)}.")
    define_path_flag("output_dir", "plots", "Folder for the PNG files (KIND.png).")
    refuse_existing_file("output_dir", "a folder for the PNG files (created if missing)")
    define_model_data_dir_flag("Test images")
    define_seed_flag("Seeds z ~ N(0, I), binarization and the choice of test images.")
    flags.DEFINE_integer("grid_size", 8, "Rows and columns of sample, manifold and traversal grids.", lower_bound=2,
                         upper_bound=32)
    flags.DEFINE_integer("scatter_examples", None, f"Test examples in the latent scatter. Default: "
                         f"{PLOT_SCATTER_EXAMPLES:,}, or the whole test split when it is smaller (the interpolation "
                         f"and the traversal draw from the first {PLOT_POOL:,} whatever this is).", lower_bound=10)
    flags.register_validator(
        "kinds", lambda kinds: bool(kinds) and all(k in PLOT_KINDS + ("all",) for k in kinds),
        message=f"--kinds must be 'all' or a comma-separated subset of {','.join(PLOT_KINDS)}")
    _quiet_absl_logging()


@dataclasses.dataclass(frozen=True)
class PlotConfig:
    saved_model: str
    model_dir: str
    kinds: tuple
    output_dir: str
    data_dir: str
    seed: int
    grid_size: int
    scatter_examples: int


def plot_config_from_flags():
    values = _flag_values(PlotConfig)
    values["kinds"] = tuple(dict.fromkeys(values["kinds"]))  # Each kind once, in the order asked.
    return PlotConfig(**values)


def define_export_flags():
    """Defines the flags of `scripts/export.py`."""
    define_path_flag("model_dir", None, "A run folder of train.py; its latest checkpoint is exported (a --keep_best "
                     "run's best epoch's weights, as train.py exports them).")
    define_path_flag("saved_model", None, "Instead of --model_dir: a tfvae or classifier export to write again "
                     "with this version's signatures (an older one lacks the input checks); its weights, "
                     "optimizer state and other files are kept.")
    define_path_flag("export_dir", None, "Where the SavedModel goes. Default: the run's --export_dir, or in "
                     "place for --saved_model.")
    flags.register_multi_flags_validator(
        ["saved_model", "model_dir"], lambda f: bool(f["saved_model"]) != bool(f["model_dir"]),
        message="pass exactly one of --model_dir=RUN_DIR and --saved_model=EXPORT_DIR")
    require_existing_folder("saved_model", "a tfvae or classifier SavedModel folder")
    require_existing_folder("model_dir", "a run folder of train.py, e.g. runs/tf1_tutorial")
    refuse_existing_file("export_dir", "a folder for the SavedModel", replaced_whole=True)
    flags.register_multi_flags_validator(
        ["export_dir", "saved_model"],
        lambda f: not f["export_dir"] or _is_replaceable(f["export_dir"], _export_metadata_file(f["saved_model"])),
        message="--export_dir exists and is not an export of the same kind (no tfvae.json, or classifier.json for a "
                "classifier); the export would replace it, so remove it or choose another --export_dir")
    flags.register_multi_flags_validator(["export_dir", "model_dir"], _run_export_dir_is_replaceable)
    _quiet_absl_logging()


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """scripts/export.py: exactly one of `model_dir` (a run) and `saved_model` (an export to write again)."""

    model_dir: str
    saved_model: str
    export_dir: str


def export_config_from_flags():
    return ExportConfig(**_flag_values(ExportConfig))


def _run_export_dir_is_replaceable(f):
    """export.py --model_dir without --export_dir writes to the run's own --export_dir: checked as one given."""
    if f["export_dir"] or not f["model_dir"]:
        return True
    try:
        export_dir = run_config_of_run_folder(f["model_dir"]).export_dir
    except ValueError:
        return True  # No readable flags.txt: said when the run is loaded, with the fix.
    if artifacts.holds_something_else(export_dir, "tfvae.json"):  # No other validator sees this path.
        raise flags.ValidationError(f"the run's --export_dir={export_dir} exists and is not a tfvae export; the "
                                    f"export would replace it, so remove it or pass --export_dir=PATH")
    return True


def _export_metadata_file(saved_model):
    """The file that marks an export of the kind of `saved_model` (a tfvae one when None: a run's checkpoint)."""
    classifier_file = "classifier.json"
    is_classifier = saved_model and os.path.isfile(os.path.join(saved_model, classifier_file))
    return classifier_file if is_classifier else "tfvae.json"


# Fields whose default is not what a run meant before the field existed: exports from before --adam trained with
# Keras' Adam (its state has no beta powers).
_MEANING_BEFORE_FIELD = {"adam": "keras"}


def run_config_from_dict(values):
    """The RunConfig of an export's `tfvae.json` "config"; fields it predates get what runs did without them.

    Raises:
      ValueError: a field RunConfig does not know (written by a newer tfvae).
    """
    fields = {field.name: field for field in dataclasses.fields(RunConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown config fields {unknown}; was it written by a newer tfvae version?")
    values = {**{k: v for k, v in _MEANING_BEFORE_FIELD.items() if k not in values}, **values}
    return RunConfig(**{name: tuple(value) if isinstance(fields[name].default, tuple) else value
                        for name, value in values.items()})


def run_config_from_flagfile(path):
    """Reads the `flags.txt` a run wrote (see `to_flagfile`) back into its RunConfig, without touching FLAGS.

    Raises:
      ValueError: the file is missing or holds a flag RunConfig does not know.
    """
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file; --model_dir must be a run folder written by train.py")
    fields = {field.name: field for field in dataclasses.fields(RunConfig)}
    values = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot be read ({e}); put back the flags.txt train.py wrote in that run folder")
    for line in lines:
        line = line.strip()
        if not line.startswith("--"):
            continue
        name, has_value, text = line[2:].partition("=")
        if not has_value:
            value = not name.startswith("no") or name in fields
            name = name if name in fields else name[2:]
        if name not in fields:
            raise ValueError(f"{path}: unknown flag --{name}; was it written by another tfvae version?")
        if has_value:
            default = fields[name].default
            try:
                if isinstance(default, tuple):
                    value = tuple(int(v) for v in text.split(",") if v)
                elif isinstance(default, bool):
                    value = text.lower() in ("1", "true")
                elif isinstance(default, (int, float)):
                    value = type(default)(text)
                else:
                    value = text
            except ValueError:
                kind = ("a comma-separated list of integers" if isinstance(default, tuple) else
                        "an integer" if isinstance(default, int) else "a number")
                raise ValueError(f"{path}: --{name}={text} is not {kind}; put back the value train.py wrote there "
                                 f"(flags.txt records the run's flags)") from None
        values[name] = value
    return RunConfig(**values)


def _quiet_absl_logging():
    # TensorFlow logs every saved function at INFO through absl; warnings and errors are what users need.
    FLAGS.set_default("verbosity", logging.WARNING)


# What a run is: a --resume keeps these as the run's flags.txt has them, since its checkpoint's step is a position in
# that data and its weights were trained for that model and objective (and --keep_best: its best/ folder knows only
# the epochs run with it). Paths, speed, devices, the number of epochs, the early stopping patience and min_delta, the
# learning rate and the guards against divergence may change between restarts.
RUN_DEFINING_FLAGS = ("model", "dataset", "image_size", "binarize", "corruption", "corruption_strength",
                      "validation_size", "hidden_sizes", "latent_dim", "likelihood", "gaussian_stddev",
                      "learn_variance", "ar_kernel_size", "ar_channels", "conv_filters", "objective",
                      "num_importance_samples", "beta", "kl_warmup_epochs", "free_bits", "batch_size", "adam",
                      "adam_epsilon", "seed", "keep_best")


def resume_changes(cfg):
    """The run-defining flags (`RUN_DEFINING_FLAGS`) in which `cfg`, a --resume, differs from the run it resumes,
    as "--batch_size=50 (the run's: 100)"; empty when they agree or there is no readable run to compare with."""
    try:
        run_cfg = run_config_from_flagfile(os.path.join(cfg.model_dir, RUN_FLAGS_FILE))
    except (OSError, ValueError):  # No run yet (a first start with --resume), or one of another tfvae version.
        return []

    def shown(value):
        return ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)

    changes = [f"--{name}={shown(getattr(cfg, name))} (the run's: {shown(getattr(run_cfg, name))})"
               for name in RUN_DEFINING_FLAGS if getattr(cfg, name) != getattr(run_cfg, name)]
    # float16's loss scale wraps Adam, so its checkpoints hold other objects; bfloat16 and float32 share theirs.
    if (cfg.mixed_precision == "mixed_float16") != (run_cfg.mixed_precision == "mixed_float16"):
        changes.append(f"--mixed_precision={cfg.mixed_precision} (the run's: {run_cfg.mixed_precision}; float16's "
                       f"loss scale changes what a checkpoint holds)")
    return changes


def run_config_of_run_folder(model_dir):
    """The RunConfig of the run in `model_dir`, from its flags.txt, with its folders made absolute.

    train.py records `--model_dir` and `--export_dir` as typed, relative to the folder it ran in. That folder is
    where the recorded model_dir meets the run folder given (`runs/x` in `/home/me/runs/x`: `/home/me`), so the
    run's export is found from any folder; a run folder moved elsewhere leaves them relative to this one.

    Raises:
      ValueError: no readable flags.txt, naming the fix.
    """
    cfg = run_config_from_flagfile(os.path.join(model_dir, RUN_FLAGS_FILE))
    ran_in = folder_run_in(model_dir, cfg.model_dir) or os.getcwd()
    return dataclasses.replace(cfg, model_dir=os.path.abspath(model_dir),
                               export_dir=os.path.join(ran_in, cfg.export_dir))


def folder_run_in(path, recorded):
    """The folder train.py ran in, from a folder it wrote (`path`) and that folder's relative path as the run
    recorded it (`recorded`, its --model_dir or --export_dir as typed): `/home/me` for `/home/me/runs/x` and
    `runs/x`. None when `path` does not end in `recorded` (moved since) or `recorded` is absolute."""
    path, recorded = os.path.abspath(path), os.path.normpath(recorded)
    if os.path.isabs(recorded) or not path.endswith(os.sep + recorded):
        return None
    return path[:-len(recorded)].rstrip(os.sep)


def _is_replaceable(export_dir, metadata_file):
    """True when an export may be written to `export_dir`: nothing there, an empty folder, or an earlier export
    (it holds `metadata_file`), which is replaced whole at the end."""
    # A file there is refused by its own validator (refuse_existing_file).
    return not os.path.isdir(export_dir) or not artifacts.holds_something_else(export_dir, metadata_file)


def default_run_dirs(name):
    """(model_dir, export_dir) of a run named `name` when the flags give none: runs/NAME and saved_models/NAME."""
    return os.path.join("runs", name), os.path.join("saved_models", name)


def _run_dirs(f):
    """(model_dir, export_dir) the train flags `f` (a validator's dict, which may hold only one of them) resolve
    to."""
    default_model_dir, default_export_dir = default_run_dirs(f["name"] or f["model"])
    return f.get("model_dir") or default_model_dir, f.get("export_dir") or default_export_dir


def _export_dir_is_usable(f):
    return _is_replaceable(_run_dirs(f)[1], "tfvae.json")


def _run_outside_export(f):
    # realpath: a symlink must not hide that the export, replaced whole, would take the run with it.
    model_dir, export_dir = (os.path.realpath(path) for path in _run_dirs(f))
    return model_dir != export_dir and not model_dir.startswith(os.path.join(export_dir, ""))


def _run_outside_any_export(f):
    """A --model_dir inside an existing tfvae export would be deleted by the next export there, which replaces the
    folder whole (and says only whose export it replaced)."""
    folder = os.path.dirname(os.path.realpath(_run_dirs(f)[0]))
    while folder != os.path.dirname(folder):
        if all(os.path.isfile(os.path.join(folder, name)) for name in ("saved_model.pb", "tfvae.json")):
            raise flags.ValidationError(f"--model_dir={_run_dirs(f)[0]} is inside the tfvae export {folder}, and "
                                        f"an export there replaces that folder whole, this run with it; pass a "
                                        f"--model_dir outside it, e.g. runs/NAME")
        folder = os.path.dirname(folder)
    return True


def _default_run_paths_writable(f):
    """The per-flag validators check --model_dir and --export_dir as given; these are their defaults."""
    default_model_dir, default_export_dir = default_run_dirs(f["name"] or f["model"])
    for flag, path, beside in (("model_dir", default_model_dir, False), ("export_dir", default_export_dir, True)):
        problem = not f[flag] and find_write_problem(path, beside)
        if problem:
            raise flags.ValidationError(f"the default --{flag}={path}: {problem}; pass --{flag}=PATH in a folder "
                                        f"you can write to")
    return True


def _model_dir_is_usable(f):
    model_dir = _run_dirs(f)[0]
    if not os.path.isdir(model_dir) or not os.listdir(model_dir):
        return True
    if (f["overwrite"] or f["resume"]) and not os.path.isfile(os.path.join(model_dir, RUN_FLAGS_FILE)):
        # Every train.py run writes flags.txt first; a folder with files but without one is someone else's (or a
        # folder of runs, as runs/, given for one of them).
        does = "--overwrite empties" if f["overwrite"] else "--resume continues"
        raise flags.ValidationError(f"--model_dir={model_dir} holds files but no {RUN_FLAGS_FILE}, so it is not a "
                                    f"train.py run folder, and {does} only those; pass another --model_dir (or "
                                    f"empty that folder yourself)")
    return f["resume"] or f["overwrite"]


def config_from_flags():
    """Builds the RunConfig of this process's training flags, filling the defaults that derive from others."""
    name = FLAGS.name or FLAGS.model
    values = _flag_values(RunConfig)
    values.update(
        name=name,
        hidden_sizes=tuple(int(s) for s in FLAGS.hidden_sizes),
        conv_filters=tuple(int(s) for s in FLAGS.conv_filters),
        image_size=tuple(int(s) for s in FLAGS.image_size),
        likelihood=FLAGS.likelihood or DEFAULT_LIKELIHOOD.get(FLAGS.model, "bernoulli"),
        adam=FLAGS.adam or DEFAULT_ADAM.get(FLAGS.model, "keras"),
        # Absolute, so that the run's tools find its data from any folder (`data.model_data_dir`).
        data_dir=os.path.abspath(FLAGS.data_dir) if FLAGS.data_dir else "",
        model_dir=FLAGS.model_dir or default_run_dirs(name)[0],
        export_dir=FLAGS.export_dir or default_run_dirs(name)[1])
    if FLAGS.corruption_strength is None:  # The kind's default, written out so the run's flagfile shows it.
        values["corruption_strength"] = DEFAULT_CORRUPTION_STRENGTH.get(FLAGS.corruption, 0.0)
    values["validation_size"] = _default_validation_size(values)
    return RunConfig(**values)


def to_flagfile(cfg):
    """Renders a RunConfig as flagfile text that `--flagfile` reads back into the same RunConfig."""
    lines = []
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if field.name in ("resume", "overwrite", "init_from", "init_from_tf1"):
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
    define_saved_model_flag("saved_models/denoise_mnist")
    define_path_flag("input", None, "An image file (PNG, JPEG, BMP, GIF or WebP; gray or RGB) or a folder of them.",
                     required=True)
    flags.register_validator("input", lambda path: not path or os.path.exists(path),
                             message="no such file or folder; pass an image file (PNG, JPEG, BMP, GIF or WebP) or a "
                                     "folder of them")
    define_path_flag("output", None, "For one input file: the file to write (.png, .jpg or .jpeg) or a folder; "
                     "for an input folder: the folder to write NAME.png files into.", required=True)
    refuse_unwritable("output")
    flags.DEFINE_bool("resize", False, "Scale images whose height and width differ from the model's to fit, "
                      "keeping their shape (centred, the rest filled with their border's gray level); without it "
                      "such images are refused. Outputs have the model's size.")
    flags.DEFINE_bool("invert", False, "Invert the image (gray levels, or each colour) before and after restoring: "
                      "for dark digits on a light background, when the model learned light on dark (MNIST).")
    flags.register_multi_flags_validator(
        ["input", "output"], lambda f: not (f["input"] and os.path.isdir(f["input"]) and f["output"]
                                            and f["output"].lower().endswith(IMAGE_SUFFIXES)),
        message="--input is a folder, so --output must be a folder to write NAME.png files into, not an image file")
    flags.register_multi_flags_validator(
        ["input", "output"], lambda f: not (f["input"] and os.path.isfile(f["input"]) and f["output"]
                                            and not os.path.isdir(f["output"])
                                            and not f["output"].lower().endswith(IMAGE_SUFFIXES)),
        message="--output must end in .png, .jpg or .jpeg, or name an existing folder")
    _quiet_absl_logging()


@dataclasses.dataclass(frozen=True)
class EnhanceConfig:
    saved_model: str
    input: str
    output: str
    resize: bool
    invert: bool


def enhance_config_from_flags():
    return EnhanceConfig(**_flag_values(EnhanceConfig))


def define_restoration_flags():
    """Defines the flags of `scripts/evaluate_restoration.py`."""
    define_saved_model_flag("saved_models/denoise_mnist")
    define_model_data_dir_flag("Test images of the model's dataset")
    define_output_file_flag("", "JSON file to write the PSNR / SSIM table to. Default: "
                            "restoration[_KINDS]_nN_seedS.json (KINDS: --corruptions joined by +) in the "
                            "--saved_model folder.", ".json")
    flags.DEFINE_list("corruptions", [], "Corruption kinds to measure (" + ", ".join(CORRUPTION_KINDS) + "), each "
                      "at the strength the model was trained with, else its default. Empty: the model's own kinds "
                      "(all four for mixed).")
    flags.DEFINE_integer("num_examples", 10000, "Test images to measure on (fewer than all: chosen at random "
                         "with --seed).", lower_bound=1)
    define_seed_flag("Seeds the corruptions, and the choice of images when --num_examples is fewer than all.")
    define_output_file_flag("", "Optional PNG: a few test images, clean, then corrupted and restored per kind.",
                            ".png", name="grid")
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
    values = _flag_values(RestorationConfig)
    kinds = "_" + "+".join(values["corruptions"]) if values["corruptions"] else ""
    values["output"] = _output_beside_model(
        values, values["saved_model"], f"restoration{kinds}_n{values['num_examples']}_seed{values['seed']}.json")
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


def _stray_arguments(argv):
    """The arguments of `argv` that are neither flags nor the values of flags given as `--name value`."""
    stray, value_expected = [], False
    for argument in argv[1:]:
        if argument == "--":
            return stray + argv[argv.index("--") + 1:]
        if value_expected:
            value_expected = False
        elif argument.startswith("-"):
            name = argument.lstrip("-").split("=", 1)[0]
            value_expected = "=" not in argument and name in FLAGS and not FLAGS[name].boolean
        else:
            stray.append(argument)
    return stray


def _crowded_flagfile_line(line):
    """What a flagfile line holds beyond its one flag ("two flags", "a comment after its flag"), or "". absl reads
    the whole line as the flag's value. A string flag's value may hold " #" (a folder's name), so a comment counts
    only after a flag of another type; a second known --flag counts after any flag."""
    if not line.startswith("-"):
        return ""
    for boolean_no, name in re.findall(r"\s--?(no)?([A-Za-z_]\w*)(?==|\s|$)", line):
        if boolean_no + name in FLAGS or (boolean_no and name in FLAGS and FLAGS[name].boolean):
            return "two flags"
    first = line.lstrip("-").split("=", 1)[0].split()[0]
    is_string = first in FLAGS and type(FLAGS[first].parser) in (flags.ArgumentParser, _PathParser)
    return "a comment after its flag" if re.search(r"\s#", line) and not is_string else ""


def _flagfile_problem(arguments, including=()):
    """What absl would get wrong in the flagfiles among `arguments` and those they name, as an error line, or None:
    a chain of flagfiles that includes itself, which absl skips with a warning and runs on without its settings; or
    a line holding two flags or a trailing comment, which absl reads as one flag's value and refuses naming only the
    flag."""
    for argument in arguments:
        if not argument.startswith(("--flagfile=", "-flagfile=")):
            continue
        path = argument.split("=", 1)[1]
        chain = [*including, path]
        if os.path.realpath(path) in map(os.path.realpath, including):
            return (f"--flagfile={chain[0]} includes itself ({' -> '.join(chain)}); remove the --flagfile line that "
                    f"closes the loop")
        try:
            with open(path, encoding="utf-8") as f:
                lines = [line.strip() for line in f]
        except (OSError, UnicodeDecodeError):
            continue  # absl's own error names it.
        for number, line in enumerate(lines, 1):
            crowded = _crowded_flagfile_line(line)
            if crowded:
                return (f"{path} line {number} has {crowded} ({line!r}), which would be read as one flag's value; "
                        f"put each --flag and each # comment on a line of its own")
        problem = _flagfile_problem(lines, chain)
        if problem:
            return problem
    return None


HELP_FLAGS = ("--help", "-help", "-?", "--helpshort", "-helpshort", "--helpfull", "-helpfull", "--helpxml",
              "-helpxml")


def parse_flags_or_exit(argv):
    """absl `flags_parser`: any flag error or stray argument becomes one line on stderr and exit code 2."""
    # --help lists the main module's key flags, and the scripts define theirs here: make them the script's too.
    for flag in FLAGS.flags_by_module_dict().get(__name__, []):
        FLAGS.register_key_flag_for_module(argv[0], flag)
    # absl opens a flagfile's path as given; a shell leaves "~" after "--flagfile=" alone.
    argv = [re.sub(r"^(--?flagfile=)(~.*)$", lambda m: m[1] + os.path.expanduser(m[2]), arg) for arg in argv]
    # Found before parsing: absl validates the flags first, and a forgotten "--flagfile=" would surface as
    # whatever validator its absence trips.
    stray = _stray_arguments(argv)
    if stray:
        print(f"error: unexpected arguments {stray}; every setting is a --flag, a flagfile is --flagfile=PATH "
              f"(see --help)", file=sys.stderr)
        sys.exit(2)
    problem = _flagfile_problem(argv[1:])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    try:
        remaining = FLAGS(argv)
    except SystemExit as e:
        # absl's --help and --helpfull print the usage, then exit 1; asking for help is not an error.
        if e.code == 1 and any(arg.split("=")[0] in HELP_FLAGS for arg in argv[1:]):
            sys.exit(0)
        raise
    except UnicodeDecodeError as e:  # absl reads flagfiles as UTF-8 text.
        named = [arg.split("=", 1)[1] for arg in argv[1:] if arg.startswith(("--flagfile=", "-flagfile="))]
        print(f"error: {' or '.join('--flagfile=' + name for name in named) or 'a flagfile'} (or a flagfile it "
              f"includes) is not UTF-8 text (byte 0x{e.object[e.start]:02x}); save it as UTF-8, or check that "
              f"--flagfile names a flagfile", file=sys.stderr)
        sys.exit(2)
    except flags.Error as e:
        # absl puts each failed validator on a line of its own; kept apart on the one line. Its flagfile errors
        # begin "ERROR::", which our own "error:" already says.
        lines = [" ".join(line.split()).removeprefix("ERROR:: ").rstrip(".") for line in str(e).splitlines()]
        # A validator of several flags is reported after all their values ("flags a=1, b=2: --a ..."); its
        # message names what matters.
        lines = [re.sub(r"^flags .*?: (?=--|the default )", "", line) for line in lines]
        # absl shows a list flag's value as Python's ['32', '64']: shown as typed, 32,64.
        lines = [re.sub(r"=\[((?:'[^']*'(?:, )?)*)\]", lambda m: "=" + ",".join(re.findall(r"'([^']*)'", m[1])), line)
                 for line in lines]
        # A required flag left out: absl says "flag --output=None: Flag --output must have a value other than None".
        lines = [re.sub(r"^flag --(\w+)=None: Flag --\1 must have a value other than None$",
                        r"--\1 is required", line) for line in lines]
        message = "; ".join(line for line in lines if line)
        print(f"error: {message}; see --help", file=sys.stderr)
        sys.exit(2)
    if remaining[1:]:
        # The command line's own strays were refused above: these are flagfile lines without a leading "--",
        # which absl passes on as arguments, so the setting they meant would be silently ignored.
        print(f"error: unexpected arguments {remaining[1:]} in a flagfile; each of its lines must be a --flag "
              f"(e.g. --epochs=10) or a # comment", file=sys.stderr)
        sys.exit(2)
    if "verbosity" in FLAGS and FLAGS["verbosity"].using_default_value:
        # absl's app.run raises an unset --verbosity to INFO after parsing; set, our default (see above) holds.
        FLAGS.verbosity = FLAGS["verbosity"].default
    return remaining
