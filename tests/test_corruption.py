"""Corruption ops: eagerly and inside tf.data, seeded, in [0, 1], on image and flat batches; their flags."""

import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, assert_train_flags_fail_cleanly, run_script
from tfvae import config, corruption, data


SEED = tf.constant([3, 4], tf.int64)
IMAGE_SHAPE = (28, 28, 1)
ALL = list(config.CORRUPTION_KINDS) + ["mixed"]


@pytest.fixture(scope="module")
def digits(mnist_dir):
    """64 real test digits, float32 `[64, 28, 28, 1]` in [0, 1]."""
    return data.to_unit_float(data.load_arrays("mnist", mnist_dir, validation_size=0).test_images[:64]).numpy()


def _default(kind):
    return config.DEFAULT_CORRUPTION_STRENGTH[kind]


@pytest.mark.parametrize("kind", ALL)
def test_eager_and_tf_data_agree_in_range_and_shape(kind, digits):
    eager = corruption.corrupt(digits, kind, _default(kind), SEED).numpy()
    fn = corruption.make_corrupt_fn(kind, _default(kind), IMAGE_SHAPE)
    in_pipeline = next(iter(tf.data.Dataset.from_tensors(digits).map(lambda x: fn(x, SEED)))).numpy()
    assert eager.shape == digits.shape and eager.dtype == np.float32
    np.testing.assert_allclose(eager, in_pipeline, atol=1e-6)
    assert eager.min() >= 0.0 and eager.max() <= 1.0
    # A real corruption: clearly away from the clean digits.
    assert np.abs(eager - digits).mean() > 0.03


@pytest.mark.parametrize("kind", ALL)
def test_flat_batches_match_image_batches(kind, digits):
    flat = digits.reshape(len(digits), -1)
    out = corruption.corrupt(flat, kind, _default(kind), SEED, image_shape=IMAGE_SHAPE).numpy()
    assert out.shape == (64, 784)
    np.testing.assert_allclose(out.reshape(digits.shape), corruption.corrupt(digits, kind, _default(kind), SEED),
                               atol=1e-6)


@pytest.mark.parametrize("kind", ["gaussian_noise", "mask", "mixed"])
def test_random_kinds_are_seeded(kind, digits):
    a = corruption.corrupt(digits, kind, _default(kind), SEED).numpy()
    b = corruption.corrupt(digits, kind, _default(kind), tf.constant([3, 4], tf.int64)).numpy()
    c = corruption.corrupt(digits, kind, _default(kind), tf.constant([3, 5], tf.int64)).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_noise_has_the_requested_stddev():
    gray = np.full((16, 28, 28, 1), 0.5, np.float32)
    delta = corruption.gaussian_noise(gray, 0.1, SEED).numpy() - gray  # 5 sigma from both clips.
    assert abs(delta.mean()) < 0.002 and abs(delta.std() - 0.1) < 0.002


def test_mask_drops_the_requested_fraction_of_whole_pixels():
    white = np.ones((32, 28, 28, 3), np.float32)
    out = corruption.mask(white, 0.3, SEED).numpy()
    assert set(np.unique(out)) == {0.0, 1.0}
    assert abs((out == 0).mean() - 0.3) < 0.01
    # All channels of a pixel go together, as a missing pixel.
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_blur_is_a_gaussian_that_keeps_flat_images():
    flat = np.full((2, 28, 28, 3), 0.7, np.float32)
    np.testing.assert_allclose(corruption.gaussian_blur(flat, 2.0), flat, atol=1e-6)  # Mirrored edges.
    impulse = np.zeros((1, 28, 28, 1), np.float32)
    impulse[0, 14, 14, 0] = 1.0
    out = corruption.gaussian_blur(impulse, 1.5).numpy()[0, :, :, 0]
    assert abs(out.sum() - 1.0) < 1e-5
    rows = np.arange(28) - 14
    variance = (out.sum(axis=1) * rows ** 2).sum()
    assert abs(np.sqrt(variance) - 1.5) < 0.02  # The spread is sigma.


