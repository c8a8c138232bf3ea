"""The VAE: encoder, decoder and likelihood composed into one Keras model with custom train and test steps."""

import types

from tfvae.compat import keras
import tensorflow as tf

from tfvae import compat, losses

RNG_STATE_KEY = "seed_generator_state"
# z_logvar is clipped here: exp(+-30) is far beyond any useful variance yet finite in float32, so one wild batch
# cannot overflow exp(z_logvar) into inf and NaN. Values inside pass unchanged, gradient and all.
Z_LOGVAR_RANGE = (-30.0, 30.0)


def _map_present(fn, gradients):
    """`fn` of the gradients that are not None (a variable the loss does not touch has None), in their places."""
    results = iter(fn([gradient for gradient in gradients if gradient is not None]))
    return [None if gradient is None else next(results) for gradient in gradients]


@keras.saving.register_keras_serializable("tfvae")
class StepCount(keras.metrics.Metric):
    """A count of train steps, `update_state(1.0)` per step counted, that every replica makes alike.

    Keras reads a `Sum` metric's total as the sum over replicas, which counts a step once per replica; this one
    reads as any replica's (their mean), on one device or many.
    """

    def __init__(self, name="step_count", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = compat.add_metric_variable(self, "total", aggregation="mean")

    def update_state(self, values):
        self.total.assign_add(tf.reduce_sum(tf.cast(values, self.total.dtype)))

    def result(self):
        return tf.identity(self.total)

    def reset_state(self):
        self.total.assign(tf.zeros_like(self.total))


@keras.saving.register_keras_serializable("tfvae")
class VAE(keras.Model):
    """A VAE with a diagonal Gaussian q(z|x) and a N(0, I) prior.

    Batches are dicts {"input": x seen by the encoder, "target": x to reconstruct, "label": int32 [batch]}.
    Variants override one hook: `encode`/`decode` (conditioning) or `objective` (the training bound).
    `train_step` and `test_step` report per-example means of `loss`, `reconstruction` (-log p(x|z)) and `kl`.
    """

    def __init__(self, encoder, decoder, likelihood, latent_dim, beta=1.0, seed=None, free_bits=0.0, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.latent_dim = latent_dim
        self.beta = beta
        self.seed = seed
        self.free_bits = free_bits
        # Multiplies beta in the objective: 1. A KL warm-up leaves it alone (its weights are the train step's own,
        # `train_kl_weight`), so checkpoints and exports hold 1 whenever they are written.
        self.kl_weight = self.add_weight(name="kl_weight", shape=(), initializer="ones", trainable=False)
        # The warm-up's line, set by training.KLWarmup: its slope per optimizer step (read when the train step is
        # traced; 0: no warm-up) and its value at optimizer step 0. A namespace keeps that variable out of the
        # model's saved state: it means nothing without the callback that sets it.
        self.kl_weight_per_step = 0.0
        self.kl_warmup_line = types.SimpleNamespace(
            at_step_zero=tf.Variable(0.0, trainable=False, name="kl_warmup_at_step_zero",
                                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA))
        self.traced_kl_weight_per_step = None
        self.seed_generator = compat.SeedGenerator(seed)
        # Train batches split into this many equal parts whose passes run side by side (training.compile_model).
        self.micro_batches = 1
        self._shared_noise = None  # While a split batch is traced: its noise, drawn once for all parts.
        self._tracing_train_terms = False  # While the train step's terms are traced (inside its gradient tape).
        # Set by training.training_batches when the train step gets index batches: makes the batch of each.
        self.batch_from_indices = None
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        # Training only: the global L2 norm of the gradients, to watch for explosions and plateaus.
        self.grad_norm_tracker = keras.metrics.Mean(name="grad_norm")
        # Training only: train steps skipped because their loss or gradients were not finite.
        self.bad_steps_tracker = StepCount(name="bad_steps")
        # Skipped steps in a row now, and the most seen in a row, counted in the step: Keras calls back only once
        # per `steps_per_execution` steps (training.StopOnBadSteps reads `longest`). Kept out of the saved state
        # by the namespace, as the warm-up's line.
        self.bad_steps_in_a_row = types.SimpleNamespace(**{
            name: tf.Variable(0.0, trainable=False, name=f"bad_steps_in_a_row_{name}",
                              aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA) for name in ("now", "longest")})

    @property
    def metrics(self):
        # Listed here so Keras resets them each epoch and reports them under these names.
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker, self.grad_norm_tracker,
                self.bad_steps_tracker]

    def encode(self, x, label=None, training=False):
        """x `[batch, ...]` in [0, 1] -> (z_mean, z_logvar), each `[batch, latent_dim]`."""
        # float32 whatever the layers compute in (mixed precision): the loss and the signatures are float32.
        params = tf.cast(self.encoder(x, training=training), tf.float32)
        z_mean, z_logvar = tf.split(params, 2, axis=-1)
        return z_mean, tf.clip_by_value(z_logvar, *Z_LOGVAR_RANGE)

    def decode(self, z, label=None, training=False):
        """z `[batch, latent_dim]` -> logits of p(x|z), `[batch, ...]` shaped like x."""
        return tf.cast(self.decoder(z, training=training), tf.float32)

    def sample_z(self, z_mean, z_logvar):
        """Reparameterised sample z = mean + sigma * eps, eps from the model's seeded RNG."""
        return z_mean + tf.exp(0.5 * z_logvar) * self._noise_like(z_mean)

    def _noise_like(self, z_mean):
        """N(0, 1) noise shaped like `z_mean`: its rows of one draw for the whole global batch.

        Replicas and the parts of a split batch (micro-batches) each take the rows of that draw that their examples
        hold in the global batch, so replicas never share noise, a split step samples what one device's unsplit step
        would, and the RNG advances once per step either way.
        """
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        shared = self._shared_noise
        if shared is None and replicas == 1:
            return compat.random_normal(tf.shape(z_mean), self.seed_generator, dtype=z_mean.dtype)
        parts = 1 if shared is None else self.micro_batches
        shared = shared or {"noise": None, "part": 0}
        rows = tf.shape(z_mean)[0]
        if shared["noise"] is None:
            replica_rows = global_rows = rows * parts
            if replicas > 1:
                # Replica r holds the rows after those of replicas 0..r-1 (tf.distribute splits batches in order).
                replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
                if self._tracing_train_terms:  # Train batches split evenly (train.py refuses other batch sizes).
                    first, global_rows = replica * replica_rows, replica_rows * replicas
                else:  # A last, smaller evaluation batch may not (101 rows: 51 and 50): counted.
                    rows_of = context.all_gather(tf.reshape(replica_rows, [1]), axis=0)
                    first, global_rows = tf.reduce_sum(rows_of[:replica]), tf.reduce_sum(rows_of)
            whole = tf.concat([[global_rows], tf.shape(z_mean)[1:]], 0)
            noise = compat.random_normal(whole, self.seed_generator, dtype=z_mean.dtype)
            if replicas > 1:
                noise = noise[first:first + replica_rows]
            shared["noise"] = noise
        part, shared["part"] = shared["part"], shared["part"] + 1
        return shared["noise"][part * rows:(part + 1) * rows]

    def _compute_terms_in_parts(self, batch):
        """`compute_terms(batch, training=True)`, computed in `micro_batches` equal parts.

        Each part's forward and backward pass is a chain of its own, so TensorFlow's inter-op pool runs the parts
        side by side: on CPUs whose cores would otherwise split every small op (and wait for each other), that
        uses the cores better. The terms, and so the loss and gradients, are those of the whole batch up to float
        rounding: the noise is drawn once for the whole batch and each part gets its rows.
        """
        parts = self.micro_batches
        self._tracing_train_terms = True
        try:
            if parts == 1:
                return self.compute_terms(batch, training=True)
            size = batch["input"].shape[0]
            if size is not None and size % parts:
                raise ValueError(f"a batch of {size} examples per replica does not split into --micro_batches="
                                 f"{parts} equal parts; make the batch size per replica a multiple of it")
            split = {key: tf.split(value, parts) for key, value in batch.items()}
            self._shared_noise = {"noise": None, "part": 0}
            terms = [self.compute_terms({key: split[key][i] for key in batch}, training=True) for i in range(parts)]
        finally:
            self._shared_noise = None
            self._tracing_train_terms = False
        return {key: tf.concat([part[key] for part in terms], 0) for key in terms[0]}

    def call(self, inputs, training=False):
        """Deterministic reconstruction x_hat of z_mean (the likelihood's `call`: the mean of p(x | z_mean), or the
        autoregressive likelihood's raster-order mean-field image); `inputs` is x or a batch dict."""
        x, label = (inputs["input"], inputs.get("label")) if isinstance(inputs, dict) else (inputs, None)
        z_mean, _ = self.encode(x, label, training=training)
        return self.likelihood(self.decode(z_mean, label, training=training))

    def compute_terms(self, batch, training=False):
        """Per-example ELBO terms of a batch, in nats.

        Returns:
          {"reconstruction": -log p(x|z) `[batch]`, "kl": `[batch]`, "kl_per_dimension": `[batch, latent_dim]`}.
        """
        label = batch.get("label")
        z_mean, z_logvar = self.encode(batch["input"], label, training=training)
        z = self.sample_z(z_mean, z_logvar)
        logits = self.decode(z, label, training=training)
        log_px_z = self.likelihood.log_prob(tf.cast(batch["target"], logits.dtype), logits)
        kl_per_dimension = tf.cast(losses.kl_per_dimension(z_mean, z_logvar), tf.float32)
        return {"reconstruction": tf.cast(-log_px_z, tf.float32), "kl": tf.reduce_sum(kl_per_dimension, axis=-1),
                "kl_per_dimension": kl_per_dimension}

    def objective(self, terms, kl_weight=None):
        """Per-example loss `[batch]` from `compute_terms`; the hook for other bounds.

        reconstruction + beta * kl_weight * KL, where kl_weight is the warm-up factor (default `self.kl_weight`, 1
        without warm-up) and the KL counts at least `free_bits` nats per dimension when `free_bits` > 0.
        """
        kl_weight = self.kl_weight if kl_weight is None else kl_weight
        kl = losses.free_bits_kl(terms["kl_per_dimension"], self.free_bits) if self.free_bits else terms["kl"]
        return terms["reconstruction"] + self.beta * tf.cast(kl_weight, kl.dtype) * kl

    def train_kl_weight(self):
        """The KL weight of the train step being run.

        During a warm-up (`kl_weight_per_step` > 0) each step takes its own point of the warm-up's line
        (`kl_warmup_line`): KLWarmup can set a variable only between calls of Keras' multi-step loop
        (`--steps_per_execution`, a whole epoch in the tutorial recipe), not between its steps.
        """
        if not self.kl_weight_per_step:
            return self.kl_weight
        step = tf.cast(self.optimizer.iterations, tf.float32)
        return tf.clip_by_value(self.kl_warmup_line.at_step_zero + self.kl_weight_per_step * step, 0.0, 1.0)

    def repair_kl_weight(self):
        """Sets `kl_weight` to 1 after a checkpoint was read into the model: tfvae before 2026-12-04 kept a KL
        warm-up's line in it, so its checkpoints of warm-up runs hold 0 to -9 there, which resuming, evaluating or
        starting another run from them would take as the KL weight."""
        self.kl_weight.assign(1.0)

    def _update_trackers(self, terms, loss, finite=True):
        # A skipped (non-finite) step stays out of the epoch means: weight 0, values replaced by 0 (0 * NaN is NaN).
        # One weight per example: with one scalar Keras' Mean would count a batch as one value, and a last, smaller
        # validation or test batch as much as a whole one.
        weight = tf.fill(tf.shape(terms["kl"]), tf.cast(finite, tf.float32))
        if_finite = lambda value: tf.where(finite, value, tf.zeros_like(value))  # noqa: E731
        self.loss_tracker.update_state(if_finite(loss), sample_weight=weight)
        self.reconstruction_tracker.update_state(if_finite(terms["reconstruction"]), sample_weight=weight)
        self.kl_tracker.update_state(if_finite(terms["kl"]), sample_weight=weight)
        return {m.name: m.result() for m in (self.loss_tracker, self.reconstruction_tracker, self.kl_tracker)}

    def train_step(self, batch):
        self.traced_kl_weight_per_step = self.kl_weight_per_step  # The slope this trace uses; KLWarmup checks it.
        if "indices" in batch:  # training.training_batches: gathered here, where it costs less than in tf.data.
            if self.batch_from_indices is None:
                raise ValueError("the train step got batches of indices but has no batch_from_indices to make them; "
                                 "fit on training.training_batches(model, datasets, cfg), which sets it")
            batch = self.batch_from_indices(batch)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            terms = self._compute_terms_in_parts(batch)
            loss = self.objective(terms, self.train_kl_weight())
            # Gradients are summed over replicas, so each replica contributes its share of the global mean.
            replica_loss = tf.reduce_mean(loss) / replicas
            scaled_loss = compat.scale_loss(self.optimizer, replica_loss)
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        if replicas > 1:
            # Summed here, once, so that the norm below (the grad_norm metric and the finite check), the optimizer's
            # clipping and a loss scale's overflow check see the global batch's gradient, not one replica's share.
            gradients = _map_present(
                lambda present: tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, present),
                gradients)
        # Unscaled by the loss scale (mixed precision), so the norm is that of d(loss)/d(weights).
        loss_scale = tf.math.divide_no_nan(tf.cast(scaled_loss, tf.float32), tf.cast(replica_loss, tf.float32))
        grad_norm = tf.math.divide_no_nan(tf.linalg.global_norm(gradients), loss_scale)
        if replicas > 1 and not compat.takes_summed_gradients(self.optimizer):
            # An optimizer that sums over replicas itself (not tfvae's Adam): each replica hands it its share.
            gradients = _map_present(lambda present: [gradient / replicas for gradient in present], gradients)
        if hasattr(self.optimizer, "inner_optimizer"):
            # A loss scale optimizer (float16): its gradients overflow now and then by design; it skips those steps
            # itself and lowers its scale. Only a non-finite loss counts as a bad step.
            finite = self._finite_on_every_replica(replica_loss, tf.constant(0.0))
            compat.apply_gradients(self.optimizer, gradients, self.trainable_variables)
        else:
            finite = self._finite_on_every_replica(replica_loss, grad_norm)
            compat.apply_gradients_if_finite(self.optimizer, gradients, self.trainable_variables, finite)
        self.bad_steps_tracker.update_state(1.0 - tf.cast(finite, tf.float32))
        in_a_row = tf.where(finite, 0.0, self.bad_steps_in_a_row.now + 1.0)
        self.bad_steps_in_a_row.now.assign(in_a_row)
        self.bad_steps_in_a_row.longest.assign(tf.maximum(self.bad_steps_in_a_row.longest, in_a_row))
        # Only finite norms count: a loss-scaled step that overflowed (and was skipped) has none.
        norm_counts = finite & tf.math.is_finite(grad_norm)
        self.grad_norm_tracker.update_state(tf.where(norm_counts, grad_norm, 0.0),
                                            sample_weight=tf.cast(norm_counts, tf.float32))
        # The reported loss is the objective at full KL weight, as validation reports it, so the two curves compare
        # during a warm-up too (its weight is logged as kl_weight).
        reported_loss = self.objective(terms) if self.kl_weight_per_step else loss
        logs = {**self._update_trackers(terms, reported_loss, finite), "grad_norm": self.grad_norm_tracker.result(),
                "bad_steps": self.bad_steps_tracker.result()}
        return compat.step_outputs(logs)

    @staticmethod
    def _finite_on_every_replica(loss, grad_norm):
        """True when loss and gradients are finite on all replicas (all-reduced, so all replicas agree)."""
        finite = tf.math.is_finite(tf.cast(loss, tf.float32)) & tf.math.is_finite(grad_norm)
        all_finite = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))
        return all_finite < 0.5

    def test_step(self, batch):
        terms = self.compute_terms(batch, training=False)
        logs = self._update_trackers(terms, self.objective(terms))
        # The negative ELBO, which `loss` is not under --beta, --free_bits or --objective=iwae: one validation and
        # test column that compares across such runs (TensorBoard's HParams tab). The sum of the two means, so the
        # train step and the checkpoints stay as they are.
        logs["negative_elbo"] = logs["reconstruction"] + logs["kl"]
        return compat.step_outputs(logs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Under a strategy, Keras 3's fit/evaluate all-reduce a first batch only to learn shapes for building,
        # which MultiWorkerMirroredStrategy cannot do for dict batches (keras-team/keras#20329). build_model()
        # creates every variable and training.train() builds the optimizer, so there is nothing left to build.
        optimizer = getattr(self, "optimizer", None)
        if self.built and (optimizer is None or optimizer.built):
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def save_own_variables(self, store):
        super().save_own_variables(store)
        # The .keras format leaves out the sampling RNG; saved, a reloaded model draws the eps the original would.
        store[RNG_STATE_KEY] = self.seed_generator.state.numpy()

    def load_own_variables(self, store):
        if RNG_STATE_KEY in store.keys():
            self.seed_generator.state.assign(store[RNG_STATE_KEY])
        super().load_own_variables({key: store[key] for key in store.keys() if key != RNG_STATE_KEY})

    def get_config(self):
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "likelihood": keras.saving.serialize_keras_object(self.likelihood),
            "latent_dim": self.latent_dim,
            "beta": self.beta,
            "seed": self.seed,
            "free_bits": self.free_bits,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("encoder", "decoder", "likelihood"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
