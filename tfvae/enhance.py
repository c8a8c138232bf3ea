"""Restoring image files through an exported VAE's `reconstruct` signature: read, fit to the model, restore, write."""

import collections
import os

import numpy as np
import tensorflow as tf

from tfvae import artifacts, export, image_folder
from tfvae.image_folder import IMAGE_EXTENSIONS, is_image  # What a folder of inputs is scanned for.

# Outputs are PNG or JPEG (config.IMAGE_SUFFIXES).
OUTPUT_ENCODERS = {".png": tf.io.encode_png, ".jpg": tf.io.encode_jpeg, ".jpeg": tf.io.encode_jpeg}
RESTORE_BATCH = 256


class EnhanceError(ValueError):
    """An input image or output path is unusable; the message names the file and the fix."""


def plan_outputs(input_path, output_path):
    """Pairs each input image with the file its restoration goes to, before any work is done.

    Args:
      input_path: an image file, or a folder whose IMAGE_EXTENSIONS files are all restored.
      output_path: for a file: a .png/.jpg/.jpeg file or an existing folder; for a folder: a folder (created).

    Returns:
      A list of (input file, output file), sorted by input name.
    """
    if os.path.isdir(input_path):
        # As an image folder is read: hidden files (macOS's "._name.png" resource forks) are skipped.
        names = sorted(name for name in os.listdir(input_path)
                       if is_image(name) and os.path.isfile(os.path.join(input_path, name)))
        if not names:
            raise EnhanceError(f"--input={input_path}: no {'/'.join(IMAGE_EXTENSIONS)} files in this folder")
        if os.path.exists(output_path) and not os.path.isdir(output_path):
            raise EnhanceError(f"--output={output_path} is a file; with an input folder pass an output folder")
        pairs = [(os.path.join(input_path, n), os.path.join(output_path, os.path.splitext(n)[0] + ".png"))
                 for n in names]
        counts = collections.Counter(out for _, out in pairs)
        clash = next((out for out, count in counts.items() if count > 1), None)
        if clash:
            raise EnhanceError(f"--input={input_path}: several images share the name of {os.path.basename(clash)} "
                               f"(e.g. a.png and a.jpg); rename one of them")
    elif os.path.isfile(input_path):
        if os.path.isdir(output_path):
            name = os.path.splitext(os.path.basename(input_path))[0] + ".png"
            pairs = [(input_path, os.path.join(output_path, name))]
        elif os.path.splitext(output_path)[1].lower() in OUTPUT_ENCODERS:
            pairs = [(input_path, output_path)]
        else:
            raise EnhanceError(f"--output={output_path}: end it in .png, .jpg or .jpeg, or pass an existing folder")
    else:
        raise EnhanceError(f"--input={input_path}: no such file or folder")
    for source, destination in pairs:
        if os.path.abspath(source) == os.path.abspath(destination):
            raise EnhanceError(f"--output would overwrite the input {source}; choose another --output")
        if os.path.isdir(destination):
            raise EnhanceError(f"the restoration of {source} would go to {destination}, which is a folder; remove "
                               f"it or choose another --output")
    return pairs


def _to_channels(image, channels):
    if image.shape[-1] == channels:
        return image
    return tf.image.grayscale_to_rgb(image) if channels == 3 else tf.image.rgb_to_grayscale(image)


def read_image(path, image_shape, resize=False):
    """Reads a PNG, JPEG, BMP, GIF or WebP (gray, gray+alpha, RGB or RGBA; 8 or 16 bit) as the model's input image.

    Args:
      path: image file.
      image_shape: the model's (H, W, C); channels are converted (RGB <-> gray, transparency shown over white).
      resize: scale to fit (H, W), keeping the image's shape, when the size differs; otherwise such an image is an
        error.

    Returns:
      float32 `[H, W, C]` in [0, 1].
    """
    height, width, channels = image_shape
    try:
        image = image_folder.decode(path)  # Transparency shown over white (and --invert makes it light on dark).
    except image_folder.FolderError as e:
        raise EnhanceError(str(e)) from None
    image = _to_channels(image, channels)
    if tuple(image.shape[:2]) != (height, width):
        if not resize:
            raise EnhanceError(f"{path}: image is {image.shape[0]}x{image.shape[1]}, the model expects "
                               f"{height}x{width}x{channels}; pass --resize to scale it")
        image = _fit(image, height, width)
    return tf.clip_by_value(image, 0.0, 1.0).numpy()


