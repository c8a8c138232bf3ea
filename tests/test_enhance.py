"""Denoising end to end: train from the flagfile, export, restore image files in a fresh process, measure
restoration."""

import gzip
import json
import math
import os
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import REPO, error_lines, run_script
from tfvae import corruption, data, enhance, export, restoration

PRETRAINED = os.path.join(REPO, "saved_models", "denoise_mnist")


def _write_idx(path, magic, array):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">i", magic) + struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes())


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory, mnist_dir):
    """The first 1200 training and 200 test digits of real MNIST, as a TF1 MNIST_data/ folder."""
    folder = tmp_path_factory.mktemp("MNIST_data")
    for split, count in (("train", 1200), ("test", 200)):
        images, labels = data.load_idx_split(mnist_dir, split)
        images_file, labels_file = data.IDX_FILES[split]
        _write_idx(folder / images_file, data.IDX_IMAGES_MAGIC, images[:count, :, :, 0])
        _write_idx(folder / labels_file, data.IDX_LABELS_MAGIC, labels[:count].astype(np.uint8))
    return str(folder)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory, small_mnist):
    """One epoch of configs/denoise_mnist.flags, made tiny, exported."""
    root = tmp_path_factory.mktemp("denoise")
    export_dir = str(root / "export")
    result = run_script("train.py", f"--flagfile={REPO}/configs/denoise_mnist.flags", f"--data_dir={small_mnist}",
                        "--epochs=1", "--validation_size=200", "--hidden_sizes=64", "--latent_dim=8",
                        "--noimage_summaries", f"--model_dir={root / 'run'}", f"--export_dir={export_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return export_dir


def _test_digits(mnist_dir, count):
    """`count` test digits in [0, 1]: those evaluate_restoration.py --num_examples=COUNT takes at seed 0."""
    images = data.load_arrays("mnist", mnist_dir, validation_size=0).test_images
    return data.to_unit_float(images[data.seeded_subset(count, len(images), 0)]).numpy()


def _save_png(path, image):
    """float `[H, W, C]` in [0, 1] -> 8-bit PNG (gray for C=1)."""
    pixels = np.round(image * 255).astype(np.uint8)
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)


def _read_gray(path):
    return np.asarray(Image.open(path).convert("L"), np.float32)[..., None] / 255.0


def test_export_records_the_corruption(tiny_export):
    metadata = export.load_metadata(tiny_export)
    assert (metadata["corruption"], metadata["corruption_strength"]) == ("mixed", 1.0)
    assert metadata["input_shape"] == [784] and metadata["config"]["latent_dim"] == 8