def test_blur_mirrors_the_edge_pixel_itself_at_a_corner():
    # The documented kernel: taps -r..r, r = ceil(3 sigma), weights exp(-t^2 / (2 sigma^2)) normalised; edges padded
    # symmetrically (the edge pixel repeated, as np.pad "symmetric"), not reflected about it.
    sigma, radius = 1.5, 5
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= kernel.sum()
    impulse = np.zeros((28, 28))
    impulse[0, 0] = 1.0
    padded = np.pad(impulse, radius, mode="symmetric")
    rows = np.apply_along_axis(lambda line: np.convolve(line, kernel, mode="valid"), 0, padded)
    expected = np.apply_along_axis(lambda line: np.convolve(line, kernel, mode="valid"), 1, rows)
    out = corruption.gaussian_blur(impulse[None, :, :, None].astype(np.float32), sigma).numpy()[0, :, :, 0]
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert out[0, 0] > out[1, 1] and abs(out.sum() - 1.0) < 1e-5  # The mass folded back stays in the image.


def test_downsample_loses_fine_detail_and_keeps_flat_images():
    flat = np.full((2, 28, 28, 1), 0.25, np.float32)
    np.testing.assert_allclose(corruption.downsample(flat, 4.0), flat, atol=1e-6)
    stripes = np.tile(np.array([0.0, 1.0], np.float32), 14)[None, None, :, None] * np.ones((1, 28, 1, 1))
    out = corruption.downsample(stripes.astype(np.float32), 2.0).numpy()
    np.testing.assert_allclose(out, 0.5, atol=1e-6)  # One-pixel stripes average out at half resolution.


def test_mixed_leaves_an_example_clean_or_gives_it_one_kind(mnist_dir):
    x = data.to_unit_float(data.load_arrays("mnist", mnist_dir, validation_size=0).test_images[:500]).numpy()
    out = corruption.corrupt(x, "mixed", 1.0, SEED).numpy()
    same = lambda a, b: np.all(np.abs(a - b) < 1e-6, axis=(1, 2, 3))  # noqa: E731
    is_clean = same(out, x)
    is_blur = same(out, corruption.gaussian_blur(x, _default("gaussian_blur")).numpy())
    is_downsample = same(out, corruption.downsample(x, _default("downsample")).numpy())
    is_mask = np.all((out == x) | (out == 0), axis=(1, 2, 3)) & ~is_clean
    is_noise = ~(is_clean | is_blur | is_downsample | is_mask)
    # Drawn uniformly over clean and the four kinds: about 100 of 500 each.
    for share in (is_clean, is_blur, is_downsample, is_mask, is_noise):
        assert 70 < share.sum() < 130


def test_pipeline_corrupts_input_and_keeps_target(digits):
    images = (digits * 255).round().astype(np.uint8)
    labels = np.zeros(len(images), np.int32)
    fn = corruption.make_corrupt_fn("gaussian_noise", 0.5, IMAGE_SHAPE)
    make = lambda: data.make_pipeline(images, labels, 32, seed=7, flatten=True,  # noqa: E731
                                      corrupt_fn=fn)
    first, again = list(make()), list(make())
    assert first[0]["input"].shape == (32, 784)
    np.testing.assert_allclose(first[0]["target"].numpy(), digits[:32].reshape(32, 784), atol=1e-6)
    assert np.abs(first[0]["input"].numpy() - first[0]["target"].numpy()).mean() > 0.1
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["input"].numpy(), b["input"].numpy())
    # Each batch draws its own noise.
    assert not np.allclose(first[0]["input"] - first[0]["target"], first[1]["input"] - first[1]["target"])


def test_bad_strength_is_refused_in_python():
    with pytest.raises(ValueError, match=r"outside \(0, 0.95\] for --corruption=mask"):
        corruption.make_corrupt_fn("mask", 1.0, IMAGE_SHAPE)
    with pytest.raises(ValueError, match="need image_shape"):
        corruption.corrupt(np.zeros((2, 784), np.float32), "gaussian_noise", 0.1, SEED)


PARSE_FLAGS = """
import dataclasses, json, sys
from absl import flags
from tfvae import config
config.define_train_flags()
flags.FLAGS(["train.py", *sys.argv[1:]])
print(json.dumps(dataclasses.asdict(config.config_from_flags())))
"""


