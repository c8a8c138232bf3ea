"""A trained VAE measured in nats: negative ELBO, its terms, importance-sampled NLL, bits/dim, active units."""

import math
import sys
import time

import numpy as np
import tensorflow as tf

from tfvae import config, data, losses
from tfvae.models import likelihoods
from tfvae.restore import input_size

# The TF1 read_data_sets default, for exports that do not record their run's --validation_size.
DEFAULT_VALIDATION_SIZE = 5000


def resolve_binarize(metadata, binarize="auto"):
    """The test-data protocol: "auto" is dynamic binarization for Bernoulli models and for models trained on binary
    images, gray levels otherwise."""
    if binarize != "auto":
        return binarize
    binary = (metadata.get("likelihood") in config.BINARY_LIKELIHOODS
              or metadata.get("binarize", "none") in ("dynamic", "static"))
    return "dynamic" if binary else "none"


def load_split(metadata, data_dir, split, binarize, seed, num_examples=0, num_examples_flag="num_examples",
               at_random=False):
    """The images of `split` prepared for `metadata`'s model, as arrays; `num_examples_flag` names the flag that
    asked for `num_examples` in the error when the split is smaller.

    Dynamic and static binarization both draw one Bernoulli sample of every gray level of the whole split with
    numpy's seeded generator, so each binary image depends on `seed` only (not on batch size or on which
    examples are taken): the usual "dynamically binarized MNIST" test protocol.

    Args:
      at_random: take `num_examples` chosen at random with `seed` (`data.seeded_subset`), not the first ones.

    Returns:
      (x float32 `[n, *input_shape]` in [0, 1], labels int32 `[n]`, the number of examples in the split).
    """
    validation_size = int(metadata.get("config", {}).get("validation_size", DEFAULT_VALIDATION_SIZE))
    if split == "validation" and validation_size == 0:
        raise ValueError("this model was trained with --validation_size=0, so it has no validation split; "
                         "pass --split=test")
    arrays = data.load_model_arrays(metadata, data_dir, validation_size)
    images, labels = arrays.split(split)
    split_size = len(images)
    # Else it would measure fewer examples than asked, in a file named for the number asked.
    refuse_more_than(split_size, num_examples, num_examples_flag, split)
    if binarize in ("dynamic", "static"):
        images = data.binarize_static(images, seed)
    if num_examples:
        chosen = data.seeded_subset(num_examples, len(images), seed) if at_random else np.arange(num_examples)
        images, labels = images[chosen], labels[chosen]
    x = images.astype(np.float32) / 255.0
    return x.reshape((len(x), *metadata["input_shape"])), labels, split_size


def refuse_more_than(split_size, count, count_flag, split="test"):
    """Raises ValueError naming `--count_flag` when it asks for more than the split's `split_size` examples."""
    if count > split_size:
        raise ValueError(f"--{count_flag}={count} is more than the {split_size:,} examples of the {split} split; "
                         f"pass at most {split_size}" + (", or 0 for all" if count_flag == "num_examples" else ""))


def likelihood_is_density(metadata, binarize):
    """Whether the model's -log p(x|z) of data prepared by `binarize` is in nats of a normalised density."""
    if metadata.get("likelihood") in likelihoods.LIKELIHOODS:
        return likelihoods.is_density(metadata["likelihood"], binarize)
    return bool(metadata.get("likelihood_is_density", True))