def _fit(image, height, width):
    """Scales `image` to fit in (height, width) keeping its shape, centred on its own background: the median of its
    border, so a wide or tall picture's digit is not squeezed, on dark pages and light ones alike."""
    scale = min(height / image.shape[0], width / image.shape[1])
    size = [max(1, min(height, round(image.shape[0] * scale))), max(1, min(width, round(image.shape[1] * scale)))]
    scaled = tf.image.resize(image, size, method="bilinear", antialias=True)
    pixels = image.numpy()
    background = np.median(np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]), axis=0)
    top, left = (height - size[0]) // 2, (width - size[1]) // 2
    padding = [[top, height - size[0] - top], [left, width - size[1] - left], [0, 0]]
    return tf.pad(scaled - background, padding) + background


def untrained_for_restoration(metadata):
    """A note when the export was trained without --corruption: it reproduces clean images and may pass a
    corruption through, or make it worse; None for a restoration model."""
    if metadata.get("corruption", "none") != "none":
        return None
    return (f"note: {export.model_name(metadata)} was trained without --corruption, to reconstruct clean images; "
            f"it may not restore corrupted ones (a model trained with --corruption, as saved_models/denoise_mnist, "
            f"does; evaluate_restoration.py measures either)")


def restore_images(saved, metadata, images):
    """Runs images through the SavedModel's `reconstruct` signature (x_hat of z_mean, as `VAE.call`).

    Args:
      saved: a loaded tfvae SavedModel.
      metadata: its tfvae.json.
      images: float32 `[n, H, W, C]` in [0, 1], shaped as metadata["image_shape"].

    Returns:
      float32 `[n, H, W, C]` in [0, 1].
    """
    if metadata.get("num_classes"):
        raise EnhanceError(f"{metadata['model']} is label-conditioned; restoring needs an unconditional model, "
                           f"e.g. one trained with --corruption as saved_models/denoise_mnist")
    reconstruct = saved.signatures["reconstruct"]
    images = np.asarray(images, np.float32)
    restored = []
    for start in range(0, len(images), RESTORE_BATCH):
        batch = images[start:start + RESTORE_BATCH].reshape((-1, *metadata["input_shape"]))
        restored.append(reconstruct(input=tf.constant(batch))["x_hat"].numpy())
    return np.clip(np.concatenate(restored).reshape(images.shape), 0.0, 1.0)


def image_writer(path, image):
    """A `write_fn(tmp_path)` for artifacts' writers: float `[H, W, C]` in [0, 1] as PNG or JPEG (by the extension
    of `path`), encoded now."""
    encode = OUTPUT_ENCODERS[os.path.splitext(path)[1].lower()]
    encoded = encode(tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0), tf.uint8)).numpy()

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(encoded)

    return write


# Datasets of light strokes on a dark background: a model of one turns a dark-on-light image into another digit.
LIGHT_ON_DARK_DATASETS = ("mnist", "fashion_mnist")


def background_note(metadata, sources, fed_images, invert):
    """A note when images as fed to a light-on-dark model (after --invert, if given) are mostly light: most likely
    dark-on-light images without --invert, or light-on-dark ones with it; None otherwise."""
    if metadata.get("dataset") not in LIGHT_ON_DARK_DATASETS:
        return None
    means = fed_images.reshape(len(fed_images), -1).mean(axis=1)
    light = [(source, mean) for source, mean in zip(sources, means) if mean > 0.5]
    if not light:
        return None
    named = ", ".join(f"{os.path.basename(source)} {mean:.2f}" for source, mean in light[:3])
    more = f" and {len(light) - 3} more" if len(light) > 3 else ""
    fix = "drop --invert (they are light on dark already)" if invert else "pass --invert (for dark on light)"
    return (f"note: {len(light)} of {len(sources)} images are mostly light as the model gets them (mean gray level "
            f"{named}{more}), while it learned light strokes on a dark background ({metadata['dataset']}); if a "
            f"result looks wrong, {fix}")


def enhance_files(saved_model, input_path, output_path, resize=False, invert=False):
    """The job of `scripts/enhance.py`: restores every input image; nothing is written unless all are readable.

    Args:
      saved_model: a tfvae SavedModel folder.
      input_path: an image file or a folder of them.
      output_path: see `plan_outputs`.
      resize: scale images to the model's size instead of refusing them.
      invert: use 1 - x in and out (dark-on-light images for a light-on-dark model).

    Returns:
      (the list of (input file, output file) written, a note on the images' background or None).
    """
    metadata = export.load_metadata(saved_model)
    pairs = plan_outputs(input_path, output_path)
    image_shape = tuple(metadata["image_shape"])
    images = np.stack([read_image(source, image_shape, resize) for source, _ in pairs])
    saved, _ = export.load_saved_model(saved_model)
    if invert:
        images = 1.0 - images
    note = background_note(metadata, [source for source, _ in pairs], images, invert)
    restored = restore_images(saved, metadata, images)
    if invert:
        restored = 1.0 - restored
    # All or none: a folder of inputs is never left half restored.
    artifacts.write_all_or_none([(destination, image_writer(destination, image))
                                 for (_, destination), image in zip(pairs, restored)])
    return pairs, note
