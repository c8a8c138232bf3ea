"""Legacy compatibility: the TF1 tutorial reproduced step for step, TF1 checkpoints imported and continued,
tfvae exports served to TF1 code, the Keras native format, Keras 2 (tf-keras) and LiteRT."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

import tf1_reference
from conftest import REPO, flip_first_bytes, run_script
from tfvae import config, data, export, legacy, training
from tfvae.compat import keras
from tfvae.models import build_model

PRESET = os.path.join(REPO, "configs", "tf1_tutorial.flags")
BATCH = 100
TOL = 1e-5
IMPORT_TOL = 1e-6
TF1_STEPS = 20


def preset_config(**overrides):
    """The RunConfig of configs/tf1_tutorial.flags (its model, sizes, seed and Adam settings)."""
    values = dict(re.findall(r"^--(\w+)=(.*)$", open(PRESET).read(), re.M))
    cfg = config.RunConfig(
        model=values["model"], likelihood=values["likelihood"], latent_dim=int(values["latent_dim"]),
        hidden_sizes=tuple(int(s) for s in values["hidden_sizes"].split(",")), seed=int(values["seed"]),
        batch_size=int(values["batch_size"]), learning_rate=float(values["learning_rate"]),
        adam_epsilon=float(values["adam_epsilon"]), adam=values["adam"], micro_batches=int(values["micro_batches"]))
    return config.RunConfig(**{**cfg.__dict__, **overrides})


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return data.load_arrays("mnist", mnist_dir, validation_size=5000)


def flat(images):
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def train_batches(arrays, steps):
    return flat(arrays.train_images[:steps * BATCH]).reshape(steps, BATCH, -1)


@pytest.fixture(scope="module")
def tf1_run(mnist, tmp_path_factory):
    """The TF1 tutorial trained TF1_STEPS steps from its own initialisation, saved by Saver and as SavedModel."""
    root = tmp_path_factory.mktemp("tf1")
    paths = {"checkpoint": str(root / "ckpt" / "model.ckpt"), "saved_model": str(root / "saved_model")}

    def save(g, sess):
        tf1_reference.save_checkpoint(g, sess, paths["checkpoint"])
        tf1_reference.save_saved_model(g, sess, paths["saved_model"])

    losses, weights = tf1_reference.train(None, train_batches(mnist, TF1_STEPS), session_hook=save)
    assert losses[-1] < losses[0]
    return {"weights": weights, "root": root, **paths}


def max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))


@pytest.mark.parametrize("micro_batches", [1, None], ids=["whole_batches", "recipe_micro_batches"])
def test_preset_train_step_reproduces_tf1_graph(mnist, micro_batches):
    """The recipe's step against the TF1 graph: whole batches are the TF1 arithmetic; the recipe's halves side by
    side (--micro_batches=2) add float rounding only, well inside the tolerance after 100 steps."""
    steps = 100
    cfg = preset_config(**({"micro_batches": micro_batches} if micro_batches else {}))
    assert cfg.micro_batches == (micro_batches or 2)
    model = build_model(cfg, (28, 28, 1))
    model.compile(optimizer=training.make_optimizer(cfg))
    model.micro_batches = cfg.micro_batches
    initial = [v.numpy() for v in model.trainable_variables]
    # The VAE draws eps from SeedGenerator(seed); a twin generator replays the same draws for the TF1 feed.
    twin = keras.random.SeedGenerator(cfg.seed)
    eps = [keras.random.normal((BATCH, cfg.latent_dim), seed=twin).numpy() for _ in range(steps)]
    batches = train_batches(mnist, steps)

    step = tf.function(model.train_step)
    losses = []
    for x in batches:
        for metric in model.metrics:
            metric.reset_state()  # So each step reports its own batch's loss, as TF1's sess.run(loss).
        losses.append(float(step({"input": x, "target": x, "label": np.zeros(BATCH, np.int32)})["loss"]))
    tf1_losses, tf1_weights = tf1_reference.train(initial, batches, eps, learning_rate=cfg.learning_rate,
                                                  epsilon=cfg.adam_epsilon)

    loss_diff = float(np.max(np.abs(np.array(losses) - tf1_losses)))
    weight_diff = max_diff([v.numpy() for v in model.trainable_variables], tf1_weights)
    print(f"equivalence over {steps} steps: max loss diff {loss_diff:.3g}, max weight diff {weight_diff:.3g}")
    # Halves sum each loss in two parts: a 100-nat loss moves by float32 rounding (~1e-5) in the last bits.
    loss_tolerance = TOL if cfg.micro_batches == 1 else 1e-6 * max(losses)
    assert loss_diff <= loss_tolerance and weight_diff <= TOL
    assert losses[-1] < 0.5 * losses[0]  # It trained: 188 -> ~58.
    assert max_diff(initial, tf1_weights) > 0.05  # ... and the weights moved far more than the tolerance.


def test_keras_adam_alone_drifts_from_tf1(mnist):
    """Why the preset says --adam=tf1: keras.optimizers.Adam rounds differently, visibly within 100 steps."""
    steps = 100
    cfg = preset_config(adam="keras")
    model = build_model(cfg, (28, 28, 1))
    model.compile(optimizer=training.make_optimizer(cfg))
    initial = [v.numpy() for v in model.trainable_variables]
    twin = keras.random.SeedGenerator(cfg.seed)
    eps = [keras.random.normal((BATCH, cfg.latent_dim), seed=twin).numpy() for _ in range(steps)]
    batches = train_batches(mnist, steps)
    step = tf.function(model.train_step)
    for x in batches:
        step({"input": x, "target": x, "label": np.zeros(BATCH, np.int32)})
    _, tf1_weights = tf1_reference.train(initial, batches, eps)
    weight_diff = max_diff([v.numpy() for v in model.trainable_variables], tf1_weights)
    print(f"keras.optimizers.Adam vs TF1 over {steps} steps: max weight diff {weight_diff:.3g}")
    assert 0 < weight_diff < 1e-3


def test_import_tf1_matches_graph_outputs(tf1_run, mnist, tmp_path):
    x = flat(mnist.test_images)
    reference = tf1_reference.run_outputs(tf1_run["weights"], x)
    for kind in ("checkpoint", "saved_model"):
        export_dir = str(tmp_path / kind)
        result = run_script("import_tf1.py", f"--source={tf1_run[kind]}", f"--export_dir={export_dir}")
        assert result.returncode == 0, result.stderr
        assert re.search(r"Variable_7\s+\[784\]\s+float32", result.stdout)  # The listing.
        assert "Variable_4 -> decoder/hidden_0/kernel" in result.stdout
        saved, metadata = export.load_saved_model(export_dir)
        assert metadata["model"] == "tf1_tutorial" and metadata["latent_dim"] == 20
        encoded = saved.signatures["encode"](input=tf.constant(x))
        x_hat = saved.signatures["reconstruct"](input=tf.constant(x))["x_hat"]
        diff = max(float(np.max(np.abs(encoded["z_mean"].numpy() - reference["z_mean"]))),
                   float(np.max(np.abs(encoded["z_logvar"].numpy() - reference["z_logvar"]))),
                   float(np.max(np.abs(x_hat.numpy() - reference["x_hat"]))))
        print(f"import from {kind}: max output diff on {len(x)} test images {diff:.3g}")
        assert diff <= IMPORT_TOL


def test_import_tf1_variable_map_and_shape_errors(tf1_run, tmp_path):
    # A map that swaps two decoder kernels: the error names the TF1 variable, the expected and the found shape.
    mapping = legacy.default_variable_map(1)
    mapping["decoder/hidden_0/kernel"], mapping["decoder/logits/kernel"] = "Variable_6", "Variable_4"
    map_file = tmp_path / "map.json"
    map_file.write_text(json.dumps(mapping))
    export_dir = tmp_path / "export"
    result = run_script("import_tf1.py", f"--source={tf1_run['checkpoint']}", f"--export_dir={export_dir}",
                        f"--variable_map={map_file}")
    assert result.returncode == 1
    assert "Variable_6 (decoder/hidden_0/kernel): expected shape [20, 100], found [100, 784]" in result.stderr
    assert not export_dir.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".")]

    # A map naming a variable the source does not have.
    mapping = legacy.default_variable_map(1)
    mapping["encoder/hidden_0/bias"] = "enc/b"
    map_file.write_text(json.dumps(mapping))
    result = run_script("import_tf1.py", f"--source={tf1_run['checkpoint']}", f"--export_dir={export_dir}",
                        f"--variable_map={map_file}")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1, result.stderr[-2000:]
    assert "'enc/b' (for encoder/hidden_0/bias) not in" in errors[0]
    assert errors[0].endswith("(its variables: Variable, Variable_1, Variable_2, Variable_3, Variable_4, Variable_5, "
                              "Variable_6, Variable_7); fix that name in --variable_map"), errors[0]

    result = run_script("import_tf1.py", f"--source={tmp_path / 'nothing'}", f"--export_dir={export_dir}")
    assert result.returncode == 2 and f"--source={tmp_path / 'nothing'}: must be a TF1 checkpoint prefix" in \
        result.stderr
    # One file of the checkpoint instead of its prefix: the prefix to pass is named.
    result = run_script("import_tf1.py", f"--source={tf1_run['checkpoint']}.index", f"--export_dir={export_dir}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"names one file of a checkpoint; pass its prefix, --source={tf1_run['checkpoint']}" in result.stderr
    assert not export_dir.exists()


def save_tf1_checkpoint(folder, values):
    """A TF1 tf.train.Saver checkpoint holding exactly `values` ({name: array}). Returns its prefix."""
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.Variable(value, name=name) for name, value in values.items()]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return saver.save(sess, os.path.join(folder, "model.ckpt"))


def test_variable_map_for_renamed_graph(tf1_run, tmp_path):
    """A graph whose variables have other names imports through --variable_map (here: renamed copies)."""
    renamed = {path: f"vae/{path.replace('/', '_')}" for path in legacy.tutorial_paths(1)}
    reader = tf.train.load_checkpoint(tf1_run["checkpoint"])
    values = {new: reader.get_tensor(legacy.default_variable_map(1)[path]) for path, new in renamed.items()}
    prefix = save_tf1_checkpoint(str(tmp_path / "renamed"), values)
    map_file = tmp_path / "map.json"
    map_file.write_text(json.dumps(renamed))
    path, report = legacy.import_tf1(prefix, str(tmp_path / "export"), str(map_file))
    saved, _ = export.load_saved_model(path)
    x = np.random.default_rng(0).random((64, 784), dtype=np.float32)
    reference = tf1_reference.run_outputs(tf1_run["weights"], x)
    assert max_diff([saved.signatures["reconstruct"](input=tf.constant(x))["x_hat"]], [reference["x_hat"]]) <= 1e-6


def test_init_from_import_continues_tf1_run(tf1_run, mnist_dir, tmp_path):
    """import_tf1 --with_optimizer, then train.py --init_from: the next steps are TF1's next steps."""
    export_dir = tmp_path / "imported"
    result = run_script("import_tf1.py", f"--source={tf1_run['checkpoint']}", f"--export_dir={export_dir}",
                        "--with_optimizer")
    assert result.returncode == 0, result.stderr
    assert f"Adam state carried over at step {TF1_STEPS}" in result.stdout

    # 1000 training examples: one epoch of 10 steps, in the order train.py's pipeline gives them.
    cfg = preset_config(validation_size=59000, data_dir=mnist_dir, epochs=1)
    keras.utils.set_random_seed(cfg.seed)  # As training.run does: the global seed enters tf.data's shuffle.
    batches = [b["input"].numpy() for b in data.make_datasets(cfg).train]
    twin = keras.random.SeedGenerator(cfg.seed)
    eps = [keras.random.normal((BATCH, cfg.latent_dim), seed=twin).numpy() for _ in batches]

    def continue_tf1(g, sess):
        g.saver.restore(sess, tf1_run["checkpoint"])
        for x, e in zip(batches, eps):
            sess.run(g.train_op, {g.input: x, g.eps: e})
        continued.extend(sess.run(g.variables))

    continued = []
    tf1_reference.train(None, [], session_hook=continue_tf1)

    result = run_script("train.py", f"--flagfile={PRESET}", f"--data_dir={mnist_dir}", "--validation_size=59000",
                        "--epochs=1", f"--init_from={export_dir}", f"--model_dir={tmp_path / 'run'}",
                        f"--export_dir={tmp_path / 'continued'}", "--noimage_summaries")
    assert result.returncode == 0, result.stderr
    assert f"Initialised weights and Adam state at step {TF1_STEPS} from {export_dir}" in result.stdout
    saved, _ = export.load_saved_model(str(tmp_path / "continued"))
    x = flat(mnist_test_subset(mnist_dir))
    reference = tf1_reference.run_outputs(continued, x)
    diff = max_diff([saved.signatures["reconstruct"](input=tf.constant(x))["x_hat"],
                     saved.signatures["encode"](input=tf.constant(x))["z_mean"]],
                    [reference["x_hat"], reference["z_mean"]])
    print(f"TF1 run continued by train.py --init_from for {len(batches)} steps: max output diff {diff:.3g}")
    assert diff <= IMPORT_TOL