def describe_protocol(metadata, split, num_examples, binarize, seed, num_importance_samples, split_size=None):
    """One sentence per number family saying how it was measured and what it may be compared with;
    `split_size`, when more than `num_examples`: they were chosen at random with `seed`."""
    levels = "gray levels" if metadata.get("image_shape", [1])[-1] == 1 else "pixel values"
    examples = (f"{num_examples} of its {split_size:,} examples chosen at random with seed {seed}"
                if split_size and split_size > num_examples else f"{num_examples} examples")
    data_text = {
        "dynamic": f"{metadata['dataset']} {split}, {examples}, binarized by one Bernoulli sample of each gray "
                   f"level with seed {seed} (dynamically binarized protocol)",
        "static": f"{metadata['dataset']} {split}, {examples}, binarized by one Bernoulli sample with seed {seed}",
        "none": f"{metadata['dataset']} {split}, {examples}, {levels} scaled to [0, 1]",
    }[binarize]
    nll_text = (f"-log p(x) by importance sampling, log-mean-exp over K={num_importance_samples} samples of "
                f"q(z|x) (Burda et al. 2015), nats per example; ± is the standard error over examples")
    classes = metadata.get("num_classes")
    if classes:
        nll_text = (f"-log p(x|y) given each example's true label y (a conditional likelihood: at most "
                    f"log {classes} = {math.log(classes):.2f} nats below the model's -log p(x) with uniform "
                    f"labels, so not comparable with unconditional models' -log p(x)), by importance sampling, "
                    f"log-mean-exp over K={num_importance_samples} samples of q(z|x,y), nats per example; ± is the "
                    f"standard error over examples")
    is_density = likelihood_is_density(metadata, binarize)
    if not is_density and metadata.get("likelihood") in config.BINARY_LIKELIHOODS:
        nll_text = (f"NOT A DENSITY: the {metadata['likelihood']} likelihood is normalised over binary pixels only; "
                    f"of gray levels its -log p(x|z) is a cross-entropy, so 'nll' and 'bits_per_dim' are the same "
                    f"K={num_importance_samples} estimator applied to it; compare them only between gray-level "
                    f"evaluations (binarized data, the default for this model, gives nats)")
    elif not is_density:
        nll_text = (f"NOT A DENSITY: the {metadata.get('likelihood')} term is not a normalised log-likelihood, "
                    f"so 'nll' and 'bits_per_dim' are the same K={num_importance_samples} estimator applied to "
                    f"exp(-{metadata.get('likelihood')}); compare them only between runs of that likelihood")
    elif metadata.get("likelihood") not in config.BINARY_LIKELIHOODS:
        # A Gaussian's: with its -0.5 log(2 pi sigma^2) per number, so it can be negative, and on binary images too.
        nll_text += (f"; a continuous density of [0, 1]-scaled {levels} (with its normalising constant, so it can be "
                     f"negative), not comparable with a Bernoulli's nats nor with discrete (8-bit) bits/dim")
        if binarize != "none":
            nll_text += "; here of binary images, so of the density's values at 0 and 1 alone"
        trained_on_gray = metadata.get("binarize", "none") == "none"
        if trained_on_gray != (binarize == "none"):
            nll_text += (f"; the model was trained on {'gray levels' if trained_on_gray else 'binary images'}, "
                         f"evaluated on {'binary images' if trained_on_gray else 'gray levels'}")
    elif metadata.get("binarize") == "none":
        nll_text += "; the model was trained on gray levels, evaluated on binary images"
    if metadata.get("corruption", "none") != "none":
        # A restoration model's encoder learned q(z|corrupted x): fed the clean x here, as every VAE is measured.
        data_text += (f"; clean inputs, although this model was trained to restore {metadata['corruption']}-"
                      f"corrupted ones (evaluate_restoration.py measures that)")
    return {
        "data": data_text,
        "elbo": "negative ELBO = reconstruction + KL per example; reconstruction = -log p(x|z) averaged over the "
                "K samples of q(z|x), KL(q(z|x) || N(0, I)) in closed form",
        "nll": nll_text,
        "bits_per_dim": f"nll / (D ln 2), D = {input_size(metadata)} numbers per example",
        "active_units": f"latent dimensions u with Var_x(E_q[z_u]) > {losses.ACTIVE_UNIT_THRESHOLD} "
                        f"(Burda et al. 2015)",
    }


