"""tfvae.restore: a model from a run folder's latest checkpoint or from an export, the checks of its inputs, and
reading a checkpoint into a model while telling which of its variables the checkpoint lacked. Tiny models, no
training: checkpoints are saved by the run's own CheckpointManager."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfvae import config, export, restore, training
from tfvae.compat import keras
from tfvae.models import build_model

IMAGE_SHAPE = (28, 28, 1)
BIAS_STEP = 1.5


def _cfg(tmp_path, **changes):
    return config.RunConfig(**{"model": "mlp", "hidden_sizes": (8,), "latent_dim": 2, "likelihood": "bernoulli",
                               "model_dir": str(tmp_path / "run"), "export_dir": str(tmp_path / "export"),
                               **changes})


@pytest.fixture
def run_folder(tmp_path):
    """A run folder as train.py leaves it (flags.txt, checkpoints/ckpt-1 and ckpt-2), whose ckpt-2 differs from
    ckpt-1 (the weights as built) by BIAS_STEP on every logit's bias. Returns (cfg, the model as in ckpt-2)."""
    cfg = _cfg(tmp_path)
    training.prepare_model_dir(cfg)
    model = build_model(cfg, IMAGE_SHAPE)
    training.compile_model(model, cfg)
    manager, _ = training.make_checkpoint_manager(model, cfg)
    manager.save(checkpoint_number=1)
    bias = model.decoder.get_layer("logits").bias
    bias.assign(bias + BIAS_STEP)
    manager.save(checkpoint_number=2)
    return cfg, model


def _x_and_z(count=5):
    rng = np.random.default_rng(0)
    return rng.random((count, 784), dtype=np.float32), rng.standard_normal((count, 2)).astype(np.float32)


def test_a_run_folder_loads_with_its_latest_checkpoints_weights(run_folder):
    cfg, model = run_folder
    loaded = restore.load(model_dir=cfg.model_dir)
    assert loaded.source == os.path.abspath(cfg.model_dir)
    assert loaded.metadata["checkpoint"] == os.path.join(os.path.abspath(cfg.model_dir), "checkpoints", "ckpt-2")
    assert (loaded.latent_dim, loaded.num_classes, loaded.metadata["input_shape"]) == (2, 0, [784])
    x, z = _x_and_z()
    z_mean, z_logvar = loaded.encode(x)
    np.testing.assert_allclose(z_mean, model.encode(x)[0], atol=1e-6)
    np.testing.assert_allclose(z_logvar, model.encode(x)[1], atol=1e-6)
    logits = model.decode(tf.constant(z))
    np.testing.assert_allclose(loaded.decode(z), tf.sigmoid(logits), atol=1e-6)
    # Bernoulli log p(x|z) = sum x log p + (1 - x) log(1 - p) over the 784 pixels, computed here in float64.
    p = 1 / (1 + np.exp(-logits.numpy().astype(np.float64)))
    expected = np.sum(x * np.log(p) + (1 - x) * np.log1p(-p), axis=1)
    np.testing.assert_allclose(loaded.log_likelihood(x, z), expected, rtol=1e-5)
    # The same numbers through the export of that checkpoint, loaded by `load` as a SavedModel.
    path, read = restore.export_checkpoint(cfg.model_dir)
    assert read == os.path.join("checkpoints", "ckpt-2")
    assert path == os.path.abspath(cfg.export_dir)  # The run's --export_dir when none is given.
    exported = restore.load(saved_model=path)
    assert exported.source == path and "checkpoint" not in exported.metadata
    np.testing.assert_allclose(exported.decode(z), loaded.decode(z), atol=1e-6)
    np.testing.assert_allclose(exported.log_likelihood(x, z), loaded.log_likelihood(x, z), rtol=1e-6)
    assert not os.path.exists(os.path.join(path, "metrics.json"))  # The run logged no history.


def test_load_takes_exactly_one_source(run_folder):
    cfg, _ = run_folder
    for saved_model, model_dir in ((None, None), ("", ""), (cfg.export_dir, cfg.model_dir)):
        with pytest.raises(ValueError, match="pass exactly one of --saved_model and --model_dir"):
            restore.load(saved_model, model_dir)
    with pytest.raises(export.ExportError):  # A run folder is not an export.
        restore.load(saved_model=cfg.model_dir)