def mnist_test_subset(mnist_dir, count=1000):
    return data.load_idx_split(mnist_dir, "test")[0][:count]


def test_init_from_tf1_loads_weights(tf1_run):
    cfg = preset_config()
    model = build_model(cfg, (28, 28, 1))
    model.compile(optimizer=training.make_optimizer(cfg))
    model.optimizer.build(model.trainable_variables)
    line = legacy.initialize_model(model, init_from_tf1=tf1_run["saved_model"])
    assert line.startswith("Initialised from TF1 weights")
    assert max_diff([v.numpy() for v in model.trainable_variables], tf1_run["weights"]) == 0
    assert int(model.optimizer.iterations) == 0  # Weights only: a fresh Adam.
    with pytest.raises(legacy.TF1ImportError, match="not a tfvae export or checkpoint"):
        legacy.initialize_model(model, init_from=tf1_run["checkpoint"])


def test_import_tf1_says_which_export_it_replaced(tf1_run, tmp_path):
    export_dir = str(tmp_path / "export")
    _, first = legacy.import_tf1(tf1_run["checkpoint"], export_dir)
    assert "replaced" not in first
    _, second = legacy.import_tf1(tf1_run["saved_model"], export_dir)
    assert second["replaced"] == f"an import of the TF1 checkpoint {os.path.abspath(tf1_run['checkpoint'])}"
    assert export.load_metadata(export_dir)["tf1_import"]["source"] == os.path.abspath(tf1_run["saved_model"])


