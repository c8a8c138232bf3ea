"""A folder of image files as a dataset (`--dataset=image_folder`): DATA_DIR/train/ and DATA_DIR/test/, each holding
the images themselves or one subfolder of images per class, as Keras' `image_dataset_from_directory` and
torchvision's `ImageFolder` lay them out."""

import io
import os
import unicodedata

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image

from tfvae import cli

SPLITS = ("train", "test")
# Files are read in one fixed shuffled order: the validation split (the first training images) and a plot's first
# test images then mix the classes, where sorted class folders would give them one class.
ORDER_SEED = 0
# What `decode` reads (of an animated GIF or WebP, the first frame).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# WebP and GIF have no gray mode: a gray picture comes back as RGB (a GIF's exactly equal), and lossy WebP's
# YUV -> RGB rounding leaves its channels up to one level apart (measured at qualities 1-100). One whose channels are
# that close everywhere is read as gray, else a folder of gray WebPs or GIFs (or those among gray PNGs) would become a
# colour dataset of three equal channels.
WEBP_GRAY_SPREAD = 1.5 / 255
# ITU-R BT.601 luma, the Y plane lossy WebP stores; its weights sum to 1, unlike tf.image.rgb_to_grayscale's.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# EXIF's orientation tag: how to turn the stored pixels upright. TensorFlow's decoders ignore it, so a camera's
# portrait photo would be read lying on its side. Each maps an [H, W, C] array as PIL's ImageOps.exif_transpose does.
EXIF_ORIENTATION_TAG = 0x0112
UPRIGHT = {
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # upside down
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # mirrored along the main diagonal
    6: lambda a: np.rot90(a, -1),  # stored turned 90 degrees anticlockwise: turned clockwise
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),  # mirrored along the other diagonal
    8: lambda a: np.rot90(a, 1),  # stored turned clockwise: turned anticlockwise
}
LAYOUT_HINT = ("a folder holding train/ and test/, each of images or of one subfolder of images per class "
               "(README: Data)")


class FolderError(ValueError):
    """The folder's layout or one of its files is unusable; the message names it and the fix."""


def is_image(name):
    """Whether a file name is one of the images read here (enhance.py scans an input folder with it too)."""
    # Hidden files are skipped too: macOS leaves "._name.png" resource forks beside copied images.
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _is_other_file(name):
    """A visible file that is not an image this reads (a .tif, a .heic, a notes.txt): skipped, but counted."""
    return not name.startswith(".") and not is_image(name)


def _refuse_broken_links(folder, names):
    """A link whose target is gone would pass for a skipped file (a class folder) or fail as an unreadable image."""
    for name in names:
        path = os.path.join(folder, name)
        if not name.startswith(".") and os.path.islink(path) and not os.path.exists(path):
            raise FolderError(f"{path} is a broken link (to {os.readlink(path)}); restore what it points to, or "
                              f"remove it")


def _images_under(folder, skipped):
    """Every image file under `folder` (a class folder), its subfolders included (hidden ones skipped, links
    followed), in sorted order; other visible files are appended to `skipped`.

    Raises:
      FolderError: a link back to a folder it is in (os.walk would follow it round and round, each lap's images
        read again) or into another class's folder (its images would be read twice, once with the wrong label), or
        a broken link.
    """
    found = []
    split_folder, class_folder = os.path.realpath(os.path.dirname(folder)), os.path.realpath(folder)
    for root, folders, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        above = os.path.relpath(root, folder).split(os.sep)
        ancestors = {os.path.realpath(os.path.join(folder, *above[:depth])) for depth in range(len(above))}
        if root != folder and (real in ancestors or os.path.commonpath([real, class_folder]) == real):
            raise FolderError(f"{root} is a link back to a folder it is in, so its images would be read over and "
                              f"over; remove the link")
        if os.path.commonpath([real, split_folder]) == split_folder and os.path.commonpath(
                [real, class_folder]) != class_folder:
            raise FolderError(f"{root} is a link into another class's folder ({real}), whose images would be read "
                              f"twice, once with this class's label; remove the link")
        _refuse_broken_links(root, folders + names)
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        found += [os.path.join(root, name) for name in sorted(names) if is_image(name)]
        skipped += [os.path.join(root, name) for name in sorted(names) if _is_other_file(name)]
    return found