class Progress:
    """A one-line progress bar on a terminal; in logs (not a TTY), a plain line every `log_seconds`."""

    def __init__(self, total, unit, log_seconds=30.0, stream=None):
        self.total, self.unit, self.log_seconds = total, unit, log_seconds
        self.stream = stream or sys.stdout
        self.interactive = self.stream.isatty()
        self.start = self.last = time.perf_counter()

    def update(self, done):
        now = time.perf_counter()
        finished = done >= self.total
        if not (self.interactive or finished or now - self.last >= self.log_seconds):
            return
        self.last = now
        elapsed = now - self.start
        eta = elapsed / done * (self.total - done) if done else 0.0
        filled = int(30 * done / self.total)
        line = (f"[{'=' * filled}{'.' * (30 - filled)}] {done}/{self.total} {self.unit}, "
                f"{elapsed:.0f} s elapsed, {eta:.0f} s left")
        end = "\n" if finished or not self.interactive else ""
        print(("\r" if self.interactive else "") + line, end=end, file=self.stream, flush=True)


def make_log_weights_fn(loaded):
    """A tf.function giving, for a batch and S samples z_s ~ q(z|x), log p(x|z_s) and the importance log-weights.

    The returned function maps (x `[B, ...]`, label `[B]`, z_mean `[B, L]`, z_logvar `[B, L]`, standard normal
    noise eps `[S, B, L]`) to (log_px_z `[S, B]`, log_w `[S, B]`) with log_w = log p(x|z) + log p(z) - log q(z|x).
    """

    @tf.function(reduce_retracing=True)
    def log_weights(x, label, z_mean, z_logvar, eps):
        z = z_mean + tf.exp(0.5 * z_logvar) * eps  # [S, B, L]
        log_q = losses.log_normal(z, z_mean, z_logvar)
        log_prior = losses.log_standard_normal(z)
        # All S samples of every example in one decoder call, so each call sees many rows.
        log_px_z = tf.cast(loaded.log_likelihood_samples(x, z, label), tf.float32)
        return log_px_z, log_px_z + log_prior - log_q

    return log_weights


@tf.function(reduce_retracing=True)
def example_noise(first_index, count, num_samples, latent_dim, seed):
    """Standard normal noise `[count, num_samples, latent_dim]` for examples first_index, ..., each drawn from a seed
    of its own ([seed, example index]), so an example's samples do not depend on how examples are batched."""
    indices = first_index + tf.range(count)
    return tf.map_fn(lambda i: tf.random.stateless_normal(tf.stack([num_samples, latent_dim]), tf.stack([seed, i])),
                     indices, fn_output_signature=tf.float32)


def add_log_sum_exp(log_sum, log_w):
    """Returns log(exp(log_sum) + sum over axis 0 of exp(log_w)), for a log-sum-exp accumulated chunk by chunk.

    The max is subtracted before exponentiating: weights of a 784-pixel image are ~exp(-100), below float range.
    """
    peak = log_w.max(axis=0)
    return np.logaddexp(log_sum, peak + np.log(np.exp(log_w - peak).sum(axis=0)))


