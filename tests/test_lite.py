"""tfvae.lite: LiteRT conversion of an export, and `compare`'s report of how far the LiteRT model is from a SavedModel,
on tiny exports made here (no training): a LiteRT model of other weights must show exactly the difference they make."""

import os

import numpy as np
import pytest

from conftest import REPO, run_script
from tfvae import config, export, lite, training
from tfvae.models import build_model

IMAGE_SHAPE = (28, 28, 1)
Z_MEAN_SHIFT, LOGIT_SHIFT = 0.25, -0.5


def _export(model, cfg, folder):
    return export.export_saved_model(model, str(folder), training.export_metadata(cfg, IMAGE_SHAPE, model))


def _pair(folder, model_kind):
    """Two exports of one tiny model: "a" as built, and "b" with the bias of z_mean's first unit raised by
    Z_MEAN_SHIFT and that of the first pixel's logit moved by LOGIT_SHIFT, everything else the same."""
    cfg = config.RunConfig(model=model_kind, hidden_sizes=(8,), latent_dim=2, likelihood="bernoulli")
    model = build_model(cfg, IMAGE_SHAPE)
    a = _export(model, cfg, folder / "a")
    z_mean_bias, logits_bias = (model.encoder.get_layer("latent_params").bias,
                                model.decoder.get_layer("logits").bias)
    z_mean_bias.assign(z_mean_bias.numpy() + np.eye(1, 4, 0, dtype=np.float32)[0] * Z_MEAN_SHIFT)
    logits_bias.assign(logits_bias.numpy() + np.eye(1, 784, 0, dtype=np.float32)[0] * LOGIT_SHIFT)
    b = _export(model, cfg, folder / "b")
    return a, b


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    made = {}

    def get(model_kind):
        if model_kind not in made:
            made[model_kind] = _pair(tmp_path_factory.mktemp(model_kind), model_kind)
        return made[model_kind]

    return get


@pytest.mark.parametrize("model_kind", ["mlp", "cvae"])  # cvae: every signature also takes the class labels.
def test_compare_reports_the_max_abs_difference_of_every_output(pairs, model_kind):
    a, b = pairs(model_kind)
    a_lite = lite.convert(a)
    same = lite.compare(a_lite, a, count=64)
    outputs = {name: set(export.load_saved_model(a)[0].signatures[name].structured_outputs)
               for name in lite.SIGNATURES}
    assert {name: set(values) for name, values in same.items()} == outputs
    assert outputs["decode"] == {"x_hat", "logits"} and outputs["encode"] == {"z_mean", "z_logvar"}
    assert all(0 <= diff <= 1e-5 for values in same.values() for diff in values.values()), same

    # b's LiteRT model against a's SavedModel: only the shifted units differ, by the shift's size whatever the inputs.
    shifted = lite.compare(lite.convert(b), a, count=64)
    assert shifted["encode"]["z_mean"] == pytest.approx(Z_MEAN_SHIFT, abs=1e-5)
    assert shifted["encode"]["z_logvar"] <= 1e-5
    assert shifted["decode"]["logits"] == pytest.approx(abs(LOGIT_SHIFT), abs=1e-5)
    # sigmoid's slope is at most 1/4: the pixel's mean moves by more than 0, and by at most a quarter of the shift.
    assert 1e-4 < shifted["decode"]["x_hat"] <= abs(LOGIT_SHIFT) / 4 + 1e-6
    assert shifted["reconstruct"]["x_hat"] > 1e-4  # Encoded then decoded through both changes.
    # The difference is symmetric: a's LiteRT model against b's SavedModel reports the same numbers.
    back = lite.compare(a_lite, b, count=64)
    assert back["encode"]["z_mean"] == pytest.approx(shifted["encode"]["z_mean"], abs=1e-5)
    assert back["decode"]["logits"] == pytest.approx(shifted["decode"]["logits"], abs=1e-5)


def test_export_tflite_writes_the_converted_model_checked_on_the_asked_number_of_inputs(pairs, tmp_path,
                                                                                      monkeypatch):
    from ai_edge_litert import interpreter

    a, _ = pairs("mlp")
    run = []  # (signature, examples of each input) of every LiteRT call.

    class Interpreter(interpreter.Interpreter):
        def get_signature_runner(self, name=None):
            runner = super().get_signature_runner(name)
            return lambda **inputs: run.append((name, {k: len(v) for k, v in inputs.items()})) or runner(**inputs)

    monkeypatch.setattr(interpreter, "Interpreter", Interpreter)
    output = tmp_path / "model.tflite"
    differences, size = lite.export_tflite(a, str(output), count=7)
    assert run == [("encode", {"input": 7}), ("decode", {"z": 7}), ("reconstruct", {"input": 7})]
    # float32 weights: the two 784 x 8 kernels alone take 4 bytes a number (int8 weights would take 1).
    assert size == os.path.getsize(output) and size > 4 * 2 * 784 * 8
    assert set(differences) == set(lite.SIGNATURES) and max(max(d.values()) for d in differences.values()) <= 1e-5
    # The file is the LiteRT model of this export: checked against it, it reports the same (rounding) differences.
    assert lite.compare(output.read_bytes(), a, count=7) == differences
    assert os.listdir(tmp_path) == ["model.tflite"]  # No temporary file left beside it.


