"""--dataset=image_folder: your own images in DATA_DIR/train/ and DATA_DIR/test/, read as a dataset, trained on,
exported and drawn; a folder laid out otherwise is refused naming the file and the fix."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_train_flags_fail_cleanly, error_lines, run_script
from tfvae import data, image_folder

CLASSES = ("seven", "one", "zero")  # Sorted, they are labels 0 one, 1 seven, 2 zero.


def write_png(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(path, tf.io.encode_png(np.asarray(image, np.uint8)))


def write_webp(path, image, **options):
    """uint8 `[H, W, C]` as a WebP file, lossless unless `options` say otherwise."""
    from PIL import Image
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = np.asarray(image, np.uint8)
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path, **{"lossless": True, **options})


def digit_folder(root, mnist_dir, per_class=(60, 20)):
    """An image folder of real MNIST digits: train/ and test/ with a class folder each for 7, 1 and 0."""
    digits = {"train": data.load_idx_split(mnist_dir, "train"), "test": data.load_idx_split(mnist_dir, "test")}
    for (split, (images, labels)), count in zip(digits.items(), per_class):
        for name, digit in zip(CLASSES, (7, 1, 0)):
            for i, image in enumerate(images[labels == digit][:count]):
                write_png(os.path.join(root, split, name, f"{i:04d}.png"), image)
    return str(root)


def test_class_folders_give_sorted_labels_in_a_fixed_order_that_mixes_them(tmp_path, mnist_dir):
    folder = digit_folder(tmp_path / "digits", mnist_dir, per_class=(30, 10))
    arrays = data.load_arrays("image_folder", folder, validation_size=15)
    assert arrays.class_names == ("one", "seven", "zero")
    assert arrays.train_images.shape == (75, 28, 28, 1) and arrays.train_images.dtype == np.uint8
    assert arrays.test_images.shape == (30, 28, 28, 1)
    # Each image keeps its own folder's label: ones hold the least ink, zeros the most.
    ink = [arrays.test_images[arrays.test_labels == label].mean() for label in range(3)]
    assert ink[0] < ink[1] < ink[2]
    # The validation split (the first training images) holds every class, not only the first folder's.
    assert set(arrays.validation_labels) == {0, 1, 2}
    again = data.load_arrays("image_folder", folder, validation_size=15)
    assert data.fingerprint(again) == data.fingerprint(arrays)
    assert data.describe_source("image_folder", folder) == f"the image files in {folder}"


def test_an_unlabelled_folder_transparency_and_mixed_channels(tmp_path):
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (8, 6, 3))
    write_png(str(tmp_path / "train" / "a.png"), np.full((8, 6, 1), 40))  # Gray first, in every order.
    write_png(str(tmp_path / "train" / "b.png"), colour)  # One colour image: the dataset is colour.
    write_png(str(tmp_path / "train" / "c.png"), np.concatenate([np.zeros((8, 6, 3)), np.full((8, 6, 1), 0)], -1))
    write_png(str(tmp_path / "test" / "d.png"), np.full((8, 6, 1), 90))
    (tmp_path / "train" / "notes.txt").write_text("not an image, not read")
    write_png(str(tmp_path / "train" / "._b.png"), colour[:2])  # macOS' resource fork beside a copy: skipped.
    splits, class_names = image_folder.load(str(tmp_path))
    assert class_names == ()
    images, labels = splits["train"]
    assert images.shape == (3, 8, 6, 3) and list(labels) == [0, 0, 0]
    as_read = {tuple(image[0, 0]) for image in images}
    assert tuple(colour[0, 0]) in as_read
    assert (40, 40, 40) in as_read  # Gray, repeated into three channels.
    assert (255, 255, 255) in as_read  # Fully transparent: white, as an image viewer shows it.
    assert splits["test"][0].shape == (1, 8, 6, 3)


def test_a_class_folders_images_may_sit_in_its_subfolders(tmp_path):
    # As Keras' image_dataset_from_directory and torchvision's ImageFolder read them: before, they were dropped.
    for split in ("train", "test"):
        write_png(str(tmp_path / split / "cats" / "a.png"), np.full((4, 4, 1), 10))
        write_png(str(tmp_path / split / "dogs" / "2024" / "march" / "b.png"), np.full((4, 4, 1), 200))
    splits, class_names = image_folder.load(str(tmp_path))
    images, labels = splits["train"]
    assert class_names == ("cats", "dogs")
    assert {(int(label), int(image[0, 0, 0])) for image, label in zip(images, labels)} == {(0, 10), (1, 200)}


@pytest.mark.parametrize("layout, message", [
    ("no_test", "has no test/ folder; pass a folder holding train/ and test/"),
    ("empty_test", "test holds no .png, .jpg, .jpeg, .bmp, .gif, .webp images"),
    ("loose_and_classes", "holds both images (x.png, ...) and class folders (cats, ...)"),
    ("other_classes", "test/ has the classes ['cats'] but train/ has ['cats', 'dogs']; give both the same"),
    ("other_size", "image is 9x9, but"),  # And names --image_size.
    ("not_an_image", "not a readable PNG, JPEG, BMP, GIF or WebP image"),
    ("empty_class", "dogs holds no .png, .jpg, .jpeg, .bmp, .gif, .webp images; add some, or remove the class folder"),
])
def test_a_folder_laid_out_otherwise_is_refused_naming_the_fix(tmp_path, layout, message):
    image = np.zeros((8, 8, 1))
    write_png(str(tmp_path / "train" / "cats" / "a.png"), image)
    write_png(str(tmp_path / "train" / "dogs" / "b.png"), image)
    if layout != "no_test":
        os.makedirs(tmp_path / "test", exist_ok=True)
    if layout not in ("no_test", "empty_test"):
        write_png(str(tmp_path / "test" / "cats" / "c.png"), image)
        if layout == "empty_class":
            os.makedirs(tmp_path / "test" / "dogs" / ".ipynb_checkpoints")  # Hidden: no images of its own.
            write_png(str(tmp_path / "test" / "dogs" / ".ipynb_checkpoints" / "d.png"), image)
        elif layout != "other_classes":
            write_png(str(tmp_path / "test" / "dogs" / "d.png"), image)
    if layout == "loose_and_classes":
        write_png(str(tmp_path / "train" / "x.png"), image)
    if layout == "other_size":
        write_png(str(tmp_path / "test" / "dogs" / "e.png"), np.zeros((9, 9, 1)))
    if layout == "not_an_image":
        (tmp_path / "test" / "dogs" / "f.png").write_bytes(b"not a png")
    with pytest.raises(data.DataError) as refused:
        data.load_arrays("image_folder", str(tmp_path), validation_size=0)
    assert message in str(refused.value)


def test_a_conditional_model_of_your_own_classes_trains_exports_and_draws(tmp_path, mnist_dir):
    folder = digit_folder(tmp_path / "digits", mnist_dir)
    run, export = str(tmp_path / "run"), str(tmp_path / "export")
    result = run_script("train.py", "--model=cvae", "--dataset=image_folder", f"--data_dir={folder}",
                        "--validation_size=30", "--hidden_sizes=32", "--latent_dim=2", "--batch_size=30",
                        "--epochs=2", f"--model_dir={run}", f"--export_dir={export}")
    assert result.returncode == 0, result.stderr
    with open(os.path.join(export, "tfvae.json")) as f:
        metadata = json.load(f)
    assert metadata["num_classes"] == 3 and metadata["class_names"] == ["one", "seven", "zero"]
    assert metadata["image_shape"] == [28, 28, 1]
    # The export takes labels of its three classes only, in a process without tfvae.
    check = run_script(None, f"""