def evaluate(loaded, x, labels, num_importance_samples=1000, batch_size=100, samples_per_batch=100, seed=0,
             progress=True):
    """Measures `loaded` on examples `x`.

    Memory is bounded by batch_size * samples_per_batch decoded examples at a time (plus the batch's noise,
    batch_size * K * latent_dim floats): the log-sum-exp over the K samples is accumulated chunk by chunk
    (np.logaddexp, in float64), never holding all K weights.

    Args:
      loaded: a `restore.LoadedModel`.
      x: float32 `[n, *input_shape]` in [0, 1], prepared as the protocol says (see `load_split`).
      labels: int32 `[n]` (used by conditional models only).
      num_importance_samples: K.
      batch_size: examples per batch.
      samples_per_batch: samples of q(z|x) per decoder call.
      seed: seeds the samples of q(z|x).
      progress: show a progress bar (on stdout).

    Returns:
      Dict of per-example means in nats (for densities): "negative_elbo", "reconstruction", "kl", "nll",
      "nll_standard_error", "bits_per_dim", "active_units", "kl_per_dimension" `[L]`, "z_mean_variance" `[L]`,
      "num_examples", "num_importance_samples", "seconds".
    """
    n = len(x)
    latent_dim = loaded.latent_dim
    log_weights = make_log_weights_fn(loaded)
    totals = {"nll": 0.0, "nll_squared": 0.0, "reconstruction": 0.0}
    kl_per_dim_sum = np.zeros(latent_dim)
    z_mean_sum = np.zeros(latent_dim)
    z_mean_sq_sum = np.zeros(latent_dim)
    bar = Progress(n, "examples") if progress else None
    start = time.perf_counter()
    for begin in range(0, n, batch_size):
        x_batch = tf.constant(x[begin:begin + batch_size])
        label_batch = tf.constant(labels[begin:begin + batch_size], tf.int32)
        z_mean, z_logvar = loaded.encode(x_batch, label_batch)
        z_mean, z_logvar = tf.cast(z_mean, tf.float32), tf.cast(z_logvar, tf.float32)
        log_sum_w = np.full(len(x_batch), -np.inf)
        sum_log_px_z = np.zeros(len(x_batch))
        # Every example's K samples drawn at once from its own seed: the numbers depend on --seed alone, not on
        # batch_size or samples_per_batch (memory: K * latent_dim floats an example).
        noise = example_noise(tf.constant(begin), tf.constant(len(x_batch)), tf.constant(num_importance_samples),
                              tf.constant(latent_dim), tf.constant(seed))
        for k in range(0, num_importance_samples, samples_per_batch):
            eps = tf.transpose(noise[:, k:k + samples_per_batch], [1, 0, 2])  # [S, B, L]
            log_px_z, log_w = log_weights(x_batch, label_batch, z_mean, z_logvar, eps)
            log_sum_w = add_log_sum_exp(log_sum_w, log_w.numpy().astype(np.float64))
            sum_log_px_z += log_px_z.numpy().astype(np.float64).sum(axis=0)
        nll = -(log_sum_w - math.log(num_importance_samples))
        totals["nll"] += nll.sum()
        totals["nll_squared"] += np.square(nll).sum()
        totals["reconstruction"] += (-sum_log_px_z / num_importance_samples).sum()
        kl_per_dim_sum += losses.kl_per_dimension(z_mean, z_logvar).numpy().astype(np.float64).sum(axis=0)
        z_mean_np = z_mean.numpy().astype(np.float64)
        z_mean_sum += z_mean_np.sum(axis=0)
        z_mean_sq_sum += np.square(z_mean_np).sum(axis=0)
        if bar:
            bar.update(min(begin + batch_size, n))
    seconds = time.perf_counter() - start

    nll = totals["nll"] / n
    # The sample standard deviation (n - 1): the population one understates the error, by 0.25% at 200 examples.
    nll_std = math.sqrt(max((totals["nll_squared"] - n * nll ** 2) / max(n - 1, 1), 0.0))
    reconstruction = totals["reconstruction"] / n
    kl_per_dimension = kl_per_dim_sum / n
    z_mean_variance = np.maximum(z_mean_sq_sum / n - np.square(z_mean_sum / n), 0.0)
    kl = float(kl_per_dimension.sum())
    return {
        "negative_elbo": reconstruction + kl,
        "reconstruction": reconstruction,
        "kl": kl,
        "nll": nll,
        "nll_standard_error": nll_std / math.sqrt(n),
        "bits_per_dim": nll / (input_size(loaded.metadata) * math.log(2.0)),
        "active_units": int((z_mean_variance > losses.ACTIVE_UNIT_THRESHOLD).sum()),
        "latent_dim": latent_dim,
        "kl_per_dimension": kl_per_dimension.tolist(),
        "z_mean_variance": z_mean_variance.tolist(),
        "num_examples": n,
        "num_importance_samples": num_importance_samples,
        "seconds": seconds,
    }