def test_an_exported_checkpoint_carries_the_runs_history_and_names_its_checkpoint(run_folder, tmp_path):
    cfg, _ = run_folder
    history = {"loss": [3.5, 2.25], "val_loss": [3.0, None]}
    with open(os.path.join(cfg.model_dir, "metrics.json"), "w") as f:
        json.dump({"history": history, "epochs_run": [1, 2]}, f)
    path, _ = restore.export_checkpoint(cfg.model_dir, str(tmp_path / "elsewhere"))
    assert path == str(tmp_path / "elsewhere") and not os.path.exists(cfg.export_dir)
    assert json.load(open(os.path.join(path, "metrics.json"))) == {"history": history, "checkpoint": "ckpt-2"}
    metadata = export.load_metadata(path)
    assert "checkpoint" not in metadata and metadata["config"]["hidden_sizes"] == [8]


def test_a_conditional_model_needs_its_labels():
    calls = []

    def signature(**inputs):
        calls.append(inputs)
        value = inputs.get("input", inputs.get("z"))
        return {"z_mean": value, "z_logvar": value, "x_hat": value}

    conditional = restore.LoadedModel(signatures={"encode": signature, "decode": signature},
                                      metadata={"num_classes": 10, "latent_dim": 2}, source="")
    with pytest.raises(ValueError, match="conditional; pass the class labels"):
        conditional.encode(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="conditional; pass the class labels"):
        conditional.decode(np.zeros((2, 2)))
    assert calls == []
    conditional.decode(np.zeros((2, 2)), label=np.array([3, 7]))
    assert calls[-1]["label"].dtype == tf.int32 and calls[-1]["label"].numpy().tolist() == [3, 7]
    assert calls[-1]["z"].dtype == tf.float32
    unconditional = restore.LoadedModel(signatures={"encode": signature}, metadata={"latent_dim": 2}, source="")
    unconditional.encode(np.zeros((2, 3), np.float64), label=np.array([1, 2]))  # Labels are not its inputs.
    assert set(calls[-1]) == {"input"} and calls[-1]["input"].dtype == tf.float32
    assert restore.input_size({"input_shape": [28, 28, 1]}) == 784 and restore.input_size({"input_shape": [784]}) == 784