def test_init_from_tf1_of_other_names_points_at_import_tf1(tf1_run, tmp_path):
    # train.py has no --variable_map: a graph with its own names goes through import_tf1.py, and the error says so.
    renamed = {f"vae/{name}": value for name, value in tutorial_values(tf1_run).items()}
    prefix = save_tf1_checkpoint(str(tmp_path / "tf1"), renamed)
    model = build_model(preset_config(), (28, 28, 1))
    with pytest.raises(legacy.TF1ImportError) as error:
        legacy.initialize_model(model, init_from_tf1=prefix)
    message = str(error.value)
    assert "\n" not in message and "found 0 tutorial variables" in message
    assert message.endswith("; import it with scripts/import_tf1.py --source=CHECKPOINT --export_dir=DIR and a "
                            "--variable_map, then pass --init_from=DIR"), message


@pytest.fixture(scope="module")
def tfvae_export(tf1_run, tmp_path_factory):
    """A tfvae export of the tutorial model holding the TF1 run's weights."""
    path, _ = legacy.import_tf1(tf1_run["checkpoint"], str(tmp_path_factory.mktemp("exports") / "tf1_tutorial"))
    return path


TF1_CONSUMER = """
import json, sys
import numpy as np
import tensorflow as tf
tf.compat.v1.disable_eager_execution()
path, x_file = sys.argv[1:]
x = np.load(x_file)
out = {}
with tf.compat.v1.Session(graph=tf.Graph()) as sess:
    meta_graph = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
    for name in ("encode", "reconstruct"):
        signature = meta_graph.signature_def[name]
        fetches = {k: v.name for k, v in signature.outputs.items()}
        values = sess.run(fetches, {signature.inputs["input"].name: x})
        out.update({k: v.tolist() for k, v in values.items()})
        out[name + "_tensors"] = [signature.inputs["input"].name, *sorted(fetches.values())]
print(json.dumps(out))
"""