def _split_files(data_dir, split, skipped):
    """(class names, [(path, class index)]) of one split folder, in sorted order; visible files that are no image
    this reads are appended to `skipped`."""
    folder = os.path.join(data_dir, split)
    if not os.path.isdir(folder):
        raise FolderError(f"--data_dir={data_dir} has no {split}/ folder; pass {LAYOUT_HINT}")
    # Sorted by their names in Unicode's composed form (NFC): macOS may write "é" as "e" and an accent (NFD), and
    # a folder copied from there must still name the same class as its twin in the other split.
    entries = sorted(os.listdir(folder), key=lambda name: unicodedata.normalize("NFC", name))
    _refuse_broken_links(folder, entries)
    classes = [name for name in entries if os.path.isdir(os.path.join(folder, name)) and not name.startswith(".")]
    loose = [name for name in entries if is_image(name) and os.path.isfile(os.path.join(folder, name))]
    skipped += [os.path.join(folder, name) for name in entries
                if _is_other_file(name) and not os.path.isdir(os.path.join(folder, name))]
    if classes and loose:
        raise FolderError(f"{folder} holds both images ({loose[0]}, ...) and class folders ({classes[0]}, ...); move "
                          f"the images into a class folder, or the class folders out")
    if not classes:
        return (), [(os.path.join(folder, name), 0) for name in loose]
    files = []
    for index, name in enumerate(classes):  # A class's images may sit in subfolders of its folder.
        images = _images_under(os.path.join(folder, name), skipped)
        if not images:  # Else its label would be trained on nothing and still be offered.
            raise FolderError(f"{os.path.join(folder, name)} holds no {', '.join(IMAGE_EXTENSIONS)} images; add "
                              f"some, or remove the class folder from train/ and test/")
        files += [(path, index) for path in images]
    return tuple(unicodedata.normalize("NFC", name) for name in classes), files


def scan(data_dir, warn=True):
    """The files of both splits and the class names (sorted subfolder names of train/, () when unlabelled).

    Other visible files (a .tif, a notes.txt) are skipped, and (with `warn`) a warning names how many and one.

    Returns:
      (class names, {split: [(path, class index)]}).

    Raises:
      FolderError: no train/ or test/, a split or class without images, or test classes that train does not have.
    """
    class_names, files, skipped = {}, {}, []
    for split in SPLITS:
        class_names[split], files[split] = _split_files(data_dir, split, skipped)
        if not files[split]:
            raise FolderError(f"{os.path.join(data_dir, split)} holds no {', '.join(IMAGE_EXTENSIONS)} images; "
                              f"pass {LAYOUT_HINT}")
    if class_names["test"] != class_names["train"]:
        # Labels are indices into the sorted class names, so both splits must name the same classes.
        raise FolderError(f"{data_dir}: test/ has the classes {list(class_names['test'])} but train/ has "
                          f"{list(class_names['train'])}; give both the same class folders")
    if skipped and warn:
        logging.warning("%s: skipped %d files that are no %s image (e.g. %s); convert any images among them to "
                        "PNG to use them", data_dir, len(skipped), ", ".join(IMAGE_EXTENSIONS), skipped[0])
    return class_names["train"], files


