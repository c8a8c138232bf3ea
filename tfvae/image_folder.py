"""A folder of image files as a dataset (`--dataset=image_folder`): DATA_DIR/train/ and DATA_DIR/test/, each holding
the images themselves or one subfolder of images per class, as Keras' `image_dataset_from_directory` and
torchvision's `ImageFolder` lay them out."""

import os

import numpy as np
import tensorflow as tf

from tfvae import cli

SPLITS = ("train", "test")
# Files are read in one fixed shuffled order: the validation split (the first training images) and a plot's first
# test images then mix the classes, where sorted class folders would give them one class.
ORDER_SEED = 0
# What tf.io.decode_image reads (a GIF's first frame).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
LAYOUT_HINT = ("a folder holding train/ and test/, each of images or of one subfolder of images per class "
               "(README: Data)")


class FolderError(ValueError):
    """The folder's layout or one of its files is unusable; the message names it and the fix."""


def _is_image(path):
    return os.path.isfile(path) and path.lower().endswith(IMAGE_EXTENSIONS)


def _split_files(data_dir, split):
    """(class names, [(path, class index)]) of one split folder, in sorted order."""
    folder = os.path.join(data_dir, split)
    if not os.path.isdir(folder):
        raise FolderError(f"--data_dir={data_dir} has no {split}/ folder; pass {LAYOUT_HINT}")
    entries = sorted(os.listdir(folder))
    classes = [name for name in entries if os.path.isdir(os.path.join(folder, name)) and not name.startswith(".")]
    loose = [name for name in entries if _is_image(os.path.join(folder, name))]
    if classes and loose:
        raise FolderError(f"{folder} holds both images ({loose[0]}, ...) and class folders ({classes[0]}, ...); move "
                          f"the images into a class folder, or the class folders out")
    if not classes:
        return (), [(os.path.join(folder, name), 0) for name in loose]
    files = [(os.path.join(folder, name, image), index) for index, name in enumerate(classes)
             for image in sorted(os.listdir(os.path.join(folder, name)))
             if _is_image(os.path.join(folder, name, image))]
    return tuple(classes), files


def scan(data_dir):
    """The files of both splits and the class names (sorted subfolder names of train/, () when unlabelled).

    Returns:
      (class names, {split: [(path, class index)]}).

    Raises:
      FolderError: no train/ or test/, a split without images, or test classes that train does not have.
    """
    class_names, files = {}, {}
    for split in SPLITS:
        class_names[split], files[split] = _split_files(data_dir, split)
        if not files[split]:
            raise FolderError(f"{os.path.join(data_dir, split)} holds no {', '.join(IMAGE_EXTENSIONS)} images; "
                              f"pass {LAYOUT_HINT}")
    if class_names["test"] != class_names["train"]:
        # Labels are indices into the sorted class names, so both splits must name the same classes.
        raise FolderError(f"{data_dir}: test/ has the classes {list(class_names['test'])} but train/ has "
                          f"{list(class_names['train'])}; give both the same class folders")
    return class_names["train"], files


def _decode(path):
    """One image file as uint8 `[H, W, C]`, C 1 or 3: transparency shown over white, as image viewers show it."""
    try:
        image = tf.io.decode_image(tf.io.read_file(path), channels=0, dtype=tf.float32, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.PermissionDeniedError) as e:
        raise FolderError(f"{path}: not a readable PNG, JPEG, BMP or GIF image ({cli.op_error_reason(e)}); replace "
                          f"or remove it") from None
    if image.shape[-1] in (2, 4):
        image = image[..., :-1] * image[..., -1:] + (1.0 - image[..., -1:])
    return np.round(image.numpy() * 255.0).astype(np.uint8)


def image_shape(data_dir):
    """(H, W, C) of the dataset: the size and channels (1 for gray, 3 for colour) of train/'s first image."""
    _, files = scan(data_dir)
    return tuple(_decode(files["train"][0][0]).shape)


def load(data_dir):
    """Reads both splits into memory, each image in train/'s first image's size and channels, in the fixed shuffled
    order of ORDER_SEED.

    Returns:
      ({split: (uint8 images `[n, H, W, C]`, int32 labels `[n]`)}, class names).

    Raises:
      FolderError: a layout problem (`scan`), an unreadable file, or an image of another size.
    """
    class_names, files = scan(data_dir)
    first_path = files["train"][0][0]
    height, width, channels = _decode(first_path).shape
    splits = {}
    for split in SPLITS:
        order = np.random.default_rng(ORDER_SEED).permutation(len(files[split]))
        files[split] = [files[split][i] for i in order]
        images = np.empty((len(files[split]), height, width, channels), np.uint8)
        for i, (path, _) in enumerate(files[split]):
            image = _decode(path)
            if image.shape[:2] != (height, width):
                raise FolderError(f"{path}: image is {image.shape[0]}x{image.shape[1]}, but {first_path} is "
                                  f"{height}x{width}; give every image of the folder one size")
            if image.shape[-1] != channels:  # A gray image among colour ones, or back.
                convert = tf.image.grayscale_to_rgb if channels == 3 else tf.image.rgb_to_grayscale
                image = convert(tf.constant(image)).numpy()
            images[i] = image
        splits[split] = images, np.array([label for _, label in files[split]], np.int32)
    return splits, class_names