def test_enhance_restores_a_png_folder_in_a_fresh_process(tiny_export, mnist_dir, tmp_path):
    digits = corruption.corrupt(_test_digits(mnist_dir, 3), "gaussian_noise", 0.5, [1, 2]).numpy()
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, digit in enumerate(digits):
        _save_png(inputs / f"digit_{i}.png", digit)
    # An RGB JPEG is converted to the model's one channel.
    Image.fromarray(np.repeat(np.round(digits[0] * 255).astype(np.uint8), 3, axis=-1)).save(inputs / "rgb.jpg")
    (inputs / "notes.txt").write_text("not an image, not picked up")
    result = run_script("enhance.py", f"--saved_model={tiny_export}", f"--input={inputs}",
                        f"--output={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "note:" not in result.stderr  # Trained with --corruption: a restoration model.
    assert sorted(os.listdir(tmp_path / "out")) == ["digit_0.png", "digit_1.png", "digit_2.png", "rgb.png"]
    # The files hold what the SavedModel's reconstruct signature gives for the same inputs, to 8-bit precision.
    reconstruct = tf.saved_model.load(tiny_export).signatures["reconstruct"]
    x = np.stack([_read_gray(inputs / f"digit_{i}.png") for i in range(3)]).reshape(3, 784)
    expected = reconstruct(input=tf.constant(x))["x_hat"].numpy().reshape(3, 28, 28, 1)
    for i in range(3):
        np.testing.assert_allclose(_read_gray(tmp_path / "out" / f"digit_{i}.png"), expected[i], atol=0.6 / 255)


def test_a_model_trained_without_corruption_restores_with_a_note_saying_so(mnist_dir, tmp_path):
    noisy = tmp_path / "noisy.png"
    _save_png(noisy, corruption.corrupt(_test_digits(mnist_dir, 1), "gaussian_noise", 0.5, [1, 2]).numpy()[0])
    result = run_script("enhance.py", "--saved_model=saved_models/tf1_tutorial", f"--input={noisy}",
                        f"--output={tmp_path / 'out.png'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out.png").exists()
    assert result.stderr.strip().splitlines()[-1].startswith(
        "note: tf1_tutorial was trained without --corruption, to reconstruct clean images; it may not restore "
        "corrupted ones")


def _one_line_error(result):
    # TensorFlow's C++ runtime prints start-up lines (CUDA probing) before Python can silence it; the rest is ours.
    lines = error_lines(result)
    assert result.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_bad_images_fail_in_one_line_and_write_nothing(tiny_export, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _save_png(inputs / "good.png", np.zeros((28, 28, 1), np.float32))
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but truncated")
    result = run_script("enhance.py", f"--saved_model={tiny_export}", f"--input={inputs}",
                        f"--output={tmp_path / 'out'}")
    line = _one_line_error(result)
    assert f"{inputs / 'broken.png'}: not a readable PNG, JPEG, BMP, GIF or WebP image" in line
    assert not (tmp_path / "out").exists()


def test_wrong_size_is_refused_unless_resized(tiny_export, tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(np.full((56, 40, 3), 200, np.uint8)).save(big)
    output = tmp_path / "restored.jpg"
    result = run_script("enhance.py", f"--saved_model={tiny_export}", f"--input={big}", f"--output={output}")
    line = _one_line_error(result)
    assert f"{big}: image is 56x40, the model expects 28x28x1; pass --resize" in line
    assert os.listdir(tmp_path) == ["big.png"]
    result = run_script("enhance.py", f"--saved_model={tiny_export}", f"--input={big}", f"--output={output}",
                        "--resize", "--invert")
    assert result.returncode == 0, result.stderr[-3000:]
    assert Image.open(output).size == (28, 28) and Image.open(output).format == "JPEG"


def test_output_paths_are_checked_before_work(tmp_path):
    image = tmp_path / "a.png"
    _save_png(image, np.zeros((28, 28, 1), np.float32))
    with pytest.raises(enhance.EnhanceError, match="end it in .png, .jpg or .jpeg"):
        enhance.plan_outputs(str(image), str(tmp_path / "a.bmp"))
    with pytest.raises(enhance.EnhanceError, match="would overwrite the input"):
        enhance.plan_outputs(str(image), str(image))
    with pytest.raises(enhance.EnhanceError, match="no such file or folder"):
        enhance.plan_outputs(str(tmp_path / "missing.png"), str(tmp_path / "out.png"))
    _save_png(tmp_path / "a.jpg", np.zeros((28, 28, 1), np.float32))
    with pytest.raises(enhance.EnhanceError, match="share the name of a.png"):
        enhance.plan_outputs(str(tmp_path), str(tmp_path / "out"))
    (tmp_path / "out").mkdir()
    assert enhance.plan_outputs(str(image), str(tmp_path / "out")) == [(str(image), str(tmp_path / "out" / "a.png"))]
    (tmp_path / "out" / "a.png").mkdir()  # A folder where one restoration goes: refused before any is written.
    with pytest.raises(enhance.EnhanceError, match="would go to .*a.png, which is a folder; remove it"):
        enhance.plan_outputs(str(image), str(tmp_path / "out"))


def test_a_folder_of_bmp_gif_and_webp_images_is_read_as_a_single_one_is(tmp_path):
    # A single BMP was read while a folder of them was "no .png/.jpg/.jpeg files", and a mixed folder skipped them.
    pixels = np.zeros((28, 28), np.uint8)
    pixels[10:18, 12:16] = 255
    for name in ("scan.bmp", "frame.gif", "photo.png", "sketch.webp"):
        Image.fromarray(pixels).save(tmp_path / name, **({"lossless": True} if name.endswith(".webp") else {}))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "._scan.webp").write_bytes(b"\x00\x05\x16\x07")  # A macOS resource fork: hidden, skipped.
    pairs = enhance.plan_outputs(str(tmp_path), str(tmp_path / "out"))
    assert [os.path.basename(source) for source, _ in pairs] == ["frame.gif", "photo.png", "scan.bmp", "sketch.webp"]
    for source, _ in pairs:
        np.testing.assert_allclose(enhance.read_image(source, (28, 28, 1))[..., 0], pixels / 255, atol=1e-3)


def test_files_written_together_appear_all_or_none(tmp_path):
    from tfvae import artifacts

    def write(text):
        return lambda tmp: open(tmp, "w").write(text)

    def fail(tmp):
        raise OSError(28, "No space left on device", tmp)

    folder = tmp_path / "new" / "out"
    with pytest.raises(OSError) as raised:
        artifacts.write_all_or_none([(str(folder / "a.png"), write("a")), (str(folder / "b.png"), fail)])
    assert raised.value.filename == str(folder / "b.png")  # The name given, not its temporary file's.
    assert os.listdir(tmp_path) == []  # Neither file, nor the folders made for them.
    artifacts.write_all_or_none([(str(folder / "a.png"), write("a")), (str(tmp_path / "b.json"), write("b"))])
    assert (folder / "a.png").read_text() == "a" and sorted(os.listdir(tmp_path)) == ["b.json", "new"]
    assert os.listdir(folder) == ["a.png"]


def test_read_image_converts_channels_and_16_bit(tmp_path):
    path = tmp_path / "deep.png"
    deep = np.full((28, 28), 65535 // 2, np.uint16)
    Image.fromarray(deep).save(path)
    gray = enhance.read_image(str(path), (28, 28, 1))
    assert gray.shape == (28, 28, 1) and abs(gray.mean() - 0.5) < 0.01
    rgb = enhance.read_image(str(path), (28, 28, 3))
    assert rgb.shape == (28, 28, 3) and abs(rgb.mean() - 0.5) < 0.01


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparency_is_shown_over_white(mode, tmp_path):
    # A digit drawn in black on a transparent canvas: its colour is black everywhere, only alpha holds the stroke.
    pixels = np.zeros((28, 28, len(mode)), np.uint8)
    pixels[10:18, 12:15, -1] = 255  # The stroke, opaque black.
    pixels[0, 0, -1] = 128  # Half transparent black over white: mid gray.
    path = tmp_path / "transparent.png"
    Image.fromarray(pixels, mode).save(path)
    image = enhance.read_image(str(path), (28, 28, 1))[..., 0]
    assert image[10:18, 12:15].max() == 0 and image[0, 0] == pytest.approx(127 / 255, abs=0.01)
    assert image[20:, :].min() > 0.999  # Transparent: white, so --invert gives MNIST's light stroke on black.


def test_pretrained_model_restores_clearly(mnist_dir, tmp_path):
    """The shipped model, measured on 300 test digits in a fresh process: every kind gains > 3 dB and > 0.15 SSIM
    (on all 10000: +4.2 to +7.8 dB, +0.24 to +0.42), and clean digits stay close to themselves."""
    assert os.path.isfile(os.path.join(PRETRAINED, "restoration.json")), "saved_models/denoise_mnist is missing"
    output = tmp_path / "restoration.json"
    result = run_script("evaluate_restoration.py", f"--saved_model={PRETRAINED}", f"--data_dir={mnist_dir}",
                        "--num_examples=300", f"--output={output}", f"--grid={tmp_path / 'grid.png'}")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(output.read_text())
    assert set(results["corruptions"]) == {"gaussian_noise", "gaussian_blur", "mask", "downsample"}
    for kind, row in results["corruptions"].items():
        assert row["psnr_gain_db"] > 3.0 and row["ssim_gain"] > 0.15, (kind, row)
    assert results["clean_input"]["restored"]["psnr_db"] > 17.0
    assert Image.open(tmp_path / "grid.png").size[1] > 300
    # PSNR of pixels in [0, 1], recomputed here: mean over digits of 10 log10(1 / MSE) of the reconstructions the
    # SavedModel's reconstruct signature gives for the clean test digits.
    clean = _test_digits(mnist_dir, 300).reshape(300, 784)
    reconstruct = tf.saved_model.load(PRETRAINED).signatures["reconstruct"]
    restored = np.clip(reconstruct(input=tf.constant(clean))["x_hat"].numpy(), 0.0, 1.0).astype(np.float64)
    psnr = np.mean(10 * np.log10(1.0 / np.mean((restored - clean) ** 2, axis=1)))
    assert results["clean_input"]["restored"]["psnr_db"] == pytest.approx(psnr, abs=1e-3)
    for kind, row in results["corruptions"].items():
        # Corrupted digits are neither intact nor noise in another scale (a max_val of 255 adds 48 dB), and
        # restoring them falls short of reconstructing the clean digit: "restored" is of the corrupted input.
        assert 5 < row["corrupted"]["psnr_db"] < 30, (kind, row)
        assert row["restored"]["psnr_db"] < results["clean_input"]["restored"]["psnr_db"], (kind, row)


def test_psnr_summary_counts_identical_pairs_apart():
    clean = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype(np.float32)
    noisy = clean.copy()
    noisy[1] = np.clip(clean[1] + 0.1, 0.0, 1.0)  # One pair differs, two are identical (infinite PSNR).
    mse = np.mean((noisy[1] - clean[1]) ** 2)
    summary = restoration._summary(*restoration._scores(noisy, clean))
    assert summary["identical"] == 2
    assert summary["psnr_db"] == pytest.approx(10 * np.log10(1.0 / mse), abs=1e-3)
    differing_ssim = float(tf.image.ssim(noisy[1], clean[1], max_val=1.0))
    assert differing_ssim < 0.99 and summary["ssim"] == pytest.approx((2 + differing_ssim) / 3)  # Identical: 1.
    everything_identical = restoration._summary(*restoration._scores(clean, clean))
    assert everything_identical == {"psnr_db": math.inf, "ssim": pytest.approx(1.0), "identical": 3}


def test_resize_scales_height_and_width_of_a_non_square_model(tmp_path):
    # A 20x40 picture, dark left half and white right half, for a 10x20 model: each half keeps its side.
    pixels = np.zeros((20, 40), np.uint8)
    pixels[:, 20:] = 255
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)
    image = enhance.read_image(str(path), (10, 20, 1), resize=True)
    assert image.shape == (10, 20, 1)
    assert image[:, :8].max() < 0.01 and image[:, 12:].min() > 0.99


@pytest.mark.parametrize("page", [0, 255], ids=["dark_page", "light_page"])
def test_resize_keeps_the_shape_of_a_wide_picture_on_its_own_background(tmp_path, page):
    # A 24x24 square in the middle of a 30x90 page: fitted into 28x28 it is a square a third the size, not a bar
    # squeezed to a third of its width, and the rows added above and below are the page's gray level.
    pixels = np.full((30, 90), page, np.uint8)
    pixels[3:27, 33:57] = 255 - page
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)
    image = enhance.read_image(str(path), (28, 28, 1), resize=True)[..., 0]
    square = np.abs(image - page / 255) > 0.5
    rows, cols = np.flatnonzero(square.any(axis=1)), np.flatnonzero(square.any(axis=0))
    assert abs(len(rows) - len(cols)) <= 1 and 7 <= len(rows) <= 9, (rows, cols)  # Stretched: 22 rows, 8 columns.
    assert abs((rows[0] + rows[-1]) / 2 - 13.5) <= 1 and abs((cols[0] + cols[-1]) / 2 - 13.5) <= 1
    assert np.allclose(image[:9], page / 255) and np.allclose(image[-9:], page / 255)


def test_invert_applies_to_the_input_and_back_to_the_output(tmp_path, monkeypatch):
    # A stand-in model that halves its input: with --invert, 1 - (1 - x) / 2 = (1 + x) / 2 comes out.
    class Halving:
        signatures = {"reconstruct": lambda input: {"x_hat": input * 0.5}}

    metadata = {"image_shape": [28, 28, 1], "input_shape": [784], "model": "mlp"}
    monkeypatch.setattr(export, "load_metadata", lambda path: metadata)
    monkeypatch.setattr(export, "load_saved_model", lambda path: (Halving(), metadata))
    _save_png(tmp_path / "in.png", np.full((28, 28, 1), 51 / 255, np.float32))  # x = 0.2
    enhance.enhance_files("unused", str(tmp_path / "in.png"), str(tmp_path / "out.png"), invert=True)
    assert np.all(np.asarray(Image.open(tmp_path / "out.png")) == 153)  # 0.6 * 255
    enhance.enhance_files("unused", str(tmp_path / "in.png"), str(tmp_path / "plain.png"))
    assert np.all(np.asarray(Image.open(tmp_path / "plain.png")) == 26)  # round(0.1 * 255) = round(25.5)


def test_a_mostly_light_image_for_a_light_on_dark_model_gets_a_note_naming_invert(tmp_path, monkeypatch):
    class Halving:
        signatures = {"reconstruct": lambda input: {"x_hat": input * 0.5}}

    metadata = {"image_shape": [28, 28, 1], "input_shape": [784], "model": "mlp", "dataset": "mnist"}
    monkeypatch.setattr(export, "load_metadata", lambda path: metadata)
    monkeypatch.setattr(export, "load_saved_model", lambda path: (Halving(), metadata))
    (tmp_path / "in").mkdir()
    _save_png(tmp_path / "in" / "dark.png", np.full((28, 28, 1), 51 / 255, np.float32))  # Light on dark: 0.2.
    _save_png(tmp_path / "in" / "light.png", np.full((28, 28, 1), 230 / 255, np.float32))  # A scan: 0.9.
    _, note = enhance.enhance_files("unused", str(tmp_path / "in"), str(tmp_path / "out"))
    assert note.startswith("note: 1 of 2 images are mostly light as the model gets them (mean gray level light.png "
                           "0.90), while it learned light strokes on a dark background (mnist)")
    assert note.endswith("pass --invert (for dark on light)")
    _, note = enhance.enhance_files("unused", str(tmp_path / "in"), str(tmp_path / "inverted"), invert=True)
    assert "(mean gray level dark.png 0.80)" in note and note.endswith("drop --invert (they are light on dark already)")
    _, note = enhance.enhance_files("unused", str(tmp_path / "in" / "dark.png"), str(tmp_path / "d.png"))
    assert note is None
    metadata["dataset"] = "cifar10"  # Natural images have no background to expect.
    assert enhance.enhance_files("unused", str(tmp_path / "in"), str(tmp_path / "c"))[1] is None