def test_tf1_session_code_serves_tfvae_export(tfvae_export, tf1_run, tmp_path):
    x = np.random.default_rng(0).random((16, 784), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    result = run_script(None, TF1_CONSUMER, tfvae_export, str(tmp_path / "x.npy"))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    reference = tf1_reference.run_outputs(tf1_run["weights"], x)
    for key in ("x_hat", "z_mean", "z_logvar"):
        assert np.max(np.abs(np.array(out[key]) - reference[key])) <= IMPORT_TOL, key
    assert out["encode_tensors"][0].startswith("encode_input:")  # Names come from the signature def.


def test_keras_native_format_round_trip_continues_fit(mnist, tmp_path):
    cfg = preset_config()
    model = build_model(cfg, (28, 28, 1))
    model.compile(optimizer=training.make_optimizer(cfg))
    x = flat(mnist.train_images[:400])
    dataset = tf.data.Dataset.from_tensor_slices({"input": x, "target": x}).batch(BATCH)
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded).__name__ == "VAE" and type(loaded.likelihood).__name__ == "SquaredError"
    assert type(loaded.optimizer).__name__ == type(model.optimizer).__name__
    assert loaded.get_config()["latent_dim"] == cfg.latent_dim
    assert max_diff([v.numpy() for v in loaded.variables], [v.numpy() for v in model.variables]) == 0
    assert max_diff([v.numpy() for v in loaded.optimizer.variables],
                    [v.numpy() for v in model.optimizer.variables]) == 0
    # Same weights, Adam state and RNG state: the next epoch gives the same losses and weights.
    original = model.fit(dataset, epochs=1, verbose=0, shuffle=False).history["loss"]
    continued = loaded.fit(dataset, epochs=1, verbose=0, shuffle=False).history["loss"]
    assert continued == pytest.approx(original, abs=1e-5)
    assert max_diff([v.numpy() for v in loaded.trainable_variables],
                    [v.numpy() for v in model.trainable_variables]) <= TOL


