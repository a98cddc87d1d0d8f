"""``FaceRecognizer``: backbone + margin head, labels handed to the head by the train step.

TensorFlow backend (the train step uses ``tf.GradientTape``, as Keras' own TensorFlow trainer).
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import tensorflow as tf
from keras import ops
from keras.src.losses import loss as loss_module
from keras.src.trainers.data_adapters import data_adapter_utils

from keras_facemargin._api import register
from keras_facemargin._checks import nan_unless
from keras_facemargin.layers.head import HeadOutput, MarginHead


@register
class SkipNonFiniteSteps(keras.optimizers.LossScaleOptimizer):
    """An optimizer wrapper that skips every step whose gradients are not finite.

    Nothing of a skipped step reaches the weights or the optimizer's slots (momentum, Adam
    moments, iteration count): Keras' ``LossScaleOptimizer`` machinery (which handles
    ``tf.distribute``) with the loss scale fixed at 1. :class:`FaceRecognizer` wraps its
    optimizer in it and turns the gradients of a batch with an invalid label or a non-finite
    embedding into NaN, so such a batch changes nothing.

    Args:
        inner_optimizer: the optimizer that does the updates.

    Example:

    >>> import keras
    >>> optimizer = SkipNonFiniteSteps(keras.optimizers.SGD(0.1, momentum=0.9))
    """

    def __init__(self, inner_optimizer, **kwargs):
        kwargs.pop("initial_scale", None)
        kwargs.pop("dynamic_growth_steps", None)
        super().__init__(inner_optimizer, initial_scale=1.0, **kwargs)

    def _stateful_handle_finite_grads(self, grads, trainable_variables):
        self.inner_optimizer.apply(grads, trainable_variables=trainable_variables)

    def _stateful_handle_non_finite_grads(self):
        pass

    def scale_loss(self, loss):
        return loss

    def check_finite(self, grads):
        # an IndexedSlices gradient (Partial FC's sampled rows) is checked on its values: never
        # densified into the (C, D) matrix
        values = [getattr(g, "values", g) for g in grads if g is not None]
        return ops.all(ops.convert_to_tensor([ops.all(ops.isfinite(v)) for v in values]))


@register
class FaceRecognizer(keras.Model):
    """A face-recognition task model: ``backbone`` (images -> embeddings) + a margin ``head``.

    The train step hands the labels to the head explicitly
    (:meth:`~keras_facemargin.layers.MarginHead.compute_logits`), so every head option works
    here unchanged: Partial FC (``sample_rate < 1``), sub-centres, stateful margins
    (CurricularFace, AdaFace, annealed SphereFace), MagFace's regularizer. Prediction returns the
    head's scores against every class (closed-set argmax); :attr:`embedding_model` is what
    export ships.

    Nothing trains silently wrong: a batch with an invalid label (an error eagerly and in graph
    mode) or a non-finite embedding reports a NaN loss under XLA and changes no weight,
    optimizer slot or margin state (the optimizer is wrapped in :class:`SkipNonFiniteSteps`),
    so ``keras.callbacks.TerminateOnNaN`` stops a run whose model is intact.

    Args:
        backbone: a Keras model from images to (B, D) embeddings.
        head: a :class:`~keras_facemargin.layers.MarginHead` (e.g. ``ArcMarginLayer(C)``).
        **kwargs: ``keras.Model`` arguments (``name``).

    Example:

    >>> import keras, numpy as np
    >>> from keras_facemargin import ArcMarginLayer, FaceRecognizer
    >>> backbone = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
    ...                              keras.layers.Dense(16)])
    >>> model = FaceRecognizer(backbone, ArcMarginLayer(10))
    >>> model.compile()  # SGD(0.1, momentum 0.9, weight decay 5e-4), cross-entropy on logits
    >>> _ = model.fit(np.random.rand(20, 8, 8, 3), np.arange(20) % 10, verbose=0)
    >>> model.embedding_model.output_shape
    (None, 16)
    """

    def __init__(self, backbone: keras.Model, head: MarginHead, **kwargs):
        if not isinstance(head, MarginHead):
            raise ValueError("`head` must be a keras_facemargin margin head (a MarginHead such "
                             f"as ArcMarginLayer). Received: head={head!r}")
        if not isinstance(backbone, keras.layers.Layer):
            raise ValueError(f"`backbone` must be a Keras model. Received: backbone={backbone!r}")
        super().__init__(**kwargs)
        self.backbone = backbone
        self.head = head
        if getattr(backbone, "built", False) and hasattr(backbone, "output_shape"):
            # build now, so every variable exists before fit traces a step
            self.build(tuple(backbone.input_shape))

    def build(self, input_shape):
        if not self.backbone.built:
            self.backbone.build(input_shape)
        if not self.head.built:
            self.head.build(self.backbone.compute_output_shape(input_shape))

    def call(self, inputs, training=None):
        return self.head(self.backbone(inputs, training=training), training=training)

    # --- compile -------------------------------------------------------------------------
    def compile(self, optimizer="auto", loss="auto", metrics=None, **kwargs):
        """Keras ``compile`` with insightface's defaults.

        Args:
            optimizer: ``"auto"``: ``SGD(0.1, momentum=0.9, weight_decay=5e-4)`` (arcface_torch's
                recipe). Any optimizer is wrapped in :class:`SkipNonFiniteSteps`.
            loss: ``"auto"``: ``SparseCategoricalCrossentropy(from_logits=True)``, applied to the
                head's margin logits and the labels the head returns (remapped under Partial
                FC). Margin losses (``head.loss``) are refused: the margin is already applied.
            metrics: Keras metrics on (labels, margin logits), e.g. ``["accuracy"]``.
            **kwargs: the other ``keras.Model.compile`` arguments (``jit_compile``...).
        """
        from keras_facemargin.losses.margin import MarginLoss

        if isinstance(optimizer, str) and optimizer == "auto":
            optimizer = keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=5e-4)
        optimizer = keras.optimizers.get(optimizer)
        if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            optimizer = SkipNonFiniteSteps(optimizer)
        if isinstance(loss, str) and loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if isinstance(loss, MarginLoss):
            raise ValueError(
                "FaceRecognizer applies the head's margin itself; compile it with a plain "
                "cross-entropy on logits (the default), not with head.loss. "
                f"Received: loss={loss!r}")
        if self.head.model_parallel:
            _check_sharded_compile(metrics)
            with self.distribute_strategy.scope():
                self.head.prepare_shard_optimizer(_inner_optimizer(optimizer))
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    # --- the steps -------------------------------------------------------------------------
    def _head_loss(self, x, out: HeadOutput, sample_weight, training: bool):
        loss = self.compute_loss(x=x, y=out.labels, y_pred=out.logits,
                                 sample_weight=sample_weight, training=training)
        loss = loss + ops.cast(out.regularization, loss.dtype)
        return nan_unless(ops.logical_and(ops.all(out.valid), ops.isfinite(loss)), loss)

    def forward_backward(self, x, y, sample_weight):
        """Forward pass, loss and gradients of one replica (no collective: XLA-compilable).

        Returns:
            ``(loss, logits, labels, gradients)``; the gradients are NaN when the loss is (an
            invalid batch), so that :class:`SkipNonFiniteSteps` skips the update.
        """
        with tf.GradientTape() as tape:
            embeddings = self.backbone(x, training=True)
            out = self.head.compute_logits(embeddings, y, training=True)
            loss = self._head_loss(x, out, sample_weight, training=True)
            scaled = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, self.trainable_weights)
        finite = tf.math.is_finite(loss)
        return loss, out.logits, out.labels, [_nan_unless(finite, g) for g in gradients]

    def train_step(self, data):
        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError("FaceRecognizer.fit needs labels: fit(images, labels).")
        if self.head.shards > 1:
            return self.sharded_train_step(x, y, sample_weight)
        loss, logits, labels, gradients = self.forward_backward(x, y, sample_weight)
        return self.apply_step(x, loss, logits, labels, gradients, sample_weight)

    def apply_step(self, x, loss, logits, labels, gradients, sample_weight):
        """The update and the metrics of a step (outside XLA when the strategy needs it)."""
        first = next(i for i in tf.nest.flatten(x) if i is not None)
        self._loss_tracker.update_state(loss_module.unscale_loss_for_distribution(loss),
                                        sample_weight=tf.shape(first)[0])
        self.optimizer.apply(gradients, self.trainable_weights)
        return self.compute_metrics(x, labels, logits, sample_weight=sample_weight)

    def sharded_train_step(self, x, y, sample_weight):
        """The step of a head with sharded centres (``model_parallel=True``), in replica context.

        Every replica runs the backbone on its batch, all-gathers the embeddings and labels, and
        computes the softmax over all C classes (or, with ``sample_rate < 1``, over a sample of
        each replica's shard: insightface's PartialFC v2) from its own C / N centres with a few
        all-reduces (:func:`~keras_facemargin.training.sharded_softmax.sharded_margin_loss_and_grads`).
        Its centres take a local optimizer step (:meth:`MarginHead.update_shard`); its rows of the
        all-reduced embedding gradient go back through the backbone, whose gradients the
        optimizer all-reduces as usual. The margin state is updated with the same gathered
        batch on every replica. A batch with an invalid label or a non-finite embedding on any
        replica changes nothing (NaN loss).
        """
        from keras_facemargin._checks import labels_and_validity
        from keras_facemargin.training.sharded_softmax import (
            gather_batch,
            sharded_margin_loss_and_grads,
        )

        if sample_weight is not None:
            raise ValueError("A head with sharded centres (model_parallel=True) trains without "
                             f"sample weights. Received: sample_weight={sample_weight!r}")
        head, context = self.head, tf.distribute.get_replica_context()
        weights = self.backbone.trainable_weights
        own = head.trainable_weights  # e.g. NormFace's learned scale (the centres are not)
        with tf.GradientTape() as tape:
            embeddings, finite = head._embeddings(self.backbone(x, training=True))
        labels, valid = labels_and_validity(y, head.num_classes, batch=tf.shape(embeddings)[0],
                                            check=head.check_inputs)
        bad = tf.reduce_sum(tf.cast(tf.logical_not(tf.logical_and(valid, finite)), tf.float32))
        ok = context.all_reduce(tf.distribute.ReduceOp.SUM, bad) == 0.0  # every replica's rows
        local = tf.shape(embeddings)[0]
        everyone, everyone_labels, start = gather_batch(context, embeddings, labels)
        loss, grad_all, grad_centres, held, grad_own = sharded_margin_loss_and_grads(
            everyone, everyone_labels, tf.convert_to_tensor(head.kernel), head.shard_offset(),
            head.margin, head.margin_state, update_ok=ok, sub_centers=head.sub_centers,
            sample=(head.sample_rate, head.seed_generator) if head.sampled else None,
            variables=own)
        ok = tf.logical_and(ok, held)  # a sample that could not hold a class: drop the step
        # scale_loss is linear: a loss-scaling optimizer gets the gradient of its scaled loss
        gradients = tape.gradient(embeddings, weights, output_gradients=self.optimizer.scale_loss(
            grad_all[start:start + local]))
        loss = nan_unless(tf.logical_and(ok, tf.math.is_finite(loss)), loss)
        finite_loss = tf.math.is_finite(loss)
        head.update_shard(grad_centres, _inner_optimizer(self.optimizer), finite_loss)
        self._loss_tracker.update_state(loss, sample_weight=local)
        # the optimizer sums each gradient over the replicas: the backbone's per-replica
        # gradients and the replicas' shares of the head's own weights alike
        gradients += [self.optimizer.scale_loss(g) for g in grad_own]
        self.optimizer.apply([_nan_unless(finite_loss, g) for g in gradients], weights + own)
        return self.get_metrics_result()

    def test_step(self, data):
        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError("FaceRecognizer.evaluate needs labels: evaluate(images, labels).")
        embeddings = self.backbone(x, training=False)
        out = self.head.compute_logits(embeddings, y, training=False)  # every class, margin on
        loss = self._head_loss(x, out, sample_weight, training=False)
        first = next(i for i in tf.nest.flatten(x) if i is not None)
        self._loss_tracker.update_state(loss_module.unscale_loss_for_distribution(loss),
                                        sample_weight=tf.shape(first)[0])
        return self.compute_metrics(x, out.labels, out.logits, sample_weight=sample_weight)

    # --- export / serialization --------------------------------------------------------------
    @property
    def embedding_model(self) -> keras.Model:
        """The backbone followed by L2 normalization: the model that export ships."""
        from keras_facemargin.layers.normalization import L2Normalize

        inputs = keras.Input(self.backbone.input_shape[1:], name="images")
        return keras.Model(inputs, L2Normalize(name="embedding")(self.backbone(inputs)),
                           name=f"{self.name}_embedding")

    def _prepare_strategy(self) -> None:
        """What ``fit``, ``evaluate`` and ``predict`` need under a ``tf.distribute`` strategy.

        Sharded centres: every step (train, test, predict) holds collectives, which XLA cannot
        compile on CPU replicas, so ``jit_compile`` is turned off there with a warning (before
        :func:`_enable_multiworker`, whose per-replica XLA train step is a full head's).
        """
        if self.head.shards > 1 and self.jit_compile:
            from keras_facemargin.training.strategy import jit_compile_obstacle

            reason = jit_compile_obstacle(self.distribute_strategy)
            if reason:  # the sharded steps' collectives cannot be compiled there
                warnings.warn(f"{reason} The sharded-centre step runs without XLA.",
                              stacklevel=3)
                self.jit_compile = False
        _enable_multiworker(self)

    def fit(self, *args, **kwargs):
        self._prepare_strategy()
        return super().fit(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        self._prepare_strategy()
        return super().evaluate(*args, **kwargs)

    def predict(self, *args, **kwargs):
        self._prepare_strategy()
        return super().predict(*args, **kwargs)

    def get_weights(self) -> list:
        """Every weight as a NumPy array; sharded centres (``model_parallel``) gathered whole."""
        return [keras.ops.convert_to_numpy(self.head.gathered(v)) for v in self.weights]

    def set_weights(self, weights) -> None:
        """Set every weight from :meth:`get_weights`' list; sharded centres are scattered."""
        if len(weights) != len(self.weights):
            raise ValueError(f"{self.name} holds {len(self.weights)} weights. Received: "
                             f"len(weights)={len(weights)}")
        for variable, value in zip(self.weights, weights, strict=True):
            if self.head.is_sharded(variable):
                self.head._assign_full(variable, value)
            else:
                variable.assign(value)

    def compile_from_config(self, config):
        """Recompile a loaded model with its saved optimizer, loss and metrics."""
        from keras.src.saving import serialization_lib

        self.compile(**serialization_lib.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name,
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "head": keras.saving.serialize_keras_object(self.head)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone"))
        head = keras.saving.deserialize_keras_object(config.pop("head"))
        return cls(backbone, head, **config)


def _inner_optimizer(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)


def _check_sharded_compile(metrics) -> None:
    """What a head with sharded centres needs of ``compile`` (whatever the number of replicas:
    the same compile call works on one device and on N); the optimizer is checked by
    :meth:`MarginHead.prepare_shard_optimizer`."""
    if metrics:
        raise ValueError(
            "A head with sharded centres trains on logits over each replica's shard only, so "
            "training metrics on them are not computed: compile without `metrics` (the loss is "
            "reported; use evaluate() or predict() for accuracy). Received: "
            f"metrics={metrics!r}")


def _nan_unless(finite, gradient):
    if gradient is None:
        return None
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(nan_unless(finite, gradient.values), gradient.indices,
                                gradient.dense_shape)
    return nan_unless(finite, gradient)


def _enable_multiworker(model: FaceRecognizer) -> None:
    strategy = model.distribute_strategy
    if strategy is None or not isinstance(
            strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)):
        return
    from keras_facemargin.training.multiworker import enable_multiworker_fit

    enable_multiworker_fit(model)