def exif_orientation(contents):
    """The EXIF orientation tag (1-8) of an image file's bytes, 1 (upright) when it has none."""
    # JPEG's APP1 block, PNG's eXIf chunk (before or after the pixels), ImageMagick's text chunk or WebP's EXIF chunk:
    # without one, spare opening the file again.
    if not any(marker in contents for marker in (b"Exif\x00\x00", b"eXIf", b"Raw profile type exif", b"EXIF")):
        return 1
    try:
        with Image.open(io.BytesIO(contents)) as image:
            return int(image.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except (OSError, ValueError, SyntaxError):  # Damaged EXIF: the pixels are still readable, as they are stored.
        return 1


def _is_webp(contents):
    return contents[:4] == b"RIFF" and contents[8:12] == b"WEBP"


def _is_animated_webp(contents):
    # The animation bit of the VP8X chunk's flags, where libwebp (and so TensorFlow) looks for it.
    return _is_webp(contents) and contents[12:16] == b"VP8X" and len(contents) > 20 and bool(contents[20] & 0x02)


def _decode_pixels(contents):
    """float32 `[H, W, C]` in [0, 1] of an image file's bytes, C as stored (1-4)."""
    if _is_animated_webp(contents):
        # TensorFlow 2.21 copies an animation's RGBA frame into an RGB-sized buffer when the file has no alpha flag:
        # a heap overflow that aborts the process. PIL's decoder (libwebp too) gives the first frame safely.
        with Image.open(io.BytesIO(contents)) as image:
            pixels = np.asarray(image.convert("RGBA" if image.mode == "RGBA" else "RGB"))
    elif _is_webp(contents):  # TensorFlow's WebP decoder takes no float dtype.
        pixels = tf.io.decode_image(contents, channels=0, expand_animations=False)
    else:  # A float dtype keeps a 16-bit PNG's precision.
        return tf.io.decode_image(contents, channels=0, dtype=tf.float32, expand_animations=False)
    return tf.image.convert_image_dtype(pixels, tf.float32)


def decode(path):
    """One PNG, JPEG, BMP, GIF or WebP file (gray, gray+alpha, RGB or RGBA; 8 or 16 bit; an animation's first frame)
    as float32 `[H, W, C]` in [0, 1], C 1 or 3, turned upright as its EXIF orientation says. A WebP or GIF whose
    channels are equal (to within WEBP_GRAY_SPREAD) is gray, C 1.

    Raises:
      FolderError: the file is not a readable image, naming it.
    """
    try:
        contents = tf.io.read_file(path).numpy()
        image = _decode_pixels(contents)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.PermissionDeniedError,
            OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        # The last four are PIL's (an animated WebP; the last, one of over twice its MAX_IMAGE_PIXELS). The
        # decoder's own words are what helps.
        raise FolderError(f"{path}: not a readable PNG, JPEG, BMP, GIF or WebP image ({cli.op_error_reason(e)}); "
                          f"replace or remove it") from None
    orientation = exif_orientation(contents)
    if orientation in UPRIGHT:
        image = tf.constant(np.ascontiguousarray(UPRIGHT[orientation](image.numpy())))
    if image.shape[-1] in (2, 4):
        # Over white, as image viewers show transparency: dark strokes on a transparent canvas stay visible; the
        # colour under a transparent pixel means nothing.
        color, alpha = image[..., :-1], image[..., -1:]
        image = color * alpha + (1.0 - alpha)
    # After the transparency: the colour libwebp leaves under a transparent pixel need not be gray.
    if (_is_webp(contents) or contents[:4] == b"GIF8") and image.shape[-1] == 3:
        if tf.reduce_max(tf.reduce_max(image, -1) - tf.reduce_min(image, -1)) <= WEBP_GRAY_SPREAD:
            image = tf.reduce_sum(image * LUMA_WEIGHTS, axis=-1, keepdims=True)
    return image


def _decode(path):
    return np.round(decode(path).numpy() * 255.0).astype(np.uint8)


def fit(image, height, width):
    """uint8 `[h, w, C]` -> `[height, width, C]`: its centre cropped to the target's shape, then resized (bilinear,
    antialiased when it shrinks), as image datasets such as CelebA are brought to one size."""
    h, w = image.shape[:2]
    crop_h, crop_w = max(1, min(h, round(w * height / width))), max(1, min(w, round(h * width / height)))
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    cropped = tf.constant(image[top:top + crop_h, left:left + crop_w], tf.float32)
    resized = tf.image.resize(cropped, (height, width), antialias=True)
    return np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)


def load(data_dir, image_size=(), channels=1):
    """Reads both splits into memory in the fixed shuffled order of ORDER_SEED: images of one size, or each brought
    to `image_size` (height, width) by `fit`; in colour when any image is (a gray one is repeated into three
    channels, losing nothing).

    `channels`: at least this many (3: a model trained on the folder in colour reads it in colour, as tfvae before
    2026-12-05 read gray GIFs, with three equal channels).

    Returns:
      ({split: (uint8 images `[n, H, W, C]`, int32 labels `[n]`)}, class names).

    Raises:
      FolderError: a layout problem (`scan`), an unreadable file, or an image of another size.
    """
    class_names, files = scan(data_dir)
    decoded = {}
    for split in SPLITS:
        order = np.random.default_rng(ORDER_SEED).permutation(len(files[split]))
        files[split] = [files[split][i] for i in order]
        # Each brought to size as it is read: the full-size images of a photo folder need not fit in memory at once.
        decoded[split] = [fit(_decode(path), *image_size) if image_size else _decode(path) for path, _ in files[split]]
    first_path, (height, width) = files["train"][0][0], decoded["train"][0].shape[:2]
    channels = max(channels, *(image.shape[-1] for split in SPLITS for image in decoded[split]))
    splits = {}
    for split in SPLITS:
        images = np.empty((len(files[split]), height, width, channels), np.uint8)
        for i, ((path, _), image) in enumerate(zip(files[split], decoded[split])):
            if image.shape[:2] != (height, width):
                raise FolderError(f"{path}: image is {image.shape[0]}x{image.shape[1]}, but {first_path} is "
                                  f"{height}x{width}; pass --image_size=HEIGHT,WIDTH to bring every image to one "
                                  f"size, or resize them yourself")
            images[i] = image if image.shape[-1] == channels else np.repeat(image, channels, axis=-1)
        splits[split] = images, np.array([label for _, label in files[split]], np.int32)
    return splits, class_names