import tensorflow as tf
decode = tf.saved_model.load({export!r}).signatures["decode"]
print(decode(z=tf.zeros([3, 2]), label=tf.constant([0, 1, 2]))["x_hat"].shape)
try:
    decode(z=tf.zeros([1, 2]), label=tf.constant([3]))
except tf.errors.InvalidArgumentError:
    print("label 3 refused")
""")
    assert check.stdout.split("\n")[:2] == ["(3, 784)", "label 3 refused"], check.stderr
    generated = run_script("generate.py", f"--saved_model={export}", "--label=all", f"--output={tmp_path}/g.png")
    assert generated.returncode == 0, generated.stderr
    # From the run folder's checkpoint: rebuilt with the shape and classes its data.json recorded.
    plotted = run_script("plot.py", f"--model_dir={run}", "--kinds=class_grid,latent_scatter",
                         f"--output_dir={tmp_path}/plots")
    assert plotted.returncode == 0, plotted.stderr
    assert sorted(os.listdir(tmp_path / "plots")) == ["class_grid.png", "latent_scatter.png"]
    # A judge of the same classes, trained on the folder, scores the samples of each class.
    judge = run_script("train_classifier.py", "--dataset=image_folder", f"--data_dir={folder}", "--validation_size=30",
                       "--epochs=2", "--batch_size=30", f"--export_dir={tmp_path}/judge")
    assert judge.returncode == 0, judge.stderr
    with open(tmp_path / "judge" / "classifier.json") as f:
        assert json.load(f)["class_names"] == ["one", "seven", "zero"]
    scored = run_script("evaluate_cvae.py", f"--saved_model={export}", f"--classifier={tmp_path}/judge",
                        "--samples_per_class=20", f"--output={tmp_path}/scores.json")
    assert scored.returncode == 0, scored.stderr
    with open(tmp_path / "scores.json") as f:
        scores = json.load(f)
    assert len(scores["per_class"]) == 3 and np.array(scores["confusion"]).sum() == 60


def test_flags_and_folders_that_do_not_fit_fail_cleanly(tmp_path_factory, tmp_path):
    unlabelled = tmp_path_factory.mktemp("unlabelled")
    colour = tmp_path_factory.mktemp("colour")
    for split in ("train", "test"):
        for i in range(4):
            write_png(str(unlabelled / split / f"{i}.png"), np.full((8, 8, 1), 30 * i))
            write_png(str(colour / split / "a" / f"{i}.png"), np.full((8, 8, 3), 30 * i))
            write_png(str(colour / split / "b" / f"{i}.png"), np.full((8, 8, 3), 20 * i))
    # A flag alone: refused with the flags (exit 2).
    assert_train_flags_fail_cleanly(["--dataset=image_folder"],
                                    "--dataset=image_folder reads your images from --data_dir: pass --data_dir=",
                                    tmp_path)
    # What the folder holds: refused once it is read (exit 1), before any run folder is written.
    small = ["--validation_size=2", "--batch_size=2", "--hidden_sizes=4", "--latent_dim=2", "--epochs=1"]
    for args, message in [
        ([f"--data_dir={unlabelled}", "--model=cvae", *small],
         f"--model=cvae learns from labels, and {unlabelled} has no class folders; put each class's images in a "
         f"subfolder of train/ and of test/"),
        ([f"--data_dir={colour}", "--model=mlp", "--likelihood=autoregressive_bernoulli", *small],
         f"--likelihood=autoregressive_bernoulli models single-channel images, and the images in {colour} are "
         f"colour; use --likelihood=bernoulli"),
    ]:
        result = run_script("train.py", "--dataset=image_folder", f"--model_dir={tmp_path}/run",
                            f"--export_dir={tmp_path}/export", *args, cwd=tmp_path)
        lines = error_lines(result)
        assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.stderr
        assert os.listdir(tmp_path) == []


def test_an_image_folder_run_trains_on_colour_images(tmp_path):
    rng = np.random.default_rng(1)
    for split, count in (("train", 12), ("test", 4)):
        for i in range(count):
            write_png(str(tmp_path / "pictures" / split / f"{i}.png"), rng.integers(0, 256, (12, 10, 3)))
    result = run_script("train.py", "--model=conv", "--dataset=image_folder", f"--data_dir={tmp_path}/pictures",
                        "--validation_size=4", "--batch_size=4", "--latent_dim=2", "--conv_filters=4,8",
                        "--hidden_sizes=8", "--epochs=1", f"--model_dir={tmp_path}/run",
                        f"--export_dir={tmp_path}/export")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "export" / "tfvae.json") as f:
        metadata = json.load(f)
    assert metadata["image_shape"] == [12, 10, 3] and "class_names" not in metadata


def test_tools_refuse_a_folder_of_other_images_than_the_models(tmp_path):
    from tfvae import restore

    for name, shape, classes in (("mine", (6, 6, 1), ("a", "b")), ("other", (6, 6, 1), ("a", "b", "c")),
                                 ("bigger", (8, 8, 1), ("a", "b"))):
        for split in ("train", "test"):
            for label in classes:
                for i in range(3):
                    write_png(str(tmp_path / name / split / label / f"{i}.png"), np.full(shape, 40 * i))
    export = str(tmp_path / "export")
    result = run_script("train.py", "--model=cvae", "--dataset=image_folder", f"--data_dir={tmp_path}/mine",
                        "--validation_size=2", "--batch_size=2", "--hidden_sizes=4", "--latent_dim=2", "--epochs=1",
                        f"--model_dir={tmp_path}/run", f"--export_dir={export}")
    assert result.returncode == 0, result.stderr
    metadata = restore.load_saved_model(export).metadata
    assert len(data.load_model_arrays(metadata, "", 2).test_images) == 6  # Its own folder, as recorded.
    for other, holds in (("other", "6x6x1 images of the classes ['a', 'b', 'c']"),
                         ("bigger", "8x8x1 images of the classes ['a', 'b']")):
        with pytest.raises(data.DataError) as refused:
            data.load_model_arrays(metadata, str(tmp_path / other), 2)
        assert str(refused.value) == (f"--data_dir={tmp_path / other} holds {holds}, but this model was trained on "
                                      f"6x6x1 images of the classes ['a', 'b'] ({tmp_path / 'mine'}); pass that "
                                      f"folder")
    # The folder moved away: its new place is asked for, not TFDS's.
    os.rename(tmp_path / "mine", tmp_path / "moved")
    with pytest.raises(data.DataError, match="trained on the image folder .*mine, which is not here; pass --data_dir="):
        data.load_model_arrays(metadata, "", 2)
    judged = run_script("evaluate_cvae.py", f"--saved_model={export}", f"--output={tmp_path}/j.json", cwd=tmp_path)
    assert judged.returncode == 1 and error_lines(judged) == [
        f"error: no classifier of this model's image folder at saved_models/image_folder_classifier; train one with "
        f"python scripts/train_classifier.py --dataset=image_folder --data_dir={tmp_path / 'mine'} (it goes there), "
        f"or pass --classifier=DIR"], judged.stderr
    evaluated = run_script("evaluate.py", f"--saved_model={export}", f"--data_dir={tmp_path}/other",
                           "--num_importance_samples=2", f"--output={tmp_path}/e.json")
    assert evaluated.returncode == 1 and "holds 6x6x1 images of the classes ['a', 'b', 'c']" in evaluated.stderr
    assert not os.path.exists(tmp_path / "e.json")


def test_image_size_brings_every_image_to_one_size_by_its_centre(tmp_path):
    wide = np.zeros((4, 12, 1))
    wide[:, 4:8] = 255  # A white centre square: cropped to 4x4 it is all that is left.
    write_png(str(tmp_path / "train" / "wide.png"), wide)
    write_png(str(tmp_path / "train" / "big.png"), np.full((16, 16, 1), 100))
    write_png(str(tmp_path / "test" / "small.png"), np.full((2, 2, 1), 50))
    with pytest.raises(data.DataError, match="pass --image_size=HEIGHT,WIDTH to bring every image to one size"):
        data.load_arrays("image_folder", str(tmp_path), validation_size=0)
    arrays = data.load_arrays("image_folder", str(tmp_path), validation_size=0, image_size=(4, 4))
    assert arrays.train_images.shape == (2, 4, 4, 1) and arrays.test_images.shape == (1, 4, 4, 1)
    by_mean = sorted(arrays.train_images, key=lambda image: image.mean())
    np.testing.assert_array_equal(by_mean[0], np.full((4, 4, 1), 100))  # Shrunk, its level kept.
    np.testing.assert_array_equal(by_mean[1], np.full((4, 4, 1), 255))  # The wide image's centre.
    np.testing.assert_array_equal(arrays.test_images[0], np.full((4, 4, 1), 50))  # Enlarged.


def test_a_run_with_image_size_records_it_and_its_tools_read_the_folder_so(tmp_path):
    from tfvae import restore

    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("test", 4)):
        for i in range(count):
            write_png(str(tmp_path / "photos" / split / f"{i}.png"), rng.integers(0, 256, (10 + i, 14, 3)))
    result = run_script("train.py", "--model=mlp", "--dataset=image_folder", f"--data_dir={tmp_path}/photos",
                        "--image_size=6,6", "--validation_size=2", "--batch_size=2", "--hidden_sizes=4",
                        "--latent_dim=2", "--epochs=1", f"--model_dir={tmp_path}/run", f"--export_dir={tmp_path}/e")
    assert result.returncode == 0, result.stderr
    assert "--image_size=6,6" in (tmp_path / "run" / "flags.txt").read_text().splitlines()
    metadata = restore.load_saved_model(str(tmp_path / "e")).metadata
    assert metadata["image_shape"] == [6, 6, 3] and metadata["config"]["image_size"] == [6, 6]
    assert data.load_model_arrays(metadata, "", 2).test_images.shape == (4, 6, 6, 3)
    assert restore.load_checkpoint(str(tmp_path / "run")).metadata["image_shape"] == [6, 6, 3]
    # A named dataset has its own size.
    refused = run_script("train.py", "--image_size=6,6", f"--model_dir={tmp_path}/r2")
    assert refused.returncode == 2 and "--image_size resizes the images of --dataset=image_folder" in refused.stderr


@pytest.mark.parametrize("kind, orientation", [(kind, value) for kind in ("png", "webp") for value in range(1, 9)]
                         + [("jpg", 6)])
def test_a_photo_is_read_upright_as_its_exif_orientation_says(tmp_path, kind, orientation):
    # TensorFlow's decoders ignore EXIF: a phone's portrait photo would be read on its side. PIL's exif_transpose
    # is the reference for all eight orientations. WebP keeps EXIF in a chunk of its own, without JPEG's "Exif" mark.
    from PIL import Image, ImageOps
    stored = np.zeros((48, 32, 3), np.uint8)
    stored[:24, :16] = (250, 0, 0)  # One red corner and one green edge: every turn and mirror looks different.
    stored[:, 24:] = (0, 250, 0)  # In whole 8x8 blocks, which JPEG keeps nearly exactly.
    path = str(tmp_path / f"photo.{kind}")
    exif = Image.Exif()
    exif[image_folder.EXIF_ORIENTATION_TAG] = orientation
    options = {"jpg": {"quality": 100, "subsampling": 0}, "webp": {"lossless": True}}.get(kind, {})
    Image.fromarray(stored).save(path, exif=exif, **options)
    with Image.open(path) as photo:
        expected = np.asarray(ImageOps.exif_transpose(photo), np.float32) / 255.0
    decoded = image_folder.decode(path).numpy()
    assert decoded.shape == expected.shape == ((48, 32, 3) if orientation < 5 else (32, 48, 3))
    np.testing.assert_allclose(decoded, expected, atol=3 / 255 if kind == "jpg" else 0)


def test_files_that_are_no_image_it_reads_are_skipped_with_a_warning(tmp_path, caplog):
    for split in ("train", "test"):
        write_png(str(tmp_path / split / "cats" / "a.png"), np.full((4, 4, 1), 9))
    (tmp_path / "train" / "cats" / "b.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (tmp_path / "train" / "cats" / "deeper").mkdir()
    (tmp_path / "train" / "cats" / "deeper" / "c.tif").write_bytes(b"II*")
    (tmp_path / "test" / "cats" / ".DS_Store").write_bytes(b"")  # Hidden: not worth a word.
    with caplog.at_level("WARNING"):
        splits, class_names = image_folder.load(str(tmp_path))
    assert class_names == ("cats",) and len(splits["train"][0]) == 1
    assert f"{tmp_path}: skipped 2 files that are no .png, .jpg, .jpeg, .bmp, .gif, .webp image (e.g. " in caplog.text
    assert "b.heic); convert any images among them to PNG to use them" in caplog.text


def test_an_image_folder_holds_out_a_tenth_for_validation_unless_told(tmp_path, mnist_dir):
    # The flag's default, 5,000, is more than a small folder's 90 training images: a tenth is held out instead.
    folder = digit_folder(tmp_path / "digits", mnist_dir, per_class=(30, 10))
    small = ["--dataset=image_folder", f"--data_dir={folder}", "--model=mlp", "--likelihood=bernoulli",
             "--hidden_sizes=8", "--latent_dim=2", "--batch_size=10", "--epochs=1", "--noimage_summaries"]
    for name, extra, held_out in (("default", [], 9), ("set", ["--validation_size=30"], 30)):
        run = tmp_path / name
        result = run_script("train.py", *small, *extra, f"--model_dir={run}", f"--export_dir={tmp_path / 'x' / name}")
        assert result.returncode == 0, result.stderr[-2000:]
        assert f"--validation_size={held_out}\n" in (run / "flags.txt").read_text()
        history = json.load(open(run / "metrics.json"))["history"]
        assert len(history["val_loss"]) == 1  # Validated on them.


def test_class_folders_named_in_either_unicode_form_are_one_class(tmp_path):
    # macOS may store "café" decomposed (NFD: "e" and a combining accent); copied beside a composed twin, both
    # splits must still name the same class, in composed form.
    import unicodedata
    composed, decomposed = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    assert composed != decomposed
    write_png(str(tmp_path / "train" / composed / "a.png"), np.full((4, 4, 1), 9))
    write_png(str(tmp_path / "train" / "bar" / "b.png"), np.full((4, 4, 1), 9))
    write_png(str(tmp_path / "test" / decomposed / "c.png"), np.full((4, 4, 1), 9))
    write_png(str(tmp_path / "test" / "bar" / "d.png"), np.full((4, 4, 1), 9))
    class_names, files = image_folder.scan(str(tmp_path))
    assert class_names == ("bar", composed)
    assert sorted(label for _, label in files["test"]) == [0, 1]


@pytest.mark.parametrize("link, target, message", [
    ("train/cats/up", "..", "train/cats/up is a link back to a folder it is in, so its images would be read over"),
    ("train/cats/deeper/self", ".", "train/cats/deeper/self is a link back to a folder it is in"),
    ("train/cats/dogs", "../dogs", "train/cats/dogs is a link into another class's folder"),
    ("train/birds", "/nonexistent/birds", "train/birds is a broken link (to /nonexistent/birds); restore what it"),
    ("train/cats/c.png", "/nonexistent/c.png", "train/cats/c.png is a broken link (to /nonexistent/c.png)"),
])
def test_links_that_loop_cross_classes_or_lead_nowhere_are_refused_by_name(tmp_path, link, target, message):
    # os.walk follows a link to a folder above it round and round: 48 images were read as 21,648, some with the
    # other class's label. A broken link to a class folder passed for a skipped file, dropping the class.
    for split in ("train", "test"):
        for name in ("cats", "dogs"):
            write_png(str(tmp_path / split / name / "a.png"), np.full((4, 4, 1), 9))
    (tmp_path / "train" / "cats" / "deeper").mkdir()
    os.symlink(target, tmp_path / link)
    with pytest.raises(image_folder.FolderError, match=re.escape(message)):
        image_folder.scan(str(tmp_path))


def test_a_link_to_images_elsewhere_is_followed(tmp_path):
    for split in ("train", "test"):
        write_png(str(tmp_path / split / "cats" / "a.png"), np.full((4, 4, 1), 9))
    write_png(str(tmp_path / "elsewhere" / "b.png"), np.full((4, 4, 1), 9))
    os.symlink(tmp_path / "elsewhere", tmp_path / "train" / "cats" / "more")
    assert len(image_folder.scan(str(tmp_path))[1]["train"]) == 2


@pytest.mark.parametrize("where", ["after the pixels", "imagemagick text"])
def test_a_png_turned_by_exif_anywhere_in_it_is_read_upright(tmp_path, where):
    # The eXIf chunk may follow the pixel data (the PNG spec allows it), past any prefix one would search; ImageMagick
    # keeps EXIF in a text chunk instead.
    import struct
    import zlib
    from PIL import Image, ImageOps, PngImagePlugin
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)  # Noise: ~180 kB of pixel data before the chunk.
    exif = Image.Exif()
    exif[image_folder.EXIF_ORIENTATION_TAG] = 6
    path = str(tmp_path / "photo.png")
    if where == "after the pixels":
        Image.fromarray(stored).save(path)
        payload = exif.tobytes()
        chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload + struct.pack(">I", zlib.crc32(b"eXIf" + payload))
        contents = open(path, "rb").read()
        open(path, "wb").write(contents[:-12] + chunk + contents[-12:])  # Before IEND, after IDAT.
    else:
        text = PngImagePlugin.PngInfo()
        hex_exif = (b"Exif\x00\x00" + exif.tobytes()).hex()
        text.add_text("Raw profile type exif", f"\nexif\n{len(hex_exif) // 2:8d}\n{hex_exif}\n", zip=True)
        Image.fromarray(stored).save(path, pnginfo=text)
    with Image.open(path) as photo:
        expected = np.asarray(ImageOps.exif_transpose(photo), np.float32) / 255.0
    assert expected.shape == (200, 300, 3)  # PIL's reference turns it: the file does say orientation 6.
    np.testing.assert_allclose(image_folder.decode(path).numpy(), expected, atol=1e-6)  # x/255 rounds either way.


def test_a_webp_is_read_as_pil_reads_it_with_transparency_over_white(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (8, 6, 3))
    see_through = rng.integers(0, 256, (8, 6, 4))
    see_through[0, 0, 3], see_through[0, 1, 3] = 0, 255  # One fully transparent pixel, one opaque.
    write_webp(str(tmp_path / "colour.webp"), colour)
    write_webp(str(tmp_path / "see_through.webp"), see_through)
    with Image.open(tmp_path / "colour.webp") as image:
        np.testing.assert_array_equal(np.asarray(image), colour)  # Lossless: PIL reads back what was written.
    np.testing.assert_array_equal(np.round(image_folder.decode(str(tmp_path / "colour.webp")).numpy() * 255), colour)
    with Image.open(tmp_path / "see_through.webp") as image:
        assert image.mode == "RGBA"
        stored = np.asarray(image) / 255
    expected = stored[..., :3] * stored[..., 3:] + (1 - stored[..., 3:])
    decoded = image_folder.decode(str(tmp_path / "see_through.webp")).numpy()
    assert decoded.shape == (8, 6, 3)
    np.testing.assert_allclose(decoded, expected, atol=1e-6)
    np.testing.assert_array_equal(decoded[0, 0], (1, 1, 1))  # Fully transparent: white.
    np.testing.assert_allclose(decoded[0, 1], see_through[0, 1, :3] / 255, atol=1e-6)


def test_gray_webps_are_a_gray_dataset_beside_gray_pngs_until_a_colour_image_joins(tmp_path):
    # WebP has no gray mode: a gray picture comes back as three channels, equal when lossless and up to one level
    # apart when lossy. Read as colour, a folder of gray WebPs would be a colour dataset.
    from PIL import Image
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (16, 12, 1))
    write_webp(str(tmp_path / "train" / "lossless.webp"), gray)
    write_webp(str(tmp_path / "train" / "lossy.webp"), gray, lossless=False, quality=75)
    write_png(str(tmp_path / "train" / "scan.png"), np.full((16, 12, 1), 70))
    half_transparent = np.concatenate([gray, np.full((16, 12, 1), 128)], -1)  # Gray+alpha, stored as RGBA.
    write_webp(str(tmp_path / "test" / "faded.webp"), half_transparent)
    with Image.open(tmp_path / "train" / "lossy.webp") as image:
        lossy_rgb = np.asarray(image).astype(int)
        lossy_gray = np.asarray(image.convert("L")).astype(int)
    assert 0 < np.ptp(lossy_rgb, axis=-1).max() <= 1  # What the rule must tolerate.
    splits, _ = image_folder.load(str(tmp_path))
    train = splits["train"][0]
    assert train.shape == (3, 16, 12, 1) and splits["test"][0].shape == (1, 16, 12, 1)
    assert sum((image == gray).all() for image in train) == 1  # Lossless: exactly.
    assert sum((image == 70).all() for image in train) == 1  # The PNG.
    lossy = [image for image in train if not (image == gray).all() and not (image == 70).all()]
    assert np.abs(lossy[0][..., 0].astype(int) - lossy_gray).max() <= 1  # PIL's luma of the same RGB.
    np.testing.assert_allclose(splits["test"][0][0], gray * 128 / 255 + 127, atol=0.5)  # Over white.
    # Channels two levels apart are colour, and one colour image makes the dataset colour.
    tinted = np.concatenate([gray, gray, np.minimum(gray + 2, 255)], -1)
    write_webp(str(tmp_path / "train" / "tinted.webp"), tinted)
    assert image_folder.decode(str(tmp_path / "train" / "tinted.webp")).shape == (16, 12, 3)
    splits, _ = image_folder.load(str(tmp_path))
    assert splits["train"][0].shape == (4, 16, 12, 3)
    assert any((image == np.repeat(gray, 3, -1)).all() for image in splits["train"][0])  # Gray, repeated.
    assert any((image == tinted).all() for image in splits["train"][0])


def test_gray_gifs_are_gray_and_a_colour_gif_is_colour(tmp_path):
    # GIF has no gray mode either: TensorFlow decodes every GIF as RGB, three equal channels for a gray one.
    from PIL import Image
    gray = np.random.default_rng(1).integers(0, 256, (10, 8), dtype=np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "gray.gif")
    assert tf.io.decode_image(open(tmp_path / "gray.gif", "rb").read(), expand_animations=False).shape == (10, 8, 3)
    read = image_folder.decode(str(tmp_path / "gray.gif")).numpy()
    assert read.shape == (10, 8, 1)
    np.testing.assert_array_equal(np.round(read[..., 0] * 255), gray)
    colour = np.stack([gray, gray, 255 - gray], -1)
    Image.fromarray(colour, "RGB").save(tmp_path / "colour.gif")
    assert image_folder.decode(str(tmp_path / "colour.gif")).shape == (10, 8, 3)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_an_animated_webp_is_read_as_its_first_frame(tmp_path, mode):
    # As a GIF is. TensorFlow 2.21's decoder writes an RGB animation's first frame as RGBA into an RGB-sized buffer
    # and aborts the process (free(): corrupted unsorted chunks), so PIL reads animations.
    from PIL import Image
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (32, 24, len(mode)), dtype=np.uint8) for _ in range(3)]
    path = str(tmp_path / "clip.webp")
    Image.fromarray(frames[0], mode).save(path, save_all=True, lossless=True, duration=100,
                                          append_images=[Image.fromarray(frame, mode) for frame in frames[1:]])
    with Image.open(path) as clip:
        assert clip.n_frames == 3
        first = np.asarray(clip) / 255
    if mode == "RGBA":
        first = first[..., :3] * first[..., 3:] + (1 - first[..., 3:])
    decoded = image_folder.decode(path).numpy()
    assert decoded.shape == (32, 24, 3)
    np.testing.assert_allclose(decoded, first, atol=1e-6)
    np.testing.assert_allclose(decoded, frames[0][..., :3] / 255 if mode == "RGB" else first, atol=1e-6)


@pytest.mark.parametrize("damage", ["truncated", "truncated animation", "header only"])
def test_a_damaged_webp_is_refused_in_one_line_naming_it(tmp_path, damage):
    from PIL import Image
    frames = [Image.fromarray(np.full((16, 16, 3), value, np.uint8)) for value in (10, 200)]
    whole = tmp_path / "whole.webp"
    frames[0].save(whole, lossless=True, **({"save_all": True, "append_images": frames[1:]} if "animation" in damage
                                           else {}))
    contents = whole.read_bytes()
    for split in ("train", "test"):
        write_png(str(tmp_path / "folder" / split / "a.png"), np.zeros((16, 16, 1)))
    damaged = tmp_path / "folder" / "train" / "b.webp"
    damaged.write_bytes(contents[:12] if damage == "header only" else contents[:len(contents) // 2])
    with pytest.raises(image_folder.FolderError) as refused:
        image_folder.load(str(tmp_path / "folder"))
    message = str(refused.value)
    assert message.startswith(f"{damaged}: not a readable PNG, JPEG, BMP, GIF or WebP image (")
    assert message.endswith("); replace or remove it") and "\n" not in message


def test_a_model_trained_on_gray_gifs_in_colour_reads_them_in_colour_again(tmp_path):
    # tfvae before 2026-12-05 read a gray GIF as three equal channels: a run or export of such a folder records
    # HxWx3, and its tools (evaluate.py, plot.py, --resume) must read the same folder as it trained on it.
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    for split in image_folder.SPLITS:
        os.makedirs(tmp_path / split)
        for i in range(3):
            PILImage.fromarray(rng.integers(0, 256, (6, 5), dtype=np.uint8)).save(tmp_path / split / f"{i}.gif")
    gray, _ = image_folder.load(str(tmp_path))
    colour, _ = image_folder.load(str(tmp_path), channels=3)
    assert gray["train"][0].shape[-1] == 1 and colour["train"][0].shape[-1] == 3
    np.testing.assert_array_equal(colour["train"][0], np.repeat(gray["train"][0], 3, axis=-1))
    metadata = {"dataset": "image_folder", "image_shape": [6, 5, 3], "class_names": [],
                "config": {"data_dir": str(tmp_path)}}
    assert data.load_model_arrays(metadata, "", 1).train_images.shape[1:] == (6, 5, 3)
    # train.py --resume reads the folder with the channels its run recorded; a new run, as the images are.
    from tfvae import config, training
    cfg = config.RunConfig(dataset="image_folder", data_dir=str(tmp_path), model_dir=str(tmp_path / "run"))
    assert training._recorded_channels(cfg) == 1
    os.makedirs(cfg.model_dir)
    with open(os.path.join(cfg.model_dir, training.DATA_RECORD_FILE), "w") as f:
        json.dump({"image_shape": [6, 5, 3], "class_names": []}, f)
    assert training._recorded_channels(cfg) == 3
