"""Using an exported SavedModel alone: sample grids and reconstructions, as image arrays."""

import numpy as np
import tensorflow as tf

from tfvae import data, visualization


def signature_as_one_op(signature):
    """`signature(**inputs)` run as one eager `StatefulPartitionedCall` op: the same graph, checks and outputs.

    TensorFlow hands an eager function call to its inter-op thread pool and waits for it; an eager op that calls the
    function runs on the calling thread (TensorFlow wraps a single op in a function it may execute synchronously).
    A batch-1 `reconstruct` of the tutorial network took about half the signature call's time, and 0.57-0.69x TF1's
    `Session.run` (`scripts/bench_infer.py`, docs/performance.md). The README shows a shorter copy without tfvae.

    The op's own errors name inputs by position, so the inputs are checked here first, by name: the keywords, each
    input's shape and type, and an integer input (a label) given as floats or beyond int32, which TensorFlow's cast
    would truncate or wrap into range (3.7 -> 3, 2**32 + 3 -> 3) before the export's range check sees it.
    """
    specs = signature.structured_input_signature[1]
    names = sorted(specs)  # Keyword inputs are flattened in key order, as the function takes them.
    captured = list(signature.captured_inputs)
    output_types = [output.dtype for output in signature.outputs]
    output_names = sorted(signature.structured_outputs)  # A signature returns a dict, its outputs in key order.
    call_op = tf.raw_ops.StatefulPartitionedCall
    takes = ", ".join(f"{name} {specs[name].dtype.name} {specs[name].shape}" for name in names)

    def as_input(name, value):
        spec = specs[name]
        # A tensor of the right type goes in as it is: converting it again costs ~10% of a batch-1 call.
        if not (isinstance(value, tf.Tensor) and value.dtype == spec.dtype):
            if spec.dtype.is_integer and not isinstance(value, tf.Tensor):
                array = np.asarray(value)
                info = np.iinfo(spec.dtype.as_numpy_dtype)
                if array.dtype.kind not in "iu" or (array.size and not info.min <= array.min() <= array.max()
                                                     <= info.max):
                    raise ValueError(f"{name} must hold {spec.dtype.name} integers, not {array.dtype.name} values "
                                     f"like {array.ravel()[:3].tolist()}")
            try:
                value = tf.convert_to_tensor(value, spec.dtype)
            except (TypeError, ValueError) as e:
                raise type(e)(f"{name}: {e}") from None
        if not spec.shape.is_compatible_with(value.shape):
            raise ValueError(f"{name} has shape {value.shape}; this signature takes {takes}")
        return value

    def call(**inputs):
        if inputs.keys() != specs.keys():
            raise TypeError(f"this signature takes {takes}; got {', '.join(sorted(inputs)) or 'no inputs'}")
        args = [as_input(name, inputs[name]) for name in names]
        return dict(zip(output_names, call_op(args=args + captured, Tout=output_types, f=signature)))

    return call


def parse_labels(label, num_classes, rows, cols, class_names=()):
    """The label of every grid cell from `--label`: None, a class number or name (`class_names`, an image folder's),
    or "all" (one row per class).

    Returns:
      (labels int32 `[rows*cols]` or None, rows): "all" sets rows to num_classes.
    """
    if label is None:
        if num_classes:
            raise ValueError(f"this model is conditional; pass --label=0..{num_classes - 1} or --label=all")
        return None, rows
    if not num_classes:
        raise ValueError("--label is only for conditional models (cvae); drop it")
    if label == "all":
        return np.repeat(np.arange(num_classes, dtype=np.int32), cols), num_classes
    if label in class_names:
        label = str(class_names.index(label))
    if not label.isdigit() or not 0 <= int(label) < num_classes:
        named = f": {', '.join(f'{i} {name}' for i, name in enumerate(class_names))}" if class_names else ""
        raise ValueError(f"--label={label} is not a class of this model ({num_classes} classes{named}); pass "
                         f"--label=0..{num_classes - 1}{', a class name' if class_names else ''} or --label=all")
    return np.full(rows * cols, int(label), np.int32), rows


def decode_samples(saved, metadata, rows, cols, seed=0, labels=None):
    """Decodes z ~ N(0, I) (seeded) through the `decode` signature. Returns `[rows*cols, H, W, C]` in [0, 1]."""
    return np.concatenate(list(decoded_sample_chunks(saved, metadata, rows * cols, seed, labels)))