KERAS2_LOAD = """
import json, sys
import numpy as np
import tensorflow as tf
from tfvae import compat, export
saved, metadata = export.load_saved_model(sys.argv[1])
x = np.random.default_rng(0).random((8, 784), dtype=np.float32)
x_hat = saved.signatures["reconstruct"](input=tf.constant(x))["x_hat"].numpy()
decoded = saved.signatures["encode"](input=tf.constant(x))["z_mean"].numpy()
print(json.dumps({"keras": compat.keras.__name__, "legacy": compat.LEGACY_KERAS, "model": metadata["model"],
                  "x_hat_shape": list(x_hat.shape), "z_shape": list(decoded.shape),
                  "finite": bool(np.isfinite(x_hat).all())}))
"""


def test_keras2_trains_exports_and_loads(mnist_dir, tmp_path):
    env = {"TF_USE_LEGACY_KERAS": "1"}
    result = run_script("train.py", f"--flagfile={PRESET}", f"--data_dir={mnist_dir}", "--validation_size=59000",
                        "--epochs=2", f"--model_dir={tmp_path / 'run'}", f"--export_dir={tmp_path / 'export'}",
                        "--noimage_summaries", env=env)
    assert result.returncode == 0, result.stderr
    epoch_losses = [float(v) for v in re.findall(r"Epoch: \d+ Total Loss: ([\d.]+)", result.stdout)]
    assert len(epoch_losses) == 2 and epoch_losses[1] < epoch_losses[0]
    result = run_script(None, KERAS2_LOAD, str(tmp_path / "export"), env=env)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out.pop("keras").startswith("tf_keras")
    assert out == {"legacy": True, "model": "tf1_tutorial",
                   "x_hat_shape": [8, 784], "z_shape": [8, 20], "finite": True}


def test_export_tflite_matches_saved_model(tfvae_export, tmp_path):
    output = tmp_path / "model.tflite"
    result = run_script("export_tflite.py", f"--saved_model={tfvae_export}", f"--output={output}")
    assert result.returncode == 0, result.stderr
    diffs = {k: float(v) for k, v in re.findall(r"^(\S+): max \|LiteRT - SavedModel\| = (\S+)", result.stdout, re.M)}
    assert set(diffs) == {"encode/z_mean", "encode/z_logvar", "decode/x_hat", "decode/logits", "reconstruct/x_hat"}
    size = int(re.search(r"\((\d+) bytes", result.stdout).group(1))
    print(f"LiteRT float32: max diff {max(diffs.values()):.3g}, {size} bytes")
    assert max(diffs.values()) <= 1e-5 and size == os.path.getsize(output)

    quantized = tmp_path / "model_q.tflite"
    result = run_script("export_tflite.py", f"--saved_model={tfvae_export}", f"--output={quantized}",
                        "--quantize=dynamic")
    assert result.returncode == 0, result.stderr
    q_size = os.path.getsize(quantized)
    q_diff = max(float(v) for v in re.findall(r"x_hat: max \|LiteRT - SavedModel\| = (\S+)", result.stdout))
    print(f"LiteRT dynamic int8: decode x_hat max diff {q_diff:.3g}, {q_size} bytes")
    assert q_size < 0.4 * size and q_diff < 0.1

    result = run_script("export_tflite.py", f"--saved_model={tmp_path}", f"--output={tmp_path / 'bad.tflite'}")
    assert result.returncode == 1 and "not a tfvae export" in result.stderr
    assert not (tmp_path / "bad.tflite").exists()


def tutorial_values(tf1_run):
    """The tutorial checkpoint's weights by TF1 name (Variable, Variable_1, ...), without Adam's state."""
    reader = tf.train.load_checkpoint(tf1_run["checkpoint"])
    return {name: reader.get_tensor(name) for name in legacy.default_variable_map(1).values()}