def test_export_tflite_script_prints_every_difference_and_the_file_it_wrote(pairs, tmp_path):
    a, _ = pairs("mlp")
    output = tmp_path / "vae.tflite"
    result = run_script("export_tflite.py", f"--saved_model={a}", f"--output={output}", "--check_examples=9")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    reported = {}
    assert lines[-3] == "(all within 0.0001, as a float32 conversion must be)"
    # What stays with the SavedModel, read from its signatures (an sse export has no sample).
    assert lines[-2] == ("Not in the LiteRT model: log_likelihood, log_likelihood_samples, sample (run them from the "
                         "SavedModel; sample draws stateless random numbers, which LiteRT has no op for)")
    assert lite.left_out(os.path.join(REPO, "saved_models", "tf1_tutorial")) == [
        "log_likelihood", "log_likelihood_samples"]
    for line in lines[:-3]:
        key, rest = line.split(": max |LiteRT - SavedModel| = ")
        value, tail = rest.split(" ", 1)
        assert tail == "on 9 inputs", line
        reported[key] = float(value)
    assert set(reported) == {"encode/z_mean", "encode/z_logvar", "decode/x_hat", "decode/logits", "reconstruct/x_hat"}
    assert max(reported.values()) <= 1e-5
    assert lines[-1] == f"Wrote {output} ({os.path.getsize(output)} bytes, float32 weights)"


def test_a_conditional_models_class_names_are_written_beside_its_tflite_file(pairs, tmp_path):
    # A .tflite file has no place for them, and LiteRT's `label` input is their index.
    cfg = config.RunConfig(model="cvae", dataset="image_folder", hidden_sizes=(8,), latent_dim=2,
                           likelihood="bernoulli")
    model = build_model(cfg, IMAGE_SHAPE, 2)
    pets = export.export_saved_model(model, str(tmp_path / "pets"),
                                     training.export_metadata(cfg, IMAGE_SHAPE, model, class_names=("cats", "dogs")))
    lite.export_tflite(pets, str(tmp_path / "out" / "pets.tflite"), count=4)
    assert sorted(os.listdir(tmp_path / "out")) == ["pets.labels.txt", "pets.tflite"]
    assert (tmp_path / "out" / "pets.labels.txt").read_text() == "cats\ndogs\n"
    # MNIST's classes are the digits; a model without labels gets no file.
    lite.export_tflite(pairs("cvae")[0], str(tmp_path / "digits.tflite"), count=4)
    assert (tmp_path / "digits.labels.txt").read_text().split() == [str(digit) for digit in range(10)]
    lite.export_tflite(pairs("mlp")[0], str(tmp_path / "vae.tflite"), count=4)
    assert not (tmp_path / "vae.labels.txt").exists()


def test_export_tflite_writes_nothing_when_a_float32_conversion_strays_from_the_savedmodel(pairs, tmp_path,
                                                                                         monkeypatch):
    a, _ = pairs("mlp")
    checked = lite.compare

    def one_output_off(tflite_model, saved_model, count=256, seed=0):
        differences = checked(tflite_model, saved_model, count, seed)
        differences["decode"]["x_hat"] = 0.25  # What a converter bug in one kernel would show.
        return differences

    monkeypatch.setattr(lite, "compare", one_output_off)
    with pytest.raises(export.ExportError, match=r"decode/x_hat is 0\.25 from the SavedModel's on 5 inputs, more "
                                                 r"than 0\.0001 .* was not written"):
        lite.export_tflite(a, str(tmp_path / "model.tflite"), count=5)
    assert os.listdir(tmp_path) == []
    # An int8 conversion changes outputs by design: written, its differences reported.
    differences, _ = lite.export_tflite(a, str(tmp_path / "model.tflite"), quantize="dynamic", count=5)
    assert differences["decode"]["x_hat"] == 0.25 and os.listdir(tmp_path) == ["model.tflite"]


def test_export_tflite_without_litert_says_what_to_install_before_converting(tmp_path):
    stub = tmp_path / "stub" / "ai_edge_litert"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('no LiteRT here')\n")
    output = tmp_path / "vae.tflite"
    result = run_script("export_tflite.py", "--saved_model=saved_models/tf1_tutorial", f"--output={output}",
                        env={"PYTHONPATH": str(tmp_path / "stub")})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: LiteRT's interpreter (ai-edge-litert) is not installed; pip install -e \".[lite]\"")
    assert not output.exists()
