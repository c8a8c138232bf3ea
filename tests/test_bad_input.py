"""Bad input, everywhere: every case gets one error line naming the problem and the fix, a non-zero exit, and no
file written. Each case is a real script run in a fresh process (or a SavedModel signature called in one)."""

import glob
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, error_lines, run_script, write_idx

TINY_TRAIN = ["--model=mlp", "--hidden_sizes=8", "--latent_dim=2", "--validation_size=5", "--epochs=1",
              "--noimage_summaries"]


def fake_mnist(folder, *, images_magic=2051, n_labels=20, label=None, truncate=0, not_gzip=False, drop=None):
    """A small MNIST_data/ folder (20 train, 10 test digits) broken in one chosen way. Returns its path."""
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    write_idx(os.path.join(folder, "train-images-idx3-ubyte.gz"), images_magic,
               rng.integers(0, 256, (20, 28, 28)), truncate=truncate)
    labels = rng.integers(0, 10, n_labels) if label is None else np.full(n_labels, label)
    write_idx(os.path.join(folder, "train-labels-idx1-ubyte.gz"), 2049, labels)
    write_idx(os.path.join(folder, "t10k-images-idx3-ubyte.gz"), 2051, rng.integers(0, 256, (10, 28, 28)))
    write_idx(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"), 2049, rng.integers(0, 10, 10))
    if not_gzip:
        with open(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"), "wb") as f:
            f.write(b"not gzip at all")
    if drop:
        os.remove(os.path.join(folder, drop))
    return folder


def train(*args):
    """train.py with a tiny model writing under OUT (`{out}` is filled in by the test)."""
    return ("train.py", [*TINY_TRAIN, "--model_dir={out}/run", "--export_dir={out}/export", *args])


def init_into_linked_run_folder_case(ctx):
    os.makedirs(os.path.join(ctx["in"], "runs"))
    os.symlink(os.path.join(ctx["in"], "runs"), os.path.join(ctx["in"], "link"))
    return train(f"--init_from={REPO}/saved_models/cvae_mnist", f"--model_dir={ctx['in']}/link")


def data_case(**breakage):
    return lambda ctx: ("train.py", [*TINY_TRAIN, f"--data_dir={fake_mnist(ctx['in'] + '/MNIST_data', **breakage)}",
                                     "--model_dir={out}/run", "--export_dir={out}/export"])


def flagfile_case(text):
    def make(ctx):
        path = os.path.join(ctx["in"], "bad.flags")
        os.makedirs(ctx["in"], exist_ok=True)
        open(path, "w").write(text)
        return train(f"--flagfile={path}")
    return make


def existing_dir_case(flag, content, *args):
    def make(ctx):
        folder = os.path.join(ctx["in"], "existing")
        os.makedirs(folder)
        open(os.path.join(folder, "keep.txt"), "w").write(content)
        return train(f"--{flag}={folder}", *args)
    return make


def binary_flagfile_case(ctx):
    path = os.path.join(ctx["in"], "latin1.flags")
    os.makedirs(ctx["in"])
    open(path, "wb").write("--epochs=1\n# caf\u00e9\n".encode("latin-1"))
    return train(f"--flagfile={path}")


def run_folder_case(flags_text, *args):
    """A train.py run folder holding only its flags.txt (`flags_text`), passed as --model_dir or, with
    "--init_from=RUN" among `args`, as --init_from."""
    def make(ctx):
        folder = os.path.join(ctx["in"], "run")
        os.makedirs(folder)
        open(os.path.join(folder, "flags.txt"), "w").write(flags_text)
        uses = [arg.replace("RUN", folder) for arg in args]
        return train(*uses) if any(arg.startswith("--init_from") for arg in uses) else train(
            f"--model_dir={folder}", *uses)
    return make


def reexport_into_foreign_folder_case(ctx):
    folder = os.path.join(ctx["in"], "existing")
    os.makedirs(folder)
    open(os.path.join(folder, "keep.txt"), "w").write("not an export")
    return ("export.py", [f"--saved_model={ctx['export']}", f"--export_dir={folder}"])


def run_folder_as_export_case(ctx):
    folder = os.path.join(ctx["in"], "run")
    os.makedirs(folder)
    open(os.path.join(folder, "flags.txt"), "w").write("--model=mlp\n--export_dir=saved_models/mine\n")
    return ("generate.py", [f"--saved_model={folder}", "--output={out}/samples.png"])


def existing_classifier_dir_case(ctx):
    folder = os.path.join(ctx["in"], "existing")
    os.makedirs(folder)
    open(os.path.join(folder, "keep.txt"), "w").write("not a classifier")
    return ("train_classifier.py", [f"--data_dir={ctx['mnist']}", f"--export_dir={folder}"])


def saved_model_case(script, extra, kind):
    """`script --saved_model=` a missing folder or a folder that is not a tfvae export."""
    def make(ctx):
        folder = os.path.join(ctx["in"], "not_an_export")
        os.makedirs(ctx["in"])
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(os.path.join(ctx["in"], "digit.png"))
        if kind == "not tfvae":
            os.makedirs(folder)
            open(os.path.join(folder, "saved_model.pb"), "wb").write(b"something else")
        return (script, [f"--saved_model={folder}", *[a.format(**ctx) for a in extra]])
    return make


def existing_file_case(script, flag, *args):
    """`script --FLAG=` an existing file where a folder should go (`*args` may name `{export}`)."""
    def make(ctx):
        os.makedirs(ctx["in"])
        path = os.path.join(ctx["in"], "notes.txt")
        open(path, "w").write("a file")
        extra = [a.replace("{export}", ctx["export"]) for a in args]
        if script == "train.py":
            return train(f"--{flag}={path}", *extra)
        return (script, [f"--{flag}={path}", *extra])
    return make


def under_file_case(script, flag, *args, leaf="sub"):
    """`script --FLAG=` a path `leaf` below an existing file, where no folder can be made (`*args` may name
    `{export}` and `{in}`)."""
    def make(ctx):
        os.makedirs(ctx["in"])
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(os.path.join(ctx["in"], "digit.png"))
        path = os.path.join(ctx["in"], "notes.txt")
        open(path, "w").write("a file")
        extra = [a.replace("{export}", ctx["export"]).replace("{in}", ctx["in"]) for a in args]
        if script == "train.py":
            return train(f"--{flag}={path}/{leaf}", *extra)
        return (script, [f"--{flag}={path}/{leaf}", *extra])
    return make


def broken_link_case(script, flag, leaf, *args):
    """`script --FLAG=LINK/LEAF`, LINK a symbolic link to a folder that does not exist (`*args` may name
    `{export}`): writing there would fail only at the end of the work."""
    def make(ctx):
        os.makedirs(ctx["in"])
        link = os.path.join(ctx["in"], "link")
        os.symlink(os.path.join(ctx["in"], "gone"), link)
        path = os.path.join(link, leaf) if leaf else link
        extra = [a.replace("{export}", ctx["export"]) for a in args]
        return train(f"--{flag}={path}", *extra) if script == "train.py" else (script, [f"--{flag}={path}", *extra])
    return make


def broken_export_case(script, extra, breakage):
    """`script --saved_model=` a copy of the tiny export with its tfvae.json not JSON, its variables' data or index
    cut short, or its variables gone."""
    def make(ctx):
        folder = os.path.join(ctx["in"], "export")
        shutil.copytree(ctx["export"], folder)
        if breakage == "metadata":
            open(os.path.join(folder, "tfvae.json"), "w").write('{"format": "tfvae", ')
        elif breakage in ("truncated", "index truncated"):  # Half a file, as a full disk or a partial copy leaves it.
            pattern = "variables.data-*" if breakage == "truncated" else "variables.index"
            variables_file = glob.glob(os.path.join(folder, "variables", pattern))[0]
            os.truncate(variables_file, os.path.getsize(variables_file) // 2)
        else:
            shutil.rmtree(os.path.join(folder, "variables"))
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(os.path.join(ctx["in"], "digit.png"))
        return (script, [f"--saved_model={folder}", *[a.format(**ctx) for a in extra]])
    return make


def init_from_broken_export_case(ctx):
    """train.py --init_from= a copy of the tiny export (its architecture) whose weights are cut short."""
    _, (saved_model_flag,) = broken_export_case("generate.py", [], "truncated")(ctx)
    return train(f"--init_from={saved_model_flag.split('=', 1)[1]}", "--model=mlp", "--hidden_sizes=32",
                 "--latent_dim=2", f"--data_dir={ctx['mnist']}")


def stray_flagfile_case(ctx):
    """A flagfile passed without --flagfile=, where the run folder also exists (a second, misleading problem)."""
    script, args = existing_dir_case("model_dir", "previous run")(ctx)
    return (script, [f"{REPO}/configs/tf1_tutorial.flags", *args])


def enhance_folder_case(ctx):
    """enhance.py from a folder of images into what names an image file."""
    os.makedirs(ctx["in"])
    return ("enhance.py", [f"--saved_model={ctx['export']}", f"--input={ctx['in']}", "--output={out}/restored.png"])


def flagfile_loop_case(ctx, first):
    """train.py --flagfile=FIRST, where loop.flags names itself and a.flags and b.flags name each other."""
    os.makedirs(ctx["in"])
    for name, includes in (("loop.flags", "loop.flags"), ("a.flags", "b.flags"), ("b.flags", "a.flags")):
        with open(os.path.join(ctx["in"], name), "w") as f:
            f.write(f"--epochs=1\n--flagfile={os.path.join(ctx['in'], includes)}\n")
    return ("train.py", [f"--flagfile={os.path.join(ctx['in'], first)}", f"--data_dir={ctx['mnist']}",
                         "--model_dir={out}/run", "--export_dir={out}/export"])


def crowded_flagfile_case(ctx, line):
    """train.py --flagfile= a flagfile that includes the tutorial recipe, then has `line`."""
    os.makedirs(ctx["in"])
    path = os.path.join(ctx["in"], "crowded.flags")
    with open(path, "w") as f:
        f.write(f"--flagfile={REPO}/configs/tf1_tutorial.flags\n{line}\n")
    return ("train.py", [f"--flagfile={path}", f"--data_dir={ctx['mnist']}", "--model_dir={out}/run",
                         "--export_dir={out}/export"])


def metadata_case(**changes):
    """generate.py --saved_model= a copy of the tiny export whose tfvae.json fields are changed (None: removed)."""
    def make(ctx):
        folder = os.path.join(ctx["in"], "export")
        shutil.copytree(ctx["export"], folder)
        metadata = json.load(open(os.path.join(folder, "tfvae.json")))
        metadata.update(changes)
        json.dump({k: v for k, v in metadata.items() if v is not None}, open(os.path.join(folder, "tfvae.json"), "w"))
        return ("generate.py", [f"--saved_model={folder}", "--output={out}/s.png"])
    return make


def reexport_case(**config_changes):
    """export.py --saved_model= a copy of the tiny export whose tfvae.json describes another model."""
    def make(ctx):
        folder = os.path.join(ctx["in"], "export")
        shutil.copytree(ctx["export"], folder)
        metadata = json.load(open(os.path.join(folder, "tfvae.json")))
        metadata["config"].update(config_changes)
        json.dump(metadata, open(os.path.join(folder, "tfvae.json"), "w"))
        return ("export.py", [f"--saved_model={folder}", "--export_dir={out}/export"])
    return make


def broken_classifier_case(damage):
    """evaluate_cvae.py with a copy of the shipped classifier whose classifier.json or saved_model.pb is damaged."""
    def case(ctx):
        folder = os.path.join(ctx["in"], "classifier")
        shutil.copytree(os.path.join(REPO, "saved_models", "mnist_classifier"), folder)
        name = "classifier.json" if damage == "metadata" else "saved_model.pb"
        with open(os.path.join(folder, name), "r+b") as f:
            f.truncate(os.path.getsize(f.name) // 2)
        return ("evaluate_cvae.py", [f"--saved_model={REPO}/saved_models/cvae_mnist", f"--classifier={folder}",
                                     "--samples_per_class=2", "--output={out}/a.json"])
    return case


def foreign_run_export_case(kind):
    """export.py --model_dir of a run whose own --export_dir (relative, as train.py records it) is a file or a
    folder of other files."""
    def case(ctx):
        run = os.path.join(ctx["in"], "runs", "mine")
        os.makedirs(run)
        with open(os.path.join(run, "flags.txt"), "w") as f:
            f.write("--model=mlp\n--model_dir=runs/mine\n--export_dir=saved_models/mine\n")
        target = os.path.join(ctx["in"], "saved_models", "mine")
        if kind == "folder":
            os.makedirs(target)
            target = os.path.join(target, "notes.txt")
        else:
            os.makedirs(os.path.dirname(target))
        with open(target, "w") as f:
            f.write("not an export")
        return ("export.py", [f"--model_dir={run}"])
    return case


def reexport_classifier_case(image_shape):
    """export.py --saved_model= a copy of the shipped classifier whose classifier.json describes other images."""
    def make(ctx):
        folder = os.path.join(ctx["in"], "classifier")
        shutil.copytree(os.path.join(REPO, "saved_models", "mnist_classifier"), folder)
        metadata = json.load(open(os.path.join(folder, "classifier.json")))
        json.dump({**metadata, "image_shape": image_shape}, open(os.path.join(folder, "classifier.json"), "w"))
        return ("export.py", [f"--saved_model={folder}", "--export_dir={out}/classifier"])
    return make


def output_folder_case(script):
    """`script --output=` an existing folder, where a file should go."""
    def make(ctx):
        os.makedirs(ctx["in"])
        return (script, [f"--saved_model={ctx['export']}", f"--output={ctx['in']}"])
    return make


def signature_case(signature, value):
    """Calls a signature of the tiny export in a fresh process (no tfvae imported) with a bad tensor; prints the
    first line of the error as the one line a caller sees."""
    code = (
        "import sys, numpy as np, tensorflow as tf\n"
        "m = tf.saved_model.load(sys.argv[1])\n"
        f"value = {value}\n"
        "try:\n"
        f"    m.signatures['{signature}'](**value)\n"
        "except (ValueError, TypeError, tf.errors.InvalidArgumentError) as e:\n"
        "    print('error: ' + ' '.join(str(e).split())[:400], file=sys.stderr)\n"
        "    sys.exit(1)\n")
    return lambda ctx: (None, [code, ctx["export"]])


def enhance_image_case(make_image):
    def make(ctx):
        os.makedirs(ctx["in"], exist_ok=True)
        path = make_image(ctx["in"])
        return ("enhance.py", [f"--saved_model={ctx['export']}", f"--input={path}", "--output={out}/restored.png"])
    return make


def broken_png(folder):
    path = os.path.join(folder, "broken.png")
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n but cut short")
    return path


def big_png(folder):
    path = os.path.join(folder, "big.png")
    Image.fromarray(np.zeros((56, 40), np.uint8)).save(path)
    return path


def enhance_output_case(output):
    """enhance.py from a good image file into `output`."""
    def make(ctx):
        os.makedirs(ctx["in"], exist_ok=True)
        path = os.path.join(ctx["in"], "digit.png")
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(path)
        return ("enhance.py", [f"--saved_model={REPO}/saved_models/denoise_mnist", f"--input={path}",
                               f"--output={output}"])
    return make


# Cases that are bad flags, checked before any work: exit code 2 (the others may exit 1 after reading data or models).
FLAG_CASES = ("unknown flag", "wrong type", "zero batch size", "missing flagfile", "enhance folder into an image file",
              "enhance output of another kind", "generate output is a folder", "tflite output of another kind",
              "restoration grid of another kind", "xla over logical cpus",
              "export into a broken link", "reexport into a foreign folder", "conv filters on an mlp",
              "tflite output below a broken link", "export a run whose own export folder is foreign",
              "export a run whose own export folder is a file", "overwrite a folder that is no run",
              "flagfile not utf-8", "model dir where no folder can be made", "resume with another batch size",
              "infinite learning rate", "negative seed", "generate negative seed",
              "generate drawn pixels of reconstructions", "flagfile that includes itself",
              "flagfiles that include each other", "import_tf1 empty export dir", "export dir is the working folder",
              "reexport into a folder holding the working folder", "generate empty output", "enhance without output")

# name -> (function of the test's folders -> (script, args)), text the one error line must hold.
CASES = {
    # Flags.
    "run folder as export": (run_folder_as_export_case,
                             "a run folder of train.py, not its export; pass its --export_dir=saved_models/mine"),
    "reexport into a foreign folder": (reexport_into_foreign_folder_case,
                                       "--export_dir exists and is not an export of the same kind"),
    "export into a broken link": (broken_link_case("train.py", "export_dir", ""),
                                  "link is a symbolic link to "),
    "tflite output below a broken link": (broken_link_case("export_tflite.py", "output", "vae.tflite",
                                                           "--saved_model={export}"),
                                          "gone, which does not exist; create "),
    "unknown flag": (lambda ctx: train("--bogus=1"), "Unknown command line flag 'bogus'"),
    "wrong type": (lambda ctx: train("--epochs=ten"), "--epochs"),
    "zero batch size": (lambda ctx: train("--batch_size=0"), "--batch_size must be > 0"),
    "negative batch size": (lambda ctx: train("--batch_size=-100"), "--batch_size must be > 0"),
    "zero latent size": (lambda ctx: train("--latent_dim=0"), "--latent_dim must be > 0"),
    "negative latent size": (lambda ctx: train("--latent_dim=-3"), "--latent_dim must be > 0"),
    "zero epochs": (lambda ctx: train("--epochs=0"), "--epochs must be > 0"),
    # Every failed check is named, each apart from the next, still on one line.
    "two bad flags": (lambda ctx: train("--batch_size=0", "--epochs=0"), "must be > 0; flag --"),
    "negative epochs": (lambda ctx: train("--epochs=-1"), "--epochs must be > 0"),
    "zero learning rate": (lambda ctx: train("--learning_rate=0"), "--learning_rate must be a finite number > 0"),
    "negative learning rate": (lambda ctx: train("--learning_rate=-0.001"),
                               "--learning_rate must be a finite number > 0"),
    # inf passes "> 0": an infinite rate or epsilon trains to NaN or to nothing, as does an infinite beta.
    "infinite learning rate": (lambda ctx: train("--learning_rate=inf"), "--learning_rate must be a finite number > 0"),
    "infinite adam epsilon": (lambda ctx: train("--adam_epsilon=inf"), "--adam_epsilon must be a finite number > 0"),
    "infinite beta": (lambda ctx: train("--beta=inf"), "--beta must be a finite number >= 0"),
    "negative seed": (lambda ctx: train("--seed=-1"), "flag --seed=-1: -1 is not an integer in the range [0, "),
    "seed beyond 32 bits": (lambda ctx: train("--seed=4294967296"), "is not an integer in the range [0, 2147483647]"),
    "generate negative seed": (lambda ctx: ("generate.py", [f"--saved_model={ctx['export']}", "--seed=-1",
                                                            "--output={out}/s.png"]),
                               "flag --seed=-1: -1 is not an integer in the range"),
    "flagfile that includes itself": (lambda ctx: flagfile_loop_case(ctx, "loop.flags"),
                                      "loop.flags includes itself ("),
    "flagfiles that include each other": (lambda ctx: flagfile_loop_case(ctx, "b.flags"),
                                          "a.flags -> "),
    "flagfile line with two flags": (lambda ctx: crowded_flagfile_case(ctx, "--epochs=1 --latent_dim=4"),
                                     "crowded.flags line 2 has two flags ('--epochs=1 --latent_dim=4')"),
    "flagfile line with a trailing comment": (lambda ctx: crowded_flagfile_case(ctx, "--epochs=1  # quick"),
                                              "line 2 has a comment after its flag"),
    "unknown model": (lambda ctx: train("--model=gan"), "--model"),
    "unknown dataset": (lambda ctx: train("--dataset=imagenet"), "--dataset"),
    "unknown likelihood": (lambda ctx: train("--likelihood=poisson"), "--likelihood"),
    "unknown corruption": (lambda ctx: train("--corruption=rain"), "--corruption"),
    "strength out of range": (lambda ctx: train("--corruption=mask", "--corruption_strength=1.5"),
                              "--corruption_strength"),
    "bad hidden sizes": (lambda ctx: train("--hidden_sizes=400,x"), "--hidden_sizes must be a comma-separated"),
    "even ar kernel": (lambda ctx: train("--likelihood=autoregressive_bernoulli", "--ar_kernel_size=4"),
                       "--ar_kernel_size must be an odd number"),
    "negative clip norm": (lambda ctx: train("--clip_grad_norm=-1"), "--clip_grad_norm must be a finite number >= 0"),
    "negative thread count": (lambda ctx: train("--intra_op_threads=-1"), "--intra_op_threads"),
    "zero max bad steps": (lambda ctx: train("--max_bad_steps=0"), "--max_bad_steps must be > 0"),
    "negative checkpoint steps": (lambda ctx: train("--checkpoint_every_steps=-5"),
                                  "--checkpoint_every_steps must be >= 0"),
    "negative kl warmup": (lambda ctx: train("--kl_warmup_epochs=-2"),
                           "--kl_warmup_epochs must be a finite number >= 0"),
    "negative free bits": (lambda ctx: train("--free_bits=-0.5"), "--free_bits must be a finite number >= 0"),
    "conflict resume overwrite": (lambda ctx: train("--resume", "--overwrite"), "--resume and --overwrite conflict"),
    "conflict tpu address": (lambda ctx: train("--tpu=grpc://10.0.0.2:8470"), "--tpu is needed with --strategy=tpu"),
    "conflict learn variance": (lambda ctx: train("--learn_variance", "--likelihood=bernoulli"),
                                "--learn_variance needs --likelihood=gaussian"),
    "conv filters on an mlp": (lambda ctx: train("--conv_filters=32,64,128"),
                               "error: --conv_filters is read only with --model=conv, which is not set; add it "
                               "or drop "
                               "--conv_filters"),
    "ar kernel without ar likelihood": (lambda ctx: train("--ar_kernel_size=5"),
                                        "--ar_kernel_size is read only with --likelihood=autoregressive_bernoulli"),
    "gaussian stddev with bernoulli": (lambda ctx: train("--likelihood=bernoulli", "--gaussian_stddev=0.3"),
                                       "--gaussian_stddev is read only with --likelihood=gaussian"),
    "conflict importance samples": (lambda ctx: train("--num_importance_samples=5"), "add --objective=iwae"),
    "conflict free bits iwae": (lambda ctx: train("--objective=iwae", "--free_bits=0.5"),
                                "drop one of them"),
    "conflict corruption cvae": (lambda ctx: train("--model=cvae", "--corruption=gaussian_blur"),
                                 "--corruption trains a restoration model for enhance.py"),
    "conflict resume across workers": (lambda ctx: train("--resume", "--strategy=multi_worker_mirrored"),
                                       "--resume is not supported with --strategy=multi_worker_mirrored"),
    "conflict steps per execution across workers": (
        lambda ctx: train("--steps_per_execution=10", "--strategy=multi_worker_mirrored"),
        "run one step per execution (Keras 3 cannot run their updates inside its multi-step loop); "
        "pass --steps_per_execution=1"),
    # The tutorial recipe runs an epoch per execution; mirrored over logical CPUs it must be told otherwise.
    "conflict steps per execution mirrored": (
        lambda ctx: train(f"--flagfile={REPO}/configs/tf1_tutorial.flags", "--strategy=mirrored", "--cpu_devices=2",
                          f"--data_dir={ctx['mnist']}", "--model_dir={out}/run", "--export_dir={out}/export"),
        "--strategy=mirrored and multi_worker_mirrored run one step per execution"),
    # Keras would quietly train without XLA, and the run's files would say XLA.
    "conflict jit deterministic": (lambda ctx: train("--jit_compile", "--deterministic"),
                                   "--jit_compile and --deterministic conflict"),
    "conflict micro batches": (lambda ctx: train("--batch_size=100", "--micro_batches=3"),
                               "--batch_size must be a multiple of --micro_batches (equal parts)"),
    "zero micro batches": (lambda ctx: train("--micro_batches=0"), "--micro_batches must be > 0"),
    "negative batch size with micro batches": (lambda ctx: train("--batch_size=-5", "--micro_batches=2"),
                                               "--batch_size must be > 0"),
    "cpu devices without mirrored": (lambda ctx: train("--cpu_devices=2"),
                                     "--cpu_devices splits the CPU into devices for --strategy=mirrored, which is not "
                                     "set; add it or drop --cpu_devices"),
    "tf1 weights for a conv model": (
        lambda ctx: train("--model=conv", f"--init_from_tf1={ctx['export']}"),
        "--init_from_tf1 starts the tutorial's MLP (--model=tf1_tutorial or mlp) from TF1 weights"),
    # 100 over two replicas is 50 each, which does not split in four: known only once the strategy is made.
    "conflict micro batches per replica": (
        lambda ctx: train("--strategy=mirrored", "--cpu_devices=2", "--batch_size=100", "--micro_batches=4"),
        "--batch_size=100 over 2 replicas does not split into --micro_batches=4 equal parts on each"),
    # Unequal shares would weigh the examples of the smaller one more.
    "batch size over replicas": (
        lambda ctx: train("--strategy=mirrored", "--cpu_devices=2", "--batch_size=101"),
        "--batch_size=101 over 2 replicas does not split evenly; pass a --batch_size that is a multiple of 2"),
    "conflict init sources": (lambda ctx: train(f"--init_from={REPO}/saved_models/tf1_tutorial",
                                                f"--init_from_tf1={REPO}/saved_models/tf1_tutorial"),
                              "--init_from and --init_from_tf1 conflict"),
    "autoregressive on rgb": (lambda ctx: train("--dataset=cifar10", "--model=conv",
                                                "--likelihood=autoregressive_bernoulli"),
                              "models single-channel images"),
    "missing flagfile": (lambda ctx: train("--flagfile=/nonexistent.flags"),
                         "error: Unable to open flagfile: [Errno 2] No such file or directory: '/nonexistent.flags'"),
    "malformed flagfile": (flagfile_case("--epochs=10\n--latent_dim=twenty\n"), "--latent_dim"),
    "flagfile with unknown flag": (flagfile_case("--epochs=10\n--num_epochs=3\n"), "num_epochs"),
    # absl passes a line without "--" on as an argument: the setting it meant would be dropped without a word.
    "flagfile line without dashes": (flagfile_case("--latent_dim=2\nepochs=3\n"),
                                     "unexpected arguments ['epochs=3'] in a flagfile"),
    "positional argument": (lambda ctx: train("extra"), "unexpected arguments"),
    "batch larger than the data": (lambda ctx: train("--batch_size=70000"),
                                   "--batch_size=70000 is more than the 59995 training examples of mnist"),
    "existing model dir": (existing_dir_case("model_dir", "previous run"),
                           "--model_dir exists and is not empty; pass --resume"),
    # --overwrite empties a run folder; a folder of other files may be anyone's.
    "overwrite a folder that is no run": (existing_dir_case("model_dir", "a thesis", "--overwrite"),
                                          "holds files but no flags.txt, so it is not a train.py run folder, and "
                                          "--overwrite empties only those"),
    # The next export there would replace the folder whole, the run inside it with it.
    "model dir inside an export": (lambda ctx: train(f"--model_dir={ctx['export']}/run"),
                                   "/run is inside the tfvae export "),
    # --resume of a folder of other files (or of runs/ itself) would start a run among them.
    "resume a folder that is no run": (existing_dir_case("model_dir", "a thesis", "--resume"),
                                       "holds files but no flags.txt, so it is not a train.py run folder, and "
                                       "--resume continues only those"),
    "flagfile not utf-8": (binary_flagfile_case, "latin1.flags (or a flagfile it includes) is not UTF-8 text"),
    # os.access says yes to root anywhere; the folder below /proc cannot be made all the same.
    "model dir where no folder can be made": (lambda ctx: train("--model_dir=/proc/tfvae-test/run"),
                                              "cannot write in /proc ("),
    # Its checkpoint's step is a position in batches of the run's size: another size would reread or skip data.
    "resume with another batch size": (run_folder_case("--batch_size=7\n", "--resume"),
                                       "these flags change what it is: "),
    "init from a run without checkpoints": (run_folder_case("--batch_size=7\n", "--init_from=RUN"),
                                            "run: a train.py run folder without a checkpoint yet"),
    "existing foreign export dir": (existing_dir_case("export_dir", "not an export"),
                                    "--export_dir exists and is not a tfvae export"),
    "classifier zero learning rate": (lambda ctx: ("train_classifier.py", [f"--data_dir={ctx['mnist']}",
                                                                            "--learning_rate=0",
                                                                            "--export_dir={out}/classifier"]),
                                      "--learning_rate must be a finite number > 0"),
    # TerminateOnNaN stops it within a few batches; nothing is exported.
    "classifier diverged": (lambda ctx: ("train_classifier.py", [f"--data_dir={ctx['mnist']}", "--learning_rate=1e6",
                                                                  "--epochs=1", "--export_dir={out}/classifier"]),
                            "training diverged: the loss was nan in epoch 1, and nothing was exported; lower "
                            "--learning_rate (now 1e+06)"),
    "import_tf1 negative learning rate": (lambda ctx: ("import_tf1.py", [f"--source={ctx['export']}",
                                                                         "--learning_rate=-1",
                                                                         "--export_dir={out}/export"]),
                                          "--learning_rate must be a finite number > 0"),
    # An empty --export_dir used to be the working folder, which the export replaced with everything in it.
    "import_tf1 empty export dir": (lambda ctx: ("import_tf1.py", [f"--source={ctx['export']}", "--export_dir="]),
                                    "is empty; pass a folder for the SavedModel"),
    "export dir is the working folder": (lambda ctx: train("--export_dir=."), "is the current folder or holds it"),
    "reexport into a folder holding the working folder": (
        lambda ctx: ("export.py", [f"--saved_model={ctx['export']}", "--export_dir=.."]),
        "is the current folder or holds it"),
    "generate empty output": (lambda ctx: ("generate.py", [f"--saved_model={ctx['export']}", "--output="]),
                              "--output must name a .png file"),
    "import_tf1 of a tfvae export": (lambda ctx: ("import_tf1.py", [f"--source={ctx['export']}",
                                                                    "--export_dir={out}/export"]),
                                     "a TensorFlow 2 export or checkpoint (tfvae's?), not a TF1 one; pass it to "
                                     "train.py as --init_from"),
    "existing foreign classifier export dir": (existing_classifier_dir_case,
                                               "--export_dir exists and is not a classifier export"),
    "model dir is a file": (existing_file_case("train.py", "model_dir"), "names an existing file, not a folder"),
    "export dir is a file": (existing_file_case("train.py", "export_dir"), "names an existing file, not a folder"),
    "plot output dir is a file": (existing_file_case("plot.py", "output_dir", "--saved_model={export}"),
                                  "names an existing file, not a folder"),
    # No folder can be made below a file: refused before the work, not by a traceback once it is done.
    "export dir below a file": (under_file_case("train.py", "export_dir"), "notes.txt is a file, not a folder"),
    "model dir below a file": (under_file_case("train.py", "model_dir"), "notes.txt is a file, not a folder"),
    "generate output below a file": (under_file_case("generate.py", "output", "--saved_model={export}",
                                                     leaf="s.png"),
                                     "notes.txt is a file, not a folder; pass a path in a folder you can write to"),
    "plot output dir below a file": (under_file_case("plot.py", "output_dir", "--saved_model={export}"),
                                     "notes.txt is a file, not a folder"),
    "enhance output below a file": (under_file_case("enhance.py", "output", "--saved_model={export}",
                                                    "--input={in}/digit.png", leaf="r.png"),
                                    "notes.txt is a file, not a folder"),
    "tflite output below a file": (under_file_case("export_tflite.py", "output", "--saved_model={export}",
                                                   leaf="m.tflite"),
                                   "notes.txt is a file, not a folder"),
    # The export replaces --export_dir whole: the run folder inside it would go (found after training, before).
    "model dir inside export dir": (lambda ctx: train("--export_dir={out}/both", "--model_dir={out}/both/run"),
                                    "--model_dir is --export_dir or inside it"),
    "evaluate run folder is a file": (existing_file_case("evaluate.py", "model_dir", "--output={out}/e.json"),
                                      "names a file, not a folder; pass a run folder of train.py"),
    # A forgotten --flagfile= is named first, whatever else its absence breaks (here, the run folder exists).
    "flagfile without --flagfile=": (stray_flagfile_case, "unexpected arguments"),
    # An --init_from that does not fit is found after the run folder is made: the folder must go again.
    "init from another model": (lambda ctx: train(f"--init_from={REPO}/saved_models/cvae_mnist"),
                                "does not fit this model"),
    # What the source lacks is named by path, not cut from TensorFlow's list of Python objects mid-word.
    "init from another likelihood": (
        lambda ctx: train(f"--flagfile={REPO}/configs/tf1_tutorial.flags", "--likelihood=gaussian", "--learn_variance",
                          f"--init_from={REPO}/saved_models/tf1_tutorial", f"--data_dir={ctx['mnist']}"),
        "does not fit this model (it has no value for "),
    # The same into a run folder that is a link to an empty folder: the link and its folder stay, empty.
    "init from another model into a linked run folder": (init_into_linked_run_folder_case, "does not fit this model"),
    # One step an epoch on the whole split trained a classifier right on 8.8% of test images, and exported it.
    "classifier batch beyond the data": (lambda ctx: ("train_classifier.py", [f"--data_dir={ctx['mnist']}",
                                                                              "--batch_size=100000",
                                                                              "--export_dir={out}/classifier"]),
                                         "--batch_size=100000 is more than the 55000 training examples of mnist "
                                         "(--validation_size=5000 held out); pass a smaller --batch_size"),
    "classifier missing data dir": (lambda ctx: ("train_classifier.py", ["--data_dir=/nonexistent/MNIST_data",
                                                                         "--export_dir={out}/classifier"]),
                                    "no such folder; pass an existing folder"),
    # Data.
    "missing data dir": (lambda ctx: train("--data_dir=/nonexistent/MNIST_data"),
                         "--data_dir must be an existing folder"),
    "missing data file": (data_case(drop="t10k-images-idx3-ubyte.gz"), "t10k-images-idx3-ubyte.gz: file not found"),
    "truncated idx": (data_case(truncate=100), "train-images-idx3-ubyte.gz"),
    "not gzip": (data_case(not_gzip=True), "t10k-labels-idx1-ubyte.gz: not a readable gzip file"),
    "wrong magic": (data_case(images_magic=2049), "wrong IDX magic number 2049"),
    "count mismatch": (data_case(n_labels=19), "has 20 images but train-labels-idx1-ubyte.gz has 19 labels"),
    "label out of range": (data_case(label=12), "label 12 outside [0, 10)"),
    "bench_train wrong magic": (lambda ctx: ("bench_train.py", [
        f"--data_dir={fake_mnist(ctx['in'] + '/MNIST_data', images_magic=2049)}", "--epochs=2"]),
                                "wrong IDX magic number 2049"),
    # SavedModels given to the scripts that read them.
    "generate missing export": (saved_model_case("generate.py", ["--output={out}/s.png"], "missing"),
                                "no such folder"),
    "generate foreign folder": (saved_model_case("generate.py", ["--output={out}/s.png"], "not tfvae"),
                                "not a tfvae export"),
    "evaluate missing export": (saved_model_case("evaluate.py", ["--output={out}/e.json"], "missing"),
                                "no such folder"),
    "evaluate foreign folder": (saved_model_case("evaluate.py", ["--output={out}/e.json"], "not tfvae"),
                                "not a tfvae export"),
    "evaluate more examples than the split": (
        lambda ctx: ("evaluate.py", [f"--saved_model={ctx['export']}", f"--data_dir={ctx['mnist']}",
                                     "--num_examples=20000", "--num_importance_samples=2", "--output={out}/e.json"]),
        "--num_examples=20000 is more than the 10,000 examples of the test split; pass at most 10000, or 0 for all"),
    "plot a scatter of more examples than the test split": (
        lambda ctx: ("plot.py", [f"--saved_model={ctx['export']}", f"--data_dir={ctx['mnist']}",
                                 "--kinds=latent_scatter", "--scatter_examples=20000", "--output_dir={out}/plots"]),
        "--scatter_examples=20000 is more than the 10,000 examples of the test split; pass at most 10000"),
    "plot foreign folder": (saved_model_case("plot.py", ["--output_dir={out}/plots"], "not tfvae"),
                            "not a tfvae export"),
    "enhance export metadata not json": (broken_export_case("enhance.py", ["--input={in}/digit.png",
                                                                          "--output={out}/r.png"], "metadata"),
                                         "tfvae.json is not readable JSON"),
    "tflite export metadata not json": (broken_export_case("export_tflite.py", ["--output={out}/m.tflite"],
                                                           "metadata"), "tfvae.json is not readable JSON"),
    "generate export without variables": (broken_export_case("generate.py", ["--output={out}/s.png"], "variables"),
                                          "its SavedModel files are incomplete or corrupt"),
    "generate export cut short": (broken_export_case("generate.py", ["--output={out}/s.png"], "truncated"),
                                  "its SavedModel files are incomplete or corrupt (its data file is shorter than its "
                                  "index says: truncated or damaged)"),
    "init from an export cut short": (init_from_broken_export_case,
                                      "cannot read the checkpoint (its data file is shorter than its index says: "
                                      "truncated or damaged)"),
    "tflite export without variables": (broken_export_case("export_tflite.py", ["--output={out}/m.tflite"],
                                                           "variables"),
                                        "its SavedModel files are incomplete or corrupt"),
    "plot no kinds": (lambda ctx: ("plot.py", [f"--saved_model={ctx['export']}", "--kinds=",
                                               "--output_dir={out}/plots"]), "--kinds must be 'all' or"),
    "enhance missing input": (lambda ctx: ("enhance.py", [f"--saved_model={REPO}/saved_models/denoise_mnist",
                                                          "--input={in}/none.png", "--output={out}/r.png"]),
                              "no such file or folder; pass an image file (PNG, JPEG, BMP, GIF or WebP) or a folder "
                              "of them"),
    "enhance missing export": (saved_model_case("enhance.py", ["--input={in}/digit.png", "--output={out}/r.png"],
                                                "missing"), "no such folder"),
    "tflite foreign folder": (saved_model_case("export_tflite.py", ["--output={out}/m.tflite"], "not tfvae"),
                              "not a tfvae export"),
    "export two sources": (lambda ctx: ("export.py", [f"--saved_model={ctx['export']}", "--model_dir={out}/run"]),
                           "pass exactly one of --model_dir=RUN_DIR and --saved_model=EXPORT_DIR"),
    "generate conditional without a label": (
        lambda ctx: ("generate.py", [f"--saved_model={REPO}/saved_models/cvae_mnist", "--output={out}/s.png"]),
        "this model is conditional; pass --label=0..9 or --label=all"),
    "generate label for an unconditional model": (
        lambda ctx: ("generate.py", [f"--saved_model={ctx['export']}", "--label=3", "--output={out}/s.png"]),
        "--label is only for conditional models (cvae); drop it"),
    "evaluate_cvae unconditional model": (
        lambda ctx: ("evaluate_cvae.py", [f"--saved_model={ctx['export']}", "--output={out}/a.json",
                                          f"--classifier={REPO}/saved_models/mnist_classifier"]),
        "is not label-conditioned; pass a cvae export"),
    "export a run whose own export folder is foreign": (
        foreign_run_export_case("folder"), "in/saved_models/mine exists and is not a tfvae export; the export would "
                                           "replace it, so remove it or pass --export_dir=PATH"),
    "export a run whose own export folder is a file": (
        foreign_run_export_case("file"), "in/saved_models/mine exists and is not a tfvae export; the export would "
                                         "replace it, so remove it or pass --export_dir=PATH"),
    "reexport export index cut short": (broken_export_case("export.py", ["--export_dir={out}/export"],
                                                          "index truncated"),
                                       "its SavedModel files are incomplete or corrupt"),
    "reexport export data cut short": (broken_export_case("export.py", ["--export_dir={out}/export"], "truncated"),
                                       "its SavedModel files are incomplete or corrupt (its data file is shorter "
                                       "than its index says: truncated or damaged); copy or export the model again"),
    "tflite export data cut short": (broken_export_case("export_tflite.py", ["--output={out}/m.tflite"],
                                                        "truncated"),
                                     "its SavedModel files are incomplete or corrupt (its data file is shorter than "
                                     "its index says"),
    "reexport foreign folder": (saved_model_case("export.py", ["--export_dir={out}/export"], "not tfvae"),
                                "not a tfvae export"),
    "reexport other shapes": (reexport_case(hidden_sizes=[64]), "its variables do not fit the model its tfvae.json"),
    "reexport missing weights": (reexport_case(likelihood="gaussian", learn_variance=True),
                                 "variables of the model its tfvae.json describes are not in it"),
    "evaluate_cvae classifier metadata cut short": (broken_classifier_case("metadata"),
                                                     "its classifier.json is not a classifier's"),
    "evaluate_cvae classifier cut short": (broken_classifier_case("saved_model"),
                                           "its SavedModel files are incomplete or corrupt"),
    "export metadata without latent size": (metadata_case(latent_dim=None),
                                            "its tfvae.json has no latent_dim; copy or export the model again"),
    "export metadata of another latent size": (metadata_case(latent_dim=5),
                                               "its tfvae.json does not describe its SavedModel (it says latent_dim 5 "
                                               "where its signatures take 2)"),
    "export metadata of a newer format": (metadata_case(format_version=99),
                                          "has format_version 99, newer than this tfvae reads (1); update tfvae"),
    "export metadata with a wrong input shape": (metadata_case(input_shape=[100]),
                                                 "has input_shape [100], which does not hold its image_shape"),
    "reexport classifier other shapes": (reexport_classifier_case([32, 32, 3]),
                                         "its variables do not fit the classifier its classifier.json describes"),
    "generate label not a class": (
        lambda ctx: ("generate.py", [f"--saved_model={REPO}/saved_models/cvae_mnist", "--label=seven",
                                     "--output={out}/s.png"]),
        "--label=seven is not a class of this model (10 classes); pass --label=0..9 or --label=all"),
    "generate drawn pixels of reconstructions": (
        lambda ctx: ("generate.py", [f"--saved_model={REPO}/saved_models/mnist_best", "--reconstruct",
                                     "--pixels=sample", "--output={out}/s.png"]),
        "--reconstruct shows decoded means; drop --pixels=sample"),
    "generate drawn pixels of the squared error": (
        lambda ctx: ("generate.py", [f"--saved_model={REPO}/saved_models/tf1_tutorial", "--pixels=sample",
                                     "--output={out}/s.png"]),
        "this model's likelihood, sse (the TF1 tutorial's squared error), is no distribution to draw pixels from; "
        "drop --pixels=sample"),
    "generate reconstruct with a label": (
        lambda ctx: ("generate.py", [f"--saved_model={REPO}/saved_models/cvae_mnist", "--reconstruct", "--label=3",
                                     "--output={out}/s.png"]),
        "--reconstruct reconstructs each test image with its own label; drop --label"),
    "restoration grid of another kind": (
        lambda ctx: ("evaluate_restoration.py", [f"--saved_model={ctx['export']}", "--output={out}/r.json",
                                                 "--grid={out}/grid.jpg"]),
        "--grid must name a .png file"),
    "enhance folder into an image file": (enhance_folder_case, "--input is a folder, so --output must be a folder"),
    "xla over logical cpus": (lambda ctx: train("--strategy=mirrored", "--cpu_devices=2", "--jit_compile",
                                                "--steps_per_execution=1"),
                              "--jit_compile cannot run over --cpu_devices"),
    # absl's own words were "flag --output=None: Flag --output must have a value other than None".
    "enhance without output": (lambda ctx: ("enhance.py", [f"--saved_model={REPO}/saved_models/denoise_mnist",
                                                           f"--input={REPO}/docs/images/noisy_digit.png"]),
                               "error: --output is required; see --help"),
    "enhance output of another kind": (enhance_output_case("{out}/restored.gif"),
                                       "--output must end in .png, .jpg or .jpeg, or name an existing folder"),
    "restoration more examples than the test split": (
        lambda ctx: ("evaluate_restoration.py", [f"--saved_model={REPO}/saved_models/denoise_mnist",
                                                 f"--data_dir={ctx['mnist']}", "--num_examples=10001",
                                                 "--output={out}/r.json"]),
        "--num_examples=10001 is more than the 10,000 test images of mnist; pass at most 10000"),
    # Tensors given to the signatures.
    "generate output is a folder": (output_folder_case("generate.py"), "--output must name a .png file"),
    "tflite output of another kind": (
        lambda ctx: ("export_tflite.py", [f"--saved_model={ctx['export']}", "--output={out}/model.png"]),
        "--output must name a .tflite file"),
    "signature wrong shape": (signature_case("reconstruct", "{'input': tf.zeros((2, 28, 28))}"),
                              "[2,28,28] is not compatible with expected shape [?,784]"),
    "signature wrong width": (signature_case("encode", "{'input': tf.zeros((2, 100))}"), "784"),
    "signature wrong dtype": (signature_case("reconstruct", "{'input': tf.zeros((2, 784), tf.int32)}"), "int32"),
    "signature nan input": (signature_case("reconstruct", "{'input': tf.fill((2, 784), float('nan'))}"),
                            "input has values outside [0, 1], or NaN or inf; pass images scaled to [0, 1]"),
    "signature 8-bit pixels": (signature_case("encode", "{'input': tf.fill((2, 784), 255.0)}"),
                               "input has values outside [0, 1], or NaN or inf; pass images scaled to [0, 1] "
                               "(8-bit pixels / 255)"),
    "signature one nan pixel": (
        signature_case("reconstruct", "{'input': tf.tensor_scatter_nd_update(tf.fill((2, 784), 0.5), [[1, 3]], "
                                      "[float('nan')])}"),
        "input has values outside [0, 1], or NaN or inf"),
    "signature negative pixel": (
        signature_case("log_likelihood", "{'input': tf.concat([tf.zeros((1, 784)), tf.fill((1, 784), -0.01)], 0), "
                                         "'z': tf.zeros((2, 2))}"),
        "input has values outside [0, 1], or NaN or inf"),
    "signature inf latent": (signature_case("decode", "{'z': tf.fill((2, 2), float('inf'))}"),
                             "z has NaN or inf values; pass finite latent vectors"),
    "signature z for another batch": (
        signature_case("log_likelihood", "{'input': tf.zeros((2, 784)), 'z': tf.zeros((3, 2))}"),
        "z and input must hold the same number of examples; got] [3] [and] [2]"),
    "signature one z for a batch": (
        signature_case("log_likelihood_samples", "{'input': tf.zeros((2, 784)), 'z': tf.zeros((5, 1, 2))}"),
        "z and input must hold the same number of examples; got] [1] [and] [2]"),
    # Images given to enhance.py.
    "enhance unreadable image": (enhance_image_case(broken_png), "not a readable PNG, JPEG, BMP, GIF or WebP image"),
    "enhance wrong size image": (enhance_image_case(big_png),
                                 "image is 56x40, the model expects 28x28x1; pass --resize"),
}


@pytest.fixture(scope="module")
def tiny_export(tiny_run):
    return tiny_run[1]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_in_one_line_and_writes_nothing(case, tmp_path, tiny_export, mnist_dir):
    make, message = CASES[case]
    ctx = {"in": str(tmp_path / "in"), "out": str(tmp_path / "out"), "export": tiny_export, "mnist": mnist_dir}
    script, args = make(ctx)
    args = [arg.replace("{out}", ctx["out"]) for arg in args]
    inputs_before = sorted(os.walk(ctx["in"])) if os.path.exists(ctx["in"]) else []
    # Run from an empty folder, so defaults like runs/NAME would show up in it.
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    if script == "train.py" and not any(a.startswith(("--data_dir", "--flagfile")) for a in args):
        args.append(f"--data_dir={mnist_dir}")
    result = run_script(script, *args, cwd=workdir)
    lines = error_lines(result)
    assert result.returncode != 0, result.stdout[-2000:]
    assert len(lines) == 1 and message in lines[0], result.stderr[-3000:]
    assert result.returncode == 2 or case not in FLAG_CASES, (result.returncode, lines)
    assert not os.path.exists(ctx["out"]) and os.listdir(workdir) == []
    assert (sorted(os.walk(ctx["in"])) if os.path.exists(ctx["in"]) else []) == inputs_before


TWO_WORKERS = {"worker": ["localhost:1", "localhost:2"]}


@pytest.mark.parametrize("tf_config, message", [
    ("", "needs TF_CONFIG, which is not set"),
    ('{"cluster": {"worker": ["localhost:1"', "TF_CONFIG is not JSON (Expecting ',' delimiter"),
    (json.dumps({"cluster": TWO_WORKERS}), 'TF_CONFIG has no "task" with this process\'s "type" and "index"'),
    (json.dumps({"cluster": TWO_WORKERS, "task": {"type": "worker", "index": 2}}),
     "TF_CONFIG's task index 2 is outside its 2 worker hosts"),
    (json.dumps({"cluster": TWO_WORKERS, "task": {"type": "chief", "index": 0}}),
     "TF_CONFIG's task type 'chief' is not a job of its cluster (worker)"),
])
def test_multi_worker_needs_a_well_formed_tf_config(tf_config, message, tmp_path):
    # TensorFlow would train alone without TF_CONFIG, and end a malformed one in a traceback after its start-up.
    result = run_script("train.py", *TINY_TRAIN, "--strategy=multi_worker_mirrored", "--steps_per_execution=1",
                        f"--model_dir={tmp_path}/run", f"--export_dir={tmp_path}/export", cwd=tmp_path,
                        env={"TF_CONFIG": tf_config})
    lines = error_lines(result)
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert message in lines[0] and lines[0].endswith("or on one machine use --strategy=mirrored; see --help"), lines
    assert os.listdir(tmp_path) == []


def test_every_case_the_issue_lists_is_covered():
    required = ["unknown flag", "wrong type", "zero batch size", "negative batch size", "zero latent size",
                "negative latent size", "zero epochs", "negative epochs", "zero learning rate",
                "negative learning rate", "unknown model", "unknown dataset", "unknown likelihood",
                "unknown corruption", "conflict resume overwrite", "missing flagfile", "malformed flagfile",
                "missing data dir", "truncated idx", "not gzip", "wrong magic", "count mismatch",
                "label out of range", "existing model dir", "generate missing export", "generate foreign folder",
                "signature wrong shape", "signature wrong dtype", "signature nan input", "enhance unreadable image",
                "enhance wrong size image"]
    assert set(required) <= set(CASES) and len(CASES) > len(required) and set(FLAG_CASES) <= set(CASES)


def test_default_run_folders_are_checked_before_any_work(tmp_path):
    """Without --model_dir or --export_dir, train.py writes runs/NAME and saved_models/NAME: a file in the way of
    either is named at once, not after training as a traceback."""
    for blocked, flag in (("runs", "--export_dir=export"), ("saved_models", "--model_dir=run")):
        folder = tmp_path / blocked
        folder.mkdir()
        (folder / blocked).write_text("a file where a folder goes")
        result = run_script("train.py", *TINY_TRAIN, flag, cwd=folder)
        lines = error_lines(result)
        assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
        default = "--model_dir=runs/mlp" if blocked == "runs" else "--export_dir=saved_models/mlp"
        assert f"the default {default}: {folder / blocked} is a file, not a folder" in lines[0], lines[0]
        assert sorted(os.listdir(folder)) == [blocked]


@pytest.mark.parametrize("script, args, name", [
    ("evaluate.py", ["--num_examples=10"], "evaluation_test_k1000_n10.json"),
    # Another protocol, another file: gray levels are not nats, another seed another estimate.
    ("evaluate.py", ["--num_examples=10", "--binarize=none", "--seed=2"], "evaluation_test_k1000_n10_none_seed2.json"),
    ("evaluate_cvae.py", ["--samples_per_class=20", "--seed=3"], "class_accuracy_n20_seed3.json"),
    ("evaluate_restoration.py", ["--num_examples=10", "--corruptions=gaussian_noise,mask"],
     "restoration_gaussian_noise+mask_n10_seed0.json")])
def test_evaluations_default_output_is_beside_the_model_and_checked_before_any_work(script, args, name, tiny_export,
                                                                                   tmp_path):
    """Without --output, an evaluation writes beside the model, named by what it measures: a folder it may not write
    in is named at once, not after minutes of work. (As root every folder is writable, so os.access says no.)"""
    export_dir = tmp_path / "export"
    shutil.copytree(tiny_export, export_dir)
    before = sorted(os.listdir(export_dir))
    code = ("import os, runpy, sys\n"
            "folder, real_access = sys.argv[1], os.access\n"
            "os.access = lambda path, mode, **kwargs: os.path.abspath(path) != folder and real_access(path, mode)\n"
            f"sys.argv = [{script!r}, '--saved_model=' + folder, *{args!r}]\n"
            f"runpy.run_path({os.path.join(REPO, 'scripts', script)!r}, run_name='__main__')\n")
    result = run_script(None, code, str(export_dir), cwd=tmp_path)
    lines = error_lines(result)
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0] == (f"error: the default --output={export_dir}/{name}: cannot write in {export_dir} (permission "
                        f"denied); pass --output=PATH.json")
    assert sorted(os.listdir(export_dir)) == before