def map_without(path):
    mapping = legacy.default_variable_map(1)
    del mapping[path]
    return mapping


IMPORT_REFUSALS = {
    # case: (checkpoint values from the tutorial's, --variable_map file text or None, --with_optimizer, message)
    "map not JSON": (lambda v: v, "{encoder: ", False, "not a readable JSON file"),
    "map not an object": (lambda v: v, '["Variable"]', False, "must be a JSON object of strings"),
    "map misses a path": (lambda v: v, json.dumps(map_without("decoder/logits/bias")), False,
                          "--variable_map: missing tfvae paths ['decoder/logits/bias']; the keys must be exactly"),
    "map without hidden layers": (lambda v: v, json.dumps({"encoder/latent_params/kernel": "Variable_2"}), False,
                                  "--variable_map names no encoder/hidden_0/kernel"),
    "other names, no map": (lambda v: {f"vae/{name}": value for name, value in v.items()}, None, False,
                            "found 0 tutorial variables (Variable, Variable_1, ...), expected 8, 12, ... (its "
                            "variables: vae/Variable, vae/Variable_1, vae/Variable_2, vae/Variable_3, vae/Variable_4, "
                            "vae/Variable_5, vae/Variable_6, vae/Variable_7); pass a --variable_map=FILE.json of "
                            "{tfvae path: TF1 name}, the keys encoder/hidden_0/kernel, "),
    "map swaps two kernels": (lambda v: v, json.dumps({**legacy.default_variable_map(1),
                                                       "encoder/hidden_0/kernel": "Variable_4",
                                                       "decoder/hidden_0/kernel": "Variable"}), False,
                              "Variable_4 (encoder/hidden_0/kernel): input size 20, expected one of [784, 3072] "
                              "(MNIST 28x28, CIFAR 32x32x3); map encoder/hidden_0/kernel to the first layer's kernel"),
    "float64 weights": (lambda v: {**v, "Variable_1": v["Variable_1"].astype(np.float64)}, None, False,
                        "Variable_1 (encoder/hidden_0/bias): expected dtype float32, found float64"),
    "odd latent outputs": (lambda v: {**v, "Variable_2": v["Variable_2"][:, :39], "Variable_3": v["Variable_3"][:39]},
                           None, False, "39 outputs cannot split into z_mean and z_logvar"),
    "no Adam state": (lambda v: v, None, True, "holds no AdamOptimizer state; drop --with_optimizer"),
}


@pytest.mark.parametrize("case", list(IMPORT_REFUSALS))
def test_import_tf1_refuses_what_it_cannot_import_by_name(case, tf1_run, tmp_path):
    change_values, map_text, with_optimizer, message = IMPORT_REFUSALS[case]
    prefix = save_tf1_checkpoint(str(tmp_path / "tf1"), change_values(tutorial_values(tf1_run)))
    map_file = None
    if map_text is not None:
        map_file = tmp_path / "map.json"
        map_file.write_text(map_text)
    export_dir = tmp_path / "export"
    with pytest.raises(legacy.TF1ImportError) as error:
        legacy.import_tf1(prefix, str(export_dir), None if map_file is None else str(map_file),
                          with_optimizer=with_optimizer)
    assert message in str(error.value)
    assert sorted(os.listdir(tmp_path)) == sorted(["tf1"] + (["map.json"] if map_file else []))


def test_tf1_step_from_beta_powers_even_after_both_underflow():
    assert legacy.tf1_step(0.9 ** 11, 0.999 ** 11, 0.9, 0.999) == 10
    assert legacy.tf1_step(0.0, 0.999 ** 50001, 0.9, 0.999) == 50000  # beta1_power underflowed after ~900 steps.
    # After ~87,000 steps TensorFlow has flushed beta2_power to 0 too (a TF1 run that long, imported
    # --with_optimizer): at least the step where it left float32's range, never a math domain error.
    step = legacy.tf1_step(0.0, 0.0, 0.9, 0.999)
    assert np.float32(0.999) ** np.float32(step - 1) > 0 and 87000 < step < 88000