def draw_samples(saved, metadata, path, rows, cols, seed=0, labels=None):
    """Images x ~ p(x|z), z ~ N(0, I), through the `sample` signature of the export at `path`: z drawn as
    `decode_samples` draws it, the pixels by `seed` too. Returns `[rows*cols, H, W, C]` in [0, 1]."""
    if "sample" not in saved.signatures:
        if metadata.get("likelihood") == "sse":
            raise ValueError("this model's likelihood, sse (the TF1 tutorial's squared error), is no distribution to "
                             "draw pixels from; drop --pixels=sample")
        raise ValueError(f"this export has no `sample` signature (it predates it); write it again with "
                         f"`python scripts/export.py --saved_model={path}`")
    z = np.random.default_rng(seed).standard_normal((rows * cols, metadata["latent_dim"])).astype(np.float32)
    inputs = {"z": tf.constant(z), "seed": tf.constant(seed, tf.int64)}
    if labels is not None:
        inputs["label"] = tf.constant(labels)
    return visualization.as_images(saved.signatures["sample"](**inputs)["x_sample"].numpy(), metadata["image_shape"])


# Samples decoded per call: the images of a chunk are all a caller holds at once (31 MB of MNIST).
DECODE_CHUNK = 10000


def decoded_sample_chunks(saved, metadata, count, seed=0, labels=None):
    """`decode_samples` of `count` samples, yielded DECODE_CHUNK at a time: the same z, drawn at once, and so the
    same images."""
    z = np.random.default_rng(seed).standard_normal((count, metadata["latent_dim"])).astype(np.float32)
    for start in range(0, count, DECODE_CHUNK):
        inputs = {"z": tf.constant(z[start:start + DECODE_CHUNK])}
        if labels is not None:
            inputs["label"] = tf.constant(labels[start:start + DECODE_CHUNK])
        x_hat = saved.signatures["decode"](**inputs)["x_hat"]
        yield visualization.as_images(x_hat.numpy(), metadata["image_shape"])


def _given(metadata, z):
    """What p(x|...) is conditioned on: z, and a conditional model's label y."""
    return f"{z}, y" if metadata.get("num_classes") else z


def drawn_images_are(metadata, z="z"):
    """What a drawn image (`x_sample`) is, for titles."""
    given = _given(metadata, z)
    if metadata.get("likelihood") == "autoregressive_bernoulli":
        return f"x ~ p(x|{given}) drawn pixel by pixel"
    if metadata.get("likelihood") == "gaussian":
        return f"x ~ p(x|{given}) clipped to [0, 1]"
    return f"x ~ p(x|{given})"


def decoded_images_are(metadata, z="z"):
    """What a decoded image (`x_hat`) is, for titles: the mean of p(x|z), or for the autoregressive likelihood,
    whose mean has no closed form, its raster-order mean-field image."""
    if metadata.get("likelihood") == "autoregressive_bernoulli":
        return f"mean-field image of p(x|{_given(metadata, z)})"
    return f"mean of p(x|{_given(metadata, z)})"


def test_images_are(metadata, seed):
    """How test images prepared as in training look, for titles: "test images" or "binarized test images (seed S)"."""
    return "test images" if metadata.get("binarize", "none") == "none" else f"binarized test images (seed {seed})"


def reconstruct_test_images(saved, metadata, data_dir, count, seed=0):
    """The first `count` test images, prepared as in training, and their reconstructions.

    Returns:
      (originals, reconstructions), each `[count, H, W, C]` in [0, 1].
    """
    arrays = data.load_model_arrays(metadata, data_dir, validation_size=0)
    images, labels = arrays.test_images[:count], arrays.test_labels[:count]
    if metadata.get("binarize", "none") != "none":
        # One seeded draw, as plot.py and evaluate.py take: the same binary digits for the same seed everywhere.
        images = data.binarize_static(images, seed)
    flat = len(metadata["input_shape"]) == 1
    batch = next(iter(data.make_pipeline(images, labels, count, seed=seed, flatten=flat)))
    inputs = {"input": batch["input"]}
    if metadata.get("num_classes"):
        inputs["label"] = batch["label"]
    x_hat = saved.signatures["reconstruct"](**inputs)["x_hat"]
    image_shape = metadata["image_shape"]
    return visualization.as_images(batch["target"].numpy(), image_shape), visualization.as_images(
        x_hat.numpy(), image_shape)
