"""``MarginHead``: the one layer, and the one code path, behind every margin head.

Every way of training goes through :meth:`MarginHead.margin_logits`:

    embeddings -> select centres (all / Partial FC sample / a shard) -> cosine core
               -> margin context -> margin.logits -> guarded state updates

* ``head(x, labels)`` and :meth:`MarginHead.compute_logits` (used by
  :class:`~keras_facemargin.FaceRecognizer`) run all of it in one call;
* the Sequential path (``model.add(head)`` + ``loss=head.loss``) runs the first half in the
  head's ``call`` (no labels: the cosine to every centre) and the second half in the loss, which
  hands the labels to :meth:`MarginHead.margin_logits` itself (an explicit call: the loss refuses
  a ``y_pred`` that is not the untouched output of a head).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import keras
from keras import ops

from keras_facemargin._api import register
from keras_facemargin._checks import check_finite, check_int, labels_and_validity, nan_unless
from keras_facemargin.margins.base import CONTEXT_ATTR, Margin
from keras_facemargin.ops.collective import replica_context
from keras_facemargin.ops.cosine import cosine_logits
from keras_facemargin.ops.sampling import num_sampled_classes, sample_classes

_HALF = ("float16", "bfloat16")


class HeadOutput(NamedTuple):
    """What :meth:`MarginHead.compute_logits` returns.

    Attributes:
        logits: (B, M) scaled margin logits over the centres this step saw (M = C, or the
            Partial FC sample).
        labels: (B,) int32 targets for ``logits`` (remapped into the sample under Partial FC).
        valid: (B,) bool, False where a label is out of range or not a whole number.
        regularization: a scalar extra loss term (MagFace's g(a)), or 0.
    """

    logits: Any
    labels: Any
    valid: Any
    regularization: Any


@register
class MarginHead(keras.layers.Layer):
    """Cosine classifier with a margin on the target logit: the core of every head.

    Holds the class centres (one weight, ``kernel``, shape (num_classes * K, embedding_dim),
    one row per centre, insightface's layout) and delegates the target transform to a
    :class:`~keras_facemargin.margins.Margin`. Partial FC (class-centre sampling) is an option
    of every head (``sample_rate < 1``), stateful margins included.

    Formula:
        cos[b, j] = max_k <x_b, W_{j,k}> / (||x_b|| ||W_{j,k}||)
        logits    = margin.logits(cos, y)  (e.g. s * (cos + onehot(y) (cos(theta_y + m) - cos_y)))

    Args:
        num_classes: number of identities C, >= 1.
        margin: a :class:`~keras_facemargin.margins.Margin` instance (named heads such as
            :class:`ArcMarginLayer` build it from their keyword arguments instead).
        sub_centers: K sub-centres per class; the cosine is the max over them. Defaults to `1`.
        sample_rate: Partial FC: fraction of the class centres a training step sees, in
            (0, 1] (the batch's classes plus random others; An et al., 2022). Defaults to `1.0`.
        seed: seed of the Partial FC sampler. Defaults to `None`.
        model_parallel: shard the class centres over the replicas of the ``tf.distribute``
            strategy whose scope builds the head (``MirroredStrategy``,
            ``MultiWorkerMirroredStrategy``): with N replicas each holds only C / N centres
            (``num_classes`` must be a multiple of N) and
            :class:`~keras_facemargin.FaceRecognizer` trains them inside ``model.fit`` with the
            distributed softmax of :mod:`keras_facemargin.training.sharded_softmax` (the
            centres take steps of the compiled SGD, Adam or AdamW on their own replica, as Keras
            would on a full kernel). Every margin works sharded (stateful ones included:
            the state is updated identically on every replica), and so do sub-centres and
            MagFace's regularizer; with ``sample_rate < 1`` each replica samples its own shard
            (insightface's PartialFC v2). Saving writes all C centres and loading scatters them
            over the replicas of the loading scope (any N, or one device). Built outside a
            multi-replica strategy the head is an ordinary full head. Not combined with a
            ``kernel_regularizer`` or DiscFace's displacement basis. Defaults to `False`.
        kernel_initializer: initializer of the class centres. Defaults to `"glorot_normal"`.
        kernel_regularizer: optional regularizer of the class centres. Defaults to `None`.
        check_inputs: validate labels (range, integrality, batch size) and embeddings (finite)
            at run time. Defaults to `True`.
        displacement_basis: add DiscFace's learnable displacement basis ``xi`` (a trainable
            weight of shape (embedding_dim,)) for :class:`~keras_facemargin.DiscrepancyLoss`.
            Defaults to `False`.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``...). The head always computes
            in float32: a half-precision ``dtype`` (``"mixed_float16"``, ``"bfloat16"``...) is
            accepted and its inputs are cast up.

    Call arguments:
        inputs: embeddings, shape (B, embedding_dim).
        labels: optional integer class ids, shape (B,) or (B, 1).
        training: Python bool.

    Returns:
        Without labels: the scores the head classifies with, (B, C): the cosine to every class
        centre (``SoftmaxLayer`` and ``LargeMarginSoftmaxLayer``: the logits ``W.x``), no margin;
        ``head.loss`` applies the margin to it in ``model.fit``. With labels: the scaled,
        margin-adjusted logits (B, C) for
        ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)`` (rows of invalid labels
        are NaN); MagFace's regularizer is added with ``add_loss``.

    Example:

    >>> import keras, numpy as np
    >>> from keras_facemargin import ArcMarginLayer
    >>> head = ArcMarginLayer(num_classes=10, margin=0.5, scale=64.0)
    >>> model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(16), head])
    >>> model.compile(optimizer="sgd", loss=head.loss, metrics=["accuracy"])
    >>> _ = model.fit(np.random.rand(20, 32), np.arange(20) % 10, verbose=0)
    >>> model.predict(np.random.rand(2, 32), verbose=0).shape
    (2, 10)
    """

    def __init__(self, num_classes: int, margin: Margin | dict | None = None, *,
                 sub_centers: int = 1, sample_rate: float = 1.0, seed: int | None = None,
                 kernel_initializer="glorot_normal", kernel_regularizer=None,
                 check_inputs: bool = True, displacement_basis: bool = False,
                 model_parallel: bool = False, **kwargs):
        if isinstance(margin, dict):
            margin = keras.saving.deserialize_keras_object(margin)
        if not isinstance(margin, Margin):
            raise ValueError(
                "`margin` must be a keras_facemargin.margins.Margin instance (or use a named head "
                f"such as ArcMarginLayer). Received: margin={margin!r}"
            )
        kwargs["dtype"] = _float32_policy(kwargs.get("dtype"))
        super().__init__(**kwargs)
        self.num_classes = check_int("num_classes", num_classes, low=1)
        self.sub_centers = check_int("sub_centers", sub_centers, low=1)
        self.num_sampled = num_sampled_classes(self.num_classes, sample_rate)
        self.sample_rate = float(sample_rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if self.sampled else None
        if self.sub_centers > 1 and margin.uses_kernel_norm:
            raise ValueError(
                f"{type(margin).__name__} scales logits by the class-centre norm, which is "
                f"undefined with sub-centres. Received: sub_centers={self.sub_centers}"
            )
        if displacement_basis and self.sub_centers > 1:
            raise ValueError(
                "`displacement_basis` (DiscFace) needs one centre per class. Received: "
                f"displacement_basis=True with sub_centers={self.sub_centers}"
            )
        self.displacement_basis = bool(displacement_basis)
        self.margin = margin
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.check_inputs = bool(check_inputs)
        self.margin_state: dict[str, Any] = {}
        self.model_parallel = bool(model_parallel)
        self.shards = 1  # set by build: the replicas the centres are sharded over
        self._adam_slots = False  # sharded centres with Adam: a second-moment slot
        if self.model_parallel:
            _check_model_parallel(self)

    @property
    def sampled(self) -> bool:
        """True when a training step sees a sample of the centres (Partial FC)."""
        return self.num_sampled < self.num_classes

    @property
    def embedding_dim(self) -> int | None:
        return None if not self.built else int(self.kernel.shape[1])

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(
                f"{self.name} expects flat embeddings of shape (batch, embedding_dim) with a "
                f"known embedding_dim. Received: input_shape={tuple(input_shape)}"
            )
        if self.model_parallel and _num_replicas() > 1:
            self._build_shards(int(input_shape[-1]), _num_replicas())
            self.margin_state = self.margin.build(self)
            self.xi = None
            return
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.num_classes * self.sub_centers, int(input_shape[-1])),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self.margin_state = self.margin.build(self)
        self.xi = None
        if self.displacement_basis:
            self.xi = self.add_weight(name="displacement_basis", shape=(int(input_shape[-1]),),
                                      initializer="zeros")

    # --- sharded centres (model parallel) -----------------------------------------------
    def _build_shards(self, dim: int, shards: int) -> None:
        if self.num_classes % shards:
            raise ValueError(
                f"{self.name} shards its class centres over the {shards} replicas of the "
                f"strategy (model_parallel=True): `num_classes` must be a multiple of {shards}. "
                f"Received: num_classes={self.num_classes}")
        self.shards = shards
        rows = self.num_classes * self.sub_centers // shards
        with keras.name_scope(self.name, caller=self):
            # ON_READ: one distinct component per replica, read and written locally in replica
            # context; never trainable (the Keras optimizer would all-reduce its gradient)
            self.kernel, self.centre_velocity = (
                self._shard_variable(name, rows, dim) for name in ("kernel", "centre_velocity"))
        self.centre_second_moment = None  # Adam's v (see prepare_shard_optimizer)
        if self._adam_slots:
            self._make_second_moment()
        self._initialize_shards(dim)

    def _make_second_moment(self) -> None:
        locked = self.built  # compile after build: add the slot as Keras' own layers do (LoRA)
        if locked:
            self._tracker.unlock()
        with keras.name_scope(self.name, caller=self):
            self.centre_second_moment = self._shard_variable("centre_second_moment",
                                                             *self.kernel.shape)
        if locked:
            self._tracker.lock()

    def _shard_variable(self, name: str, rows: int, dim: int):
        return keras.Variable(initializer="zeros", shape=(rows, dim), dtype=self.variable_dtype,
                              trainable=False, synchronization="on_read", aggregation="none",
                              name=name)

    @property
    def centre_slots(self) -> list:
        """The optimizer slots of sharded centres (one shard per replica, like the kernel):
        ``centre_velocity`` (SGD's momentum, Adam's first moment) and, for Adam,
        ``centre_second_moment``; empty for a full head."""
        if self.shards == 1:
            return []
        return [v for v in (self.centre_velocity, self.centre_second_moment) if v is not None]

    def prepare_shard_optimizer(self, optimizer) -> None:
        """Check that ``optimizer`` can update sharded centres and create its slots (call
        under the strategy's scope; :meth:`FaceRecognizer.compile` does).

        Args:
            optimizer: ``keras.optimizers.SGD`` (momentum, Nesterov, weight decay),
                ``Adam`` or ``AdamW`` (not AMSGrad), without gradient clipping.
        """
        from keras.optimizers import SGD, Adam

        if not isinstance(optimizer, (SGD, Adam)):
            raise ValueError(
                "A head with sharded centres (model_parallel=True) updates each replica's "
                "centres itself, as keras.optimizers.SGD, Adam or AdamW would (learning-rate "
                "schedule, momentum / moments, weight decay): compile with one of these. "
                f"Received: optimizer={type(optimizer).__name__}")
        if getattr(optimizer, "amsgrad", False):
            raise ValueError("The Adam / AdamW steps of sharded centres run without AMSGrad. "
                             "Received: amsgrad=True")
        clipping = {k: getattr(optimizer, k, None)
                    for k in ("clipnorm", "global_clipnorm", "clipvalue")}
        if any(v is not None for v in clipping.values()):
            raise ValueError("Gradient clipping is not applied to sharded centres: compile "
                             f"the optimizer without it. Received: {clipping}")
        self._adam_slots = isinstance(optimizer, Adam)
        if self._adam_slots and self.shards > 1 and self.centre_second_moment is None:
            self._make_second_moment()

    def _initialize_shards(self, dim: int) -> None:
        """Draw each local replica's (C * K / N, D) centres on its own: no process holds all
        C * K rows. Shard ``i`` is drawn from the initializer's distribution for the full
        (C * K, D) kernel (a variance-scaling initializer keeps the full shape's variance) with
        its own seed, derived from the initializer's seed (or one draw of Keras' global seed,
        reproducible under ``keras.utils.set_random_seed``) and ``i``. An initializer whose
        values depend on the whole matrix (e.g. ``Orthogonal``) is drawn whole and sliced."""
        import tensorflow as tf

        from keras_facemargin.training.sharded_softmax import _first_local_replica

        full = (self.num_classes * self.sub_centers, dim)
        rows = full[0] // self.shards
        draw = _shard_initializer(self.kernel_initializer, full, (rows, dim))
        if draw is None:
            self.assign_centres(self.kernel_initializer(full, dtype=self.variable_dtype))
            return
        first = _first_local_replica(self._strategy())
        for local, component in enumerate(self.kernel.value.values):
            component.assign(draw(first + local)((rows, dim), dtype=self.variable_dtype))

    def _refuse_sharded_training(self) -> None:
        if self.shards > 1:  # its centres are not trainable weights: they would never move
            raise ValueError(
                f"{self.name} shards its class centres over {self.shards} replicas "
                "(model_parallel=True): train it with keras_facemargin.FaceRecognizer, whose "
                "train step updates the shards; it cannot be trained through head(x) / "
                "head(x, labels) with training=True (Sequential + head.loss, custom loops).")

    def _strategy(self):
        """The strategy that holds the shards (the one whose scope built the head): gathering
        and scattering work inside or outside its scope (e.g. in a callback of ``fit``)."""
        return self.kernel.value.distribute_strategy

    def shard_offset(self):
        """First global class id of this replica's shard (call in replica context)."""
        import tensorflow as tf

        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        return ops.cast(replica, "int32") * (self.num_classes // self.shards)

    def full_kernel(self):
        """All (C * K, D) centre rows: the kernel, or, when sharded, the shards gathered in
        replica order (an all-gather in replica context; ``strategy.gather`` outside it)."""
        if self.shards == 1:
            return self.kernel
        import tensorflow as tf

        context = replica_context()
        if context is not None:
            # this replica's shard as a tensor placed on the replica's device (tf.identity):
            # MultiWorkerMirroredStrategy's all_gather refuses a tensor without a device
            # ("destinations can not be empty"), which is what a variable read is in a graph
            return context.all_gather(tf.identity(tf.convert_to_tensor(self.kernel)), axis=0)
        return self._strategy().gather(self.kernel.value, axis=0)

    def assign_centres(self, rows) -> None:
        """Set every class centre from a (C * K, D) array, one centre per row (the kernel's
        layout); a sharded head keeps only its replicas' rows (call outside ``strategy.run``).

        Args:
            rows: (C * K, D) array-like.
        """
        self._assign_full(self.kernel, rows)

    def _assign_full(self, variable, rows) -> None:
        rows = ops.convert_to_tensor(rows, self.variable_dtype)
        expected = (self.num_classes * self.sub_centers, int(variable.shape[-1]))
        if tuple(rows.shape) != expected:
            raise ValueError(f"{self.name} holds {expected[0]} centres of dimension "
                             f"{expected[1]}: expected an array of shape {expected}. "
                             f"Received: shape={tuple(rows.shape)}")
        if self.shards == 1:
            variable.assign(rows)
            return
        import tensorflow as tf

        per = expected[0] // self.shards

        def scatter():
            start = self.shard_offset() * self.sub_centers
            variable.assign(tf.slice(rows, [start, 0], [per, -1]))

        self._strategy().run(tf.function(scatter))

    def update_shard(self, gradient, optimizer, apply) -> None:
        """One optimizer step of this replica's centres (in replica context), as Keras applies
        the compiled optimizer to a full kernel: decoupled weight decay, then SGD (momentum,
        Nesterov) or Adam / AdamW (bias-corrected moments), with the learning rate of this step
        (schedule included); skipped unless ``apply`` (a scalar bool)."""
        from keras.optimizers import Adam

        kernel, m_var = self.kernel, self.centre_velocity
        lr = ops.cast(optimizer.learning_rate, kernel.dtype)
        w = ops.convert_to_tensor(kernel)
        if optimizer.weight_decay:
            w = w - w * ops.cast(optimizer.weight_decay, w.dtype) * lr
        m = ops.convert_to_tensor(m_var)
        if isinstance(optimizer, Adam):
            v_var = self.centre_second_moment
            b1, b2 = (ops.cast(b, w.dtype) for b in (optimizer.beta_1, optimizer.beta_2))
            t = ops.cast(optimizer.iterations + 1, w.dtype)
            alpha = lr * ops.sqrt(1 - ops.power(b2, t)) / (1 - ops.power(b1, t))
            m = m + (gradient - m) * (1 - b1)
            v = ops.convert_to_tensor(v_var)
            v = v + (ops.square(gradient) - v) * (1 - b2)
            step = -alpha * m / (ops.sqrt(v) + optimizer.epsilon)
            v_var.assign(ops.where(apply, v, v_var))
        elif optimizer.momentum:
            m = m * optimizer.momentum - gradient * lr
            step = m * optimizer.momentum - gradient * lr if optimizer.nesterov else m
        else:
            step = -gradient * lr
        m_var.assign(ops.where(apply, m, m_var))
        kernel.assign(ops.where(apply, w + step, kernel))

    def _saved_variables(self) -> list:
        """The variables in the order a full head saves them; a sharded head's centre slots
        last (a full head loading such a file ignores them)."""
        own = self._trainable_variables + self._non_trainable_variables
        if self.shards == 1:
            return own
        sharded = [self.kernel] + self.centre_slots
        return [self.kernel] + [v for v in own if all(v is not s for s in sharded)] + (
            self.centre_slots)

    def is_sharded(self, variable) -> bool:
        """True for the head's variables that hold one shard per replica (``model_parallel``)."""
        return self.shards > 1 and any(variable is v
                                       for v in [self.kernel] + self.centre_slots)

    def gathered(self, variable):
        """A variable's full value: all shards in replica order for a sharded one (call outside
        ``strategy.run``)."""
        if not self.is_sharded(variable):
            return variable
        import tensorflow as tf

        return self._strategy().gather(variable.value, axis=0)

    def save_own_variables(self, store):
        for i, variable in enumerate(self._saved_variables()):
            store[f"{i}"] = self.gathered(variable)

    def load_own_variables(self, store):
        saved = self._saved_variables()
        slots = self.centre_slots
        base = len(saved) - len(slots)  # the variables every file of this head holds
        keys = len(store.keys())
        # a sharded head's file holds its centre slots after them (SGD: 1, Adam: 2); a file
        # with fewer slots (a full head's, an SGD run's) leaves the others at zero, a full head
        # ignores them
        if keys != len(saved) and not (self.model_parallel and base <= keys <= base + 2):
            raise ValueError(f"{self.name} holds {len(saved)} variables; the saved layer holds "
                             f"{keys}. Received: keys={sorted(store.keys())}")
        for i, variable in enumerate(saved):
            if i >= keys:  # a slot the file does not hold
                self._assign_full(variable, ops.zeros((self.num_classes * self.sub_centers,
                                                       variable.shape[-1])))
            elif self.is_sharded(variable):
                self._assign_full(variable, store[f"{i}"][...])
            else:
                variable.assign(store[f"{i}"])

    # --- the core ----------------------------------------------------------------------
    def _embeddings(self, x):
        x = ops.cast(x, self.compute_dtype)
        dim = self.kernel.shape[1]
        if len(x.shape) != 2 or (x.shape[-1] is not None and x.shape[-1] != dim):
            raise ValueError(
                f"{self.name} was built for embeddings of shape (batch, {dim}). "
                f"Received: embeddings.shape={tuple(x.shape)}"
            )
        if self.check_inputs:
            x = check_finite(x, "embeddings")
        # where assertions are compiled away (XLA), a non-finite row is zeroed and reported
        # invalid: the loss is NaN, the gradient zero, no state changes.
        finite = ops.all(ops.isfinite(x), axis=-1)
        return ops.where(finite[:, None], x, ops.zeros_like(x)), finite

    def select(self, labels, training: bool):
        """The centres a step sees: ``(centres, labels into them)``; -1 marks a label whose
        class the Partial FC sample could not hold (more distinct classes than the sample).

        All of them (``sample_rate=1``, or outside training), or the Partial FC sample: the
        batch's classes plus random others, ``ceil(C * sample_rate)`` in all, gathered by rows
        (their gradient is an ``IndexedSlices`` of the sampled rows).
        """
        if not (training and self.sampled) or labels is None:
            return self.full_kernel(), labels
        index, remapped = sample_classes(labels, self.num_classes, self.sample_rate,
                                         self.seed_generator)
        if self.sub_centers > 1:
            offsets = ops.arange(self.sub_centers, dtype="int32")[None, :]
            index = ops.reshape(index[:, None] * self.sub_centers + offsets, (-1,))
        return ops.take(self.kernel, index, axis=0), remapped

    def cosines(self, x, centres=None, training: bool = False, prescale: float | None = None,
                finite=None):
        """Cosine core: ``(cos (B, M), context)`` of embeddings ``x`` against ``centres``.

        The context holds what margins and the metric losses read (norms, the margin's
        per-batch quantities and pending state updates, the head itself).
        """
        centres = self.full_kernel() if centres is None else centres
        if prescale is None:
            cos, x_norm, kernel_norm = cosine_logits(x, centres, self.sub_centers)
        else:  # training fast path: scale folded into the matmul, only target cosines clipped
            cos, x_norm, kernel_norm = cosine_logits(x, centres, self.sub_centers,
                                                     scale=prescale, clip=False)
        context = margin_context(
            self.margin, self.margin_state, x, x_norm, kernel_norm, training, head=self,
            kernel=self.kernel if self.shards == 1 else centres, sub_centers=self.sub_centers,
            finite=ops.ones_like(x_norm, "bool") if finite is None else finite)
        if self.xi is not None:
            context["xi"] = self.xi
        return cos, context

    def margin_logits(self, cos, labels, context: dict, prescaled: bool = False,
                      valid=None, name: str = "labels") -> HeadOutput:
        """The second half of the core: labels -> margin logits -> guarded state updates.

        Args:
            cos: (B, M) cosines from :meth:`cosines` (times the scale when ``prescaled``).
            labels: (B,) or (B, 1) class ids into the M centres (checked: an eager
                ``ValueError`` or graph assertions; under XLA, where assertions vanish, the
                invalid rows are reported in ``valid``).
            context: the context from :meth:`cosines`.
            prescaled: ``cos`` holds ``scale * cos`` unclipped (:attr:`Margin.prescalable`).
            valid: (B,) validity when ``labels`` were already checked (then they are used as
                they are). Defaults to `None`.
            name: the labels' name in error messages (a loss passes `"y_true"`).
                Defaults to `"labels"`.

        Returns:
            A :class:`HeadOutput`. State updates (EMA statistics, step counters) are applied
            only when the batch is non-empty, every label valid and every embedding finite, so a
            bad batch never changes the margin state.
        """
        if valid is None:
            labels, valid = labels_and_validity(labels, cos.shape[-1] or self.num_classes,
                                                batch=ops.shape(cos)[0], check=self.check_inputs,
                                                name=name)
        safe = labels
        valid = ops.logical_and(valid, context["finite"])
        logits = self.margin.logits(cos, safe, context, prescaled=prescaled)
        apply_updates(context, ops.logical_and(ops.all(valid), ops.shape(cos)[0] > 0))
        regularization = self.margin.regularization(context)
        if regularization is None:
            regularization = ops.zeros((), "float32")
        return HeadOutput(logits, safe, valid, regularization)

    def compute_logits(self, embeddings, labels, training: bool = True) -> HeadOutput:
        """The whole core in one call: what :class:`~keras_facemargin.FaceRecognizer` trains on.

        Args:
            embeddings: (B, D) embeddings.
            labels: (B,) or (B, 1) integer class ids in [0, C).
            training: training step (Partial FC samples, margin state updates).

        Returns:
            A :class:`HeadOutput` (logits over the centres the step saw, the labels into them,
            the per-row validity, the regularization term).
        """
        if training:
            self._refuse_sharded_training()
        x, finite = self._embeddings(embeddings)
        safe, valid = labels_and_validity(labels, self.num_classes, batch=ops.shape(x)[0],
                                          check=self.check_inputs)
        valid = ops.logical_and(valid, finite)
        centres, target = self.select(safe, bool(training))
        if target is not safe:  # sampled: -1 marks a class the sample could not hold
            valid = ops.logical_and(valid, target >= 0)
            target = ops.maximum(target, 0)
        prescale = self.margin.scale if self.margin.prescalable else None
        cos, context = self.cosines(x, centres, bool(training), prescale, finite=finite)
        return self.margin_logits(cos, target, context, prescaled=prescale is not None,
                                  valid=valid)

    def call(self, inputs, labels=None, training=None):
        if training:
            self._refuse_sharded_training()
        if labels is None:
            x, finite = self._embeddings(inputs)
            cos, context = self.cosines(x, training=bool(training), finite=finite)
            output = self.margin.output(cos, context)
            context["cosine"] = cos
            try:
                setattr(output, CONTEXT_ATTR, context)
            except AttributeError:  # a tensor type that refuses attributes: losses will say so
                pass
            return output
        if training and self.sampled:
            raise ValueError(
                f"{self.name} samples its class centres (sample_rate={self.sample_rate}), so its "
                "training logits are over the sample and the labels must be remapped: train it "
                "with keras_facemargin.FaceRecognizer, or call head.compute_logits(x, labels) "
                "for the logits and the remapped labels."
            )
        out = self.compute_logits(inputs, labels, training=bool(training))
        valid_all = ops.cast(ops.all(out.valid), "float32")
        self.add_loss(out.regularization * valid_all)
        return nan_unless(out.valid[:, None], out.logits)  # invalid rows: NaN, never trained

    def compute_output_shape(self, inputs_shape=None, labels_shape=None, **kwargs):
        # Model.summary() passes the shape under build()'s argument name, `input_shape=`
        shape = kwargs["input_shape"] if inputs_shape is None else inputs_shape
        return (shape[0], self.num_classes)

    def centres(self):
        """The class centres as a (D, C * K) tensor (one column per centre, the peers' layout)."""
        return ops.transpose(self.full_kernel())

    @property
    def loss(self):
        """The Keras loss for the Sequential path: ``model.compile(loss=head.loss)``."""
        from keras_facemargin.losses.margin import MarginLoss

        return MarginLoss(margin=self.margin)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("dtype", None)
        config.update(
            num_classes=self.num_classes,
            sub_centers=self.sub_centers,
            sample_rate=self.sample_rate,
            seed=self.seed,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            check_inputs=self.check_inputs,
            displacement_basis=self.displacement_basis,
            model_parallel=self.model_parallel,
            margin=keras.saving.serialize_keras_object(self.margin),
        )
        return config


def margin_context(margin: Margin, state: dict, x, x_norm, kernel_norm, training,
                   **extra) -> dict:
    """The context a margin reads: norms, the training flag, the margin's per-batch quantities
    (``margin.context``) and its pending ``(variable, value)`` state updates.

    The one builder for the head (:meth:`MarginHead.cosines`) and the sharded centres
    (:func:`keras_facemargin.training.sharded_softmax.shard_logits`).
    """
    context = {"x_norm": x_norm, "kernel_norm": kernel_norm, "training": bool(training),
               "embeddings": x, "updates": [], **extra}
    margin_extra = dict(margin.context(state, x_norm, bool(training)))
    context["updates"].extend(margin_extra.pop("updates", []))
    context.update(margin_extra)
    return context


def apply_updates(context: dict, ok) -> None:
    """Apply the context's pending margin-state updates where ``ok`` (a scalar bool), then clear
    them: a bad or empty batch leaves EMA statistics and step counters as they were."""
    for variable, value in context["updates"]:
        variable.assign(ops.where(ok, ops.stop_gradient(value), variable))
    context["updates"] = []


def _float32_policy(dtype) -> str:
    """The head computes in float32 whatever float policy it is given (float64 stays)."""
    if dtype is None:
        return "float32"
    policy = keras.dtype_policies.get(dtype)
    compute = policy.compute_dtype
    if compute == "float64":
        return "float64"
    if compute not in ("float32",) + _HALF:
        raise ValueError(
            "A margin head computes in float32 (float64 allowed); half-precision policies are "
            f"accepted and computed in float32. Received: dtype={dtype!r}"
        )
    return "float32"


def _num_replicas() -> int:
    """Replicas of the ``tf.distribute`` strategy in scope (1 outside one, or off TensorFlow)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def _check_model_parallel(head: MarginHead) -> None:
    """Refuse the head options the sharded softmax does not compute."""
    refused = {
        "kernel_regularizer": (head.kernel_regularizer, head.kernel_regularizer is not None),
        "displacement_basis": (head.displacement_basis, head.displacement_basis),
    }
    for name, (value, bad) in refused.items():
        if bad:
            raise ValueError(f"model_parallel=True (sharded class centres) does not support "
                             f"`{name}`. Received: {name}={value!r}")


def _shard_initializer(initializer, full_shape: tuple, shard_shape: tuple):
    """``shard -> initializer`` drawing one shard's rows from ``initializer``'s distribution
    for ``full_shape``, each shard with its own seed; `None` where that is not possible."""
    from keras.initializers import (RandomNormal, RandomUniform, TruncatedNormal,
                                    VarianceScaling)

    seed = getattr(initializer, "seed", None)
    if seed is not None and not isinstance(seed, int):
        return None  # a SeedGenerator: its stream is the user's, not split per shard
    if seed is None:
        seed = int(keras.random.randint((), 0, 2**30))  # Keras' global seed: reproducible
    config = initializer.get_config()
    if isinstance(initializer, VarianceScaling):
        if config.get("input_axes") or config.get("output_axes"):
            return None

        def denominator(shape):
            fan_in, fan_out = shape
            mode = initializer.mode
            return {"fan_in": fan_in, "fan_out": fan_out}.get(mode, (fan_in + fan_out) / 2)

        scale = initializer.scale * denominator(shard_shape) / denominator(full_shape)
        return lambda shard: VarianceScaling(scale=scale, mode=initializer.mode,
                                             distribution=initializer.distribution,
                                             seed=(seed * 1009 + shard + 1) % (2**31 - 1))
    if isinstance(initializer, (RandomNormal, RandomUniform, TruncatedNormal)):
        return lambda shard: type(initializer).from_config(
            {**config, "seed": (seed * 1009 + shard + 1) % (2**31 - 1)})
    return None