def format_table(results, protocol):
    """The main numbers as an aligned text table, each with the protocol it was measured under."""
    units = "nats" if results.get("likelihood_is_density", True) else "not nats"
    # A Gaussian's density is continuous: its bits/dim are not those of 8-bit (discrete) pixels.
    continuous = results.get("likelihood") not in config.BINARY_LIKELIHOODS
    bits_unit = "not bits" if units != "nats" else "bits (continuous)" if continuous else "bits"
    rows = [
        ("negative ELBO", f"{results['negative_elbo']:.3f}", units, "elbo"),
        ("  reconstruction", f"{results['reconstruction']:.3f}", units, "elbo"),
        ("  KL", f"{results['kl']:.3f}", "nats", "elbo"),
        (f"NLL{' -log p(x|y)' if results.get('num_classes') else ''} (K={results['num_importance_samples']})",
         f"{results['nll']:.3f} ± {results['nll_standard_error']:.3f}", units, "nll"),
        ("bits/dim", f"{results['bits_per_dim']:.4f}", bits_unit, "bits_per_dim"),
        ("active units", f"{results['active_units']} / {results['latent_dim']}", "", "active_units"),
    ]
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    lines = [f"{results.get('source', '')}" + (f" ({results['checkpoint']})" if results.get("checkpoint") else ""),
             f"data: {protocol['data']}"]
    lines += [f"{name:<{width}}  {value:>{value_width}}  {unit:<8}" for name, value, unit, _ in rows]
    top = np.argsort(results["kl_per_dimension"])[::-1][:8]
    lines.append("KL per dimension (largest): " + ", ".join(
        f"z{i}={results['kl_per_dimension'][i]:.2f}" for i in top))
    lines.append(f"NLL: {protocol['nll']}")
    return "\n".join(lines)


def run(loaded, data_dir, split="test", num_importance_samples=1000, num_examples=0, batch_size=100,
        samples_per_batch=100, binarize="auto", seed=0, progress=True):
    """The whole job of `scripts/evaluate.py` but writing: data by protocol, evaluation, protocol notes.

    Returns:
      The results dict of `evaluate`, plus "protocol" (texts), "split", "binarize", "seed", "source", "model",
      "num_classes" (> 0: the likelihoods are given the label), "likelihood", "likelihood_is_density", "units".
    """
    binarize = resolve_binarize(loaded.metadata, binarize)
    x, labels, split_size = load_split(loaded.metadata, data_dir, split, binarize, seed, num_examples, at_random=True)
    results = evaluate(loaded, x, labels, num_importance_samples, batch_size, samples_per_batch, seed, progress)
    is_density = likelihood_is_density(loaded.metadata, binarize)
    protocol = describe_protocol(loaded.metadata, split, len(x), binarize, seed, num_importance_samples, split_size)
    # IDX files and TFDS order the examples differently: a number is comparable only with one from the same source.
    data_source = data.describe_source(loaded.metadata["dataset"], data.model_data_dir(loaded.metadata, data_dir))
    protocol["data"] += f"; read from {data_source}"
    results.update(
        protocol=protocol, data_source=data_source,
        split=split, binarize=binarize, seed=seed, source=loaded.source, model=loaded.metadata.get("model"),
        # A run folder's: which of its checkpoints (a --keep_best run's best epoch's, as it tested and exported).
        **({"checkpoint": loaded.metadata["checkpoint"]} if "checkpoint" in loaded.metadata else {}),
        num_classes=loaded.num_classes,
        likelihood=loaded.metadata.get("likelihood"), likelihood_is_density=is_density,
        units="nats per example" if is_density else "not a density: -log of exp(-loss) per example",
        elbo_gap=results["negative_elbo"] - results["nll"])
    return results