def test_init_from_an_export_of_weights_only(tmp_path):
    """Exports without Adam's state (export.py of a checkpoint, import_tf1.py without --with_optimizer, the shipped
    mnist_best) start a run from their weights, with a fresh Adam."""
    source = build_model(preset_config(), (28, 28, 1))  # Never compiled: its export holds no optimizer.
    source(np.zeros((1, 784), np.float32))
    export_dir = export.export_saved_model(source, str(tmp_path / "weights_only"),
                                           training.export_metadata(preset_config(), (28, 28, 1), source))
    model = build_model(preset_config(seed=1), (28, 28, 1))
    training.compile_model(model, preset_config())
    assert legacy.initialize_model(model, init_from=export_dir) == f"Initialised weights from {export_dir}"
    for loaded, original in zip(model.trainable_variables, source.trainable_variables):
        np.testing.assert_array_equal(loaded.numpy(), original.numpy())
    assert int(model.optimizer.iterations.numpy()) == 0
    # A train.py export carries Adam's state inside the model: it is loaded, and the log says so.
    shipped = os.path.join(REPO, "saved_models", "tf1_tutorial")
    assert legacy.initialize_model(model, init_from=shipped).startswith("Initialised weights and Adam state at step ")
    assert int(model.optimizer.iterations.numpy()) > 0


def test_init_from_a_likelihood_with_weights_this_model_lacks_names_them(tmp_path):
    """The other way round is refused (the model's likelihood would have no weights); this way a warm start is
    fine, but the source's likelihood weights are left behind, which the log line says."""
    best = os.path.join(REPO, "saved_models", "mnist_best")  # Autoregressive Bernoulli, weights only.
    plain = preset_config(model="mlp", hidden_sizes=(512, 256), latent_dim=32, likelihood="bernoulli")
    model = build_model(plain, (28, 28, 1))
    training.compile_model(model, plain)
    line = legacy.initialize_model(model, init_from=best)
    assert line.startswith(f"Initialised weights from {best}; not used, this model has no such weights: "
                           f"model/likelihood/"), line
    # The autoregressive likelihood's own weights, nothing of the encoder or decoder the model took.
    assert line.split(": ", 1)[1].split(", ") == [f"model/likelihood/{name}" for name in
                                                  ("hidden_kernel", "hidden_bias", "output_kernel")]
    x = np.random.default_rng(0).random((3, 784)).astype(np.float32)
    encoded = tf.saved_model.load(best).signatures["encode"](input=tf.constant(x))
    np.testing.assert_allclose(model.encode(tf.constant(x))[0].numpy(), encoded["z_mean"].numpy(), atol=1e-6)
    # With Adam's state (a train.py checkpoint of a learned variance, into a fixed one): named too.
    learned = preset_config(likelihood="gaussian", learn_variance=True)
    source = build_model(learned, (28, 28, 1))
    training.compile_model(source, learned)
    source(np.zeros((1, 784), np.float32))
    prefix = tf.train.Checkpoint(model=source, optimizer=source.optimizer).write(str(tmp_path / "run" / "ckpt-1"))
    fixed = preset_config(likelihood="gaussian")
    model = build_model(fixed, (28, 28, 1))
    training.compile_model(model, fixed)
    assert legacy.initialize_model(model, init_from=prefix) == (
        f"Initialised weights and Adam state at step 0 from {prefix}; not used, this model has no such weights: "
        f"model/likelihood/logvar")
    # A source of the same model leaves nothing out, and the line says nothing more.
    assert legacy.initialize_model(source, init_from=prefix) == (
        f"Initialised weights and Adam state at step 0 from {prefix}")


def test_init_from_an_export_of_other_sizes_is_refused_by_name():
    model = build_model(preset_config(hidden_sizes=(64,)), (28, 28, 1))
    model.compile(optimizer=training.make_optimizer(preset_config()))
    model(np.zeros((1, 784), np.float32))
    shipped = os.path.join(REPO, "saved_models", "tf1_tutorial")
    with pytest.raises(legacy.TF1ImportError, match=f"--init_from={shipped} does not fit this model .*; pass the "
                                                    f"flags of the run that wrote it"):
        legacy.initialize_model(model, init_from=shipped)
    # An export of other images is named as such, before any kernel's shape is compared.
    with pytest.raises(legacy.TF1ImportError, match=r"was trained on mnist images \[28, 28, 1\], this run has "
                                                    r"cifar10 images \[32, 32, 3\]; pass --dataset=mnist"):
        legacy.initialize_model(model, init_from=shipped, dataset="cifar10", image_shape=(32, 32, 3))