def test_read_every_variable_names_what_the_checkpoint_lacks(run_folder, tmp_path):
    cfg, model = run_folder
    prefix = os.path.join(cfg.model_dir, "checkpoints", "ckpt-2")
    # Another seed's weights, all overwritten by the checkpoint's.
    same = build_model(_cfg(tmp_path, seed=1), IMAGE_SHAPE)
    assert restore.read_every_variable({"model": same}, same.trainable_variables, prefix) == []
    for mine, saved in zip(same.trainable_variables, model.trainable_variables):
        np.testing.assert_array_equal(mine.numpy(), saved.numpy())
    # A learned variance: one more weight, which no checkpoint of a fixed-variance model holds.
    gaussian = build_model(_cfg(tmp_path, likelihood="gaussian", learn_variance=True), IMAGE_SHAPE)
    extra = [v for v in gaussian.trainable_variables if "logvar" in v.path]
    assert len(extra) == 1 and len(gaussian.trainable_variables) == len(model.trainable_variables) + 1
    assert restore.read_every_variable({"model": gaussian}, gaussian.trainable_variables, prefix) == [extra[0].path]
    # Another hidden width: the checkpoint does not fit, and the reason is TensorFlow's, on one short line (callers
    # put it inside their own one-line error).
    wider = build_model(_cfg(tmp_path, hidden_sizes=(16,)), IMAGE_SHAPE)
    with pytest.raises(ValueError, match="shape") as refused:
        restore.read_every_variable({"model": wider}, wider.trainable_variables, prefix)
    assert "\n" not in str(refused.value) and len(str(refused.value)) <= 200
    # A damaged checkpoint (its index is not one) is refused the same way, not with TensorFlow's own error type.
    (tmp_path / "damaged.index").write_bytes(b"not a checkpoint index" * 4)
    with pytest.raises(ValueError):
        restore.read_every_variable({"model": same}, same.trainable_variables, str(tmp_path / "damaged"))
    # A data file cut short (a full disk, a partial copy) is named as such, not as TensorFlow's IndexError.
    truncated = str(tmp_path / "truncated" / "ckpt")
    tf.train.Checkpoint(model=model).write(truncated)
    with open(f"{truncated}.data-00000-of-00001", "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match="its data file is shorter than its index says: truncated or damaged"):
        restore.read_every_variable({"model": same}, same.trainable_variables, truncated)


@pytest.mark.parametrize("export_dir, expected", [("saved_models/x", "{ran_in}/saved_models/x"),
                                                  ("/srv/exports/x", "/srv/exports/x")])
def test_a_runs_recorded_folders_are_found_from_any_folder(export_dir, expected, tmp_path, monkeypatch):
    # train.py ran in tmp_path/work with relative folders; export.py --model_dir runs from elsewhere.
    run = tmp_path / "work" / "runs" / "x"
    run.mkdir(parents=True)
    (run / "flags.txt").write_text(f"--model=mlp\n--model_dir=runs/x\n--export_dir={export_dir}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = config.run_config_of_run_folder(str(run))
    assert cfg.model_dir == str(run)
    assert cfg.export_dir == expected.format(ran_in=tmp_path / "work")
    assert restore.run_export_dir(os.path.relpath(run)) == cfg.export_dir
    # A run folder moved away from where it ran: its relative export folder is taken from here.
    moved = tmp_path / "moved"
    os.rename(run, moved)
    assert config.run_config_of_run_folder(str(moved)).export_dir == os.path.join(str(elsewhere), export_dir)


def test_a_mixed_precision_run_loads_in_its_precision_and_leaves_the_global_policy(tmp_path):
    cfg = _cfg(tmp_path, mixed_precision="mixed_bfloat16")
    training.prepare_model_dir(cfg)
    model = restore.build_in_precision(cfg, IMAGE_SHAPE)
    training.compile_model(model, cfg)
    training.make_checkpoint_manager(model, cfg)[0].save(checkpoint_number=1)
    loaded = restore.load_checkpoint(cfg.model_dir)
    assert loaded.owner.encoder.layers[-1].compute_dtype == "bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"


def test_an_export_names_its_run_from_any_folder(tmp_path, monkeypatch):
    # train.py ran in tmp_path/home with relative folders; export.py --model_dir runs from elsewhere and must see
    # the export there as that run's own, not as another run's that it replaces.
    export_dir = tmp_path / "home" / "saved_models" / "x"
    export_dir.mkdir(parents=True)
    (export_dir / "tfvae.json").write_text(json.dumps(
        {"format": "tfvae", "config": {"model_dir": "runs/x", "export_dir": "saved_models/x"}}))
    monkeypatch.chdir(tmp_path)
    assert export.exported_run(str(export_dir)) == str(tmp_path / "home" / "runs" / "x")
    assert export.describe_other_export(str(export_dir), str(tmp_path / "home" / "runs" / "x")) is None
    assert export.describe_other_export(str(export_dir), str(tmp_path / "other")) == \
        f"the export of run {tmp_path / 'home' / 'runs' / 'x'}"


def test_a_reexport_repairs_the_kl_weight_of_an_older_export(tmp_path):
    # Exports made with export.py --model_dir from a warm-up run's checkpoint before 2026-12-04 held its line there.
    cfg = _cfg(tmp_path)
    model = build_model(cfg, IMAGE_SHAPE)
    model(np.zeros((1, 784), np.float32))
    model.kl_weight.assign(-1.0)
    older = str(tmp_path / "older")
    export.export_saved_model(model, older, training.export_metadata(cfg, IMAGE_SHAPE, model))
    again = restore.reexport_saved_model(older, str(tmp_path / "again"))
    reader = tf.train.load_checkpoint(os.path.join(again, "variables", "variables"))
    kl_weight = [name for name in reader.get_variable_to_shape_map() if "kl_weight" in name]
    assert kl_weight and all(float(reader.get_tensor(name)) == 1.0 for name in kl_weight)