def _parse(*args, cwd):
    # A fresh process: the train flags live in absl's global registry, which other test modules also fill.
    result = run_script(None, PARSE_FLAGS, *args, cwd=cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_flags_default_strength_and_flagfile_round_trip(tmp_path):
    cfg = _parse("--model=mlp", "--corruption=gaussian_blur", cwd=tmp_path)
    assert (cfg["corruption"], cfg["corruption_strength"]) == ("gaussian_blur", 2.0)
    assert _parse(cwd=tmp_path)["corruption_strength"] == 0.0
    flagfile = tmp_path / "flags.txt"
    as_tuples = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}  # JSON turned tuples to lists.
    flagfile.write_text(config.to_flagfile(config.RunConfig(**as_tuples)))
    assert _parse(f"--flagfile={flagfile}", cwd=tmp_path) == cfg
    shipped = _parse(f"--flagfile={REPO}/configs/denoise_mnist.flags", f"--model_dir={tmp_path}/b", cwd=tmp_path)
    assert (shipped["corruption"], shipped["corruption_strength"], shipped["model"]) == ("mixed", 1.0, "mlp")


BAD_FLAGS = {
    "noise too strong": (["--corruption=gaussian_noise", "--corruption_strength=1.5"],
                         "--corruption_strength=1.5 is outside (0, 1] for --corruption=gaussian_noise"),
    "negative blur": (["--corruption=gaussian_blur", "--corruption_strength=-1"],
                      "--corruption_strength=-1 is outside (0, 4] for --corruption=gaussian_blur"),
    "downsample 1": (["--corruption=downsample", "--corruption_strength=1"], "outside (1, 8]"),
    # 0.2 of every default would make downsample's 4 a factor of 0.8: no downsampling, and no way to measure it.
    "mixed too weak": (["--corruption=mixed", "--corruption_strength=0.2"], "is outside (0.25, 1.9] for "
                       "--corruption=mixed"),
    "strength without kind": (["--corruption_strength=0.3"], "--corruption_strength needs --corruption="),
    "unknown kind": (["--corruption=jpeg"], "--corruption"),
}


@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_bad_corruption_flags_fail_in_one_line_and_write_nothing(case, tmp_path):
    assert_train_flags_fail_cleanly(*BAD_FLAGS[case], tmp_path)


def test_mixed_scales_every_kinds_default():
    # Each kind at its default times the strength: half strength halves each default of config.py.
    assert corruption.kind_strengths("mixed", 0.5) == pytest.approx(
        {"gaussian_noise": 0.25, "gaussian_blur": 1.0, "mask": 0.25, "downsample": 2.0})
    assert corruption.kind_strengths("mask", 0.3) == {"mask": 0.3}
    assert corruption.kind_strengths("none", 0.0) == {}


@pytest.mark.parametrize("axis", [1, 2])
def test_downsample_divides_height_and_width_each_by_the_factor(axis):
    # Stripes two pixels wide along the long side of a 16x32 (or 32x16) image: halving that side keeps them as
    # one-pixel stripes, so they survive; shrinking it 4x (the short side's divisor) would average them to gray.
    shape = [1, 16, 16, 1]
    shape[axis] = 32
    stripes = (np.arange(32) // 2 % 2).astype(np.float32)
    image = np.broadcast_to(stripes.reshape([32 if a == axis else 1 for a in range(4)]), shape).copy()
    out = corruption.downsample(image, 2.0).numpy()
    assert out.shape == tuple(shape) and out.std() > 0.2


def test_noise_is_clipped_to_the_unit_range():
    # Stddev 1 on black and white: about half of each would leave [0, 1]; all are clipped back onto it.
    images = np.concatenate([np.zeros((4, 28, 28, 1)), np.ones((4, 28, 28, 1))]).astype(np.float32)
    out = corruption.gaussian_noise(images, 1.0, SEED).numpy()
    assert out.min() == 0.0 and out.max() == 1.0
    assert 0.4 < (out[:4] == 0.0).mean() < 0.6 and 0.4 < (out[4:] == 1.0).mean() < 0.6