def test_init_from_a_damaged_checkpoint_asks_for_an_intact_one_not_other_flags(tmp_path):
    """Changed bytes (TensorFlow's checksums find them) in a train.py checkpoint or a weights-only export are named
    as damage, with or without Adam's state in it: other flags would not help."""
    source = build_model(preset_config(), (28, 28, 1))  # Never compiled: no optimizer in its checkpoint.
    source(np.zeros((1, 784), np.float32))
    weights_only = tf.train.Checkpoint(model=source).write(str(tmp_path / "weights" / "ckpt-1"))
    model = build_model(preset_config(), (28, 28, 1))
    training.compile_model(model, preset_config())
    model(np.zeros((1, 784), np.float32))
    with_adam = tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(str(tmp_path / "run" / "ckpt-1"))
    for prefix in (with_adam, weights_only):
        flip_first_bytes(prefix)
        with pytest.raises(legacy.TF1ImportError, match=rf"^{re.escape(prefix)}: cannot read the checkpoint "
                                                        r"\(.*Checksum.*\); pass an intact one$"):
            legacy.initialize_model(model, init_from=prefix)


@pytest.mark.parametrize("damage", ["index cut short", "data changed"])
def test_import_tf1_of_a_damaged_tf1_checkpoint_asks_for_an_intact_one(damage, tf1_run, tmp_path):
    prefix = save_tf1_checkpoint(str(tmp_path / "tf1"), tutorial_values(tf1_run))
    if damage == "data changed":
        flip_first_bytes(prefix)
    else:
        with open(f"{prefix}.index", "r+b") as f:
            f.truncate(os.path.getsize(f.name) // 2)
    with pytest.raises(legacy.TF1ImportError, match=rf"^{re.escape(prefix)}: cannot read the checkpoint \(.+\); "
                                                    r"pass an intact one$"):
        legacy.import_tf1(prefix, str(tmp_path / "export"), None)
    assert sorted(os.listdir(tmp_path)) == ["tf1"]


def test_a_variable_map_that_is_not_text_is_named(tf1_run, tmp_path):
    map_file = tmp_path / "map.json"
    map_file.write_bytes(bytes(range(128, 256)))
    with pytest.raises(legacy.TF1ImportError, match="not a readable JSON file"):
        legacy.load_variable_map(str(map_file))


def test_a_tf2_checkpoint_or_an_unreadable_export_is_named_as_such(tmp_path):
    """A TF2 checkpoint given as a TF1 one (import_tf1.py, --init_from_tf1) would map to nothing by TF1 names; an
    --init_from export whose tfvae.json is not JSON is named, not a traceback."""
    prefix = tf.train.Checkpoint(weights=tf.Variable(tf.ones([3]))).write(str(tmp_path / "tf2" / "ckpt-1"))
    with pytest.raises(legacy.TF1ImportError, match=f"^{re.escape(prefix)}: a TensorFlow 2 export or checkpoint"):
        legacy.open_source(prefix)
    broken = tmp_path / "export"
    broken.mkdir()
    (broken / "tfvae.json").write_text('{"format": ')
    model = build_model(preset_config(), (28, 28, 1))
    with pytest.raises(legacy.TF1ImportError, match=f"^--init_from={re.escape(str(broken))}: tfvae.json is not "
                                                    f"readable JSON"):
        legacy.initialize_model(model, init_from=str(broken), dataset="mnist", image_shape=(28, 28, 1))


def test_import_tf1_refuses_a_dataset_whose_images_the_weights_cannot_take(tf1_run, tmp_path):
    with pytest.raises(legacy.TF1ImportError) as error:
        legacy.import_tf1(tf1_run["checkpoint"], str(tmp_path / "export"), dataset="cifar10")
    assert str(error.value) == ("--dataset=cifar10: its images are 32x32x3, but Variable takes 28x28x1 ones; pass "
                                "--dataset=fashion_mnist or mnist")
    assert not (tmp_path / "export").exists()


def test_init_from_a_run_folder_starts_from_its_latest_checkpoint(tiny_run):
    model_dir, _ = tiny_run
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    assert legacy.checkpoint_prefix(model_dir) == latest
    cfg = config.run_config_of_run_folder(model_dir)
    model = build_model(cfg, (28, 28, 1))
    training.compile_model(model, cfg)
    assert legacy.initialize_model(model, init_from=model_dir).startswith("Initialised weights and Adam state at step ")
    restored = build_model(cfg, (28, 28, 1))
    tf.train.Checkpoint(model=restored).restore(latest).expect_partial()
    for loaded, saved in zip(model.trainable_variables, restored.trainable_variables):
        np.testing.assert_array_equal(loaded.numpy(), saved.numpy())
