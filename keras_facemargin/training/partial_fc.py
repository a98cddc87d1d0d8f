"""Partial FC class-centre sampling (An et al., 2021): the sampler and the head."""
from __future__ import annotations

import math

import keras
from keras import ops

from keras_facemargin._api import register
from keras_facemargin._checks import check_finite, prepare_labels
from keras_facemargin.layers.head import MarginHead
from keras_facemargin.losses._context import ContextLoss, attach_context
from keras_facemargin.ops.cosine import cosine_logits


def num_sampled_classes(num_classes: int, sample_rate: float) -> int:
    """Number of class centres sampled per step, `ceil(num_classes * sample_rate)`.

    Args:
        num_classes: Total number of identities, a positive int.
        sample_rate: Fraction of centres used per step, in (0, 1].

    Returns:
        The static number of sampled classes (at least 1).

    Example:
    >>> num_sampled_classes(1_000_000, 0.1)
    100000
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"`num_classes` must be a positive int. Received: num_classes={num_classes!r}")
    if not (isinstance(sample_rate, (int, float)) and 0.0 < sample_rate <= 1.0):
        raise ValueError(
            "`sample_rate` must be in (0, 1]. Received: "
            f"sample_rate={sample_rate!r}")
    return max(1, min(num_classes, math.ceil(num_classes * sample_rate)))


def sample_classes(labels, num_classes: int, sample_rate: float, seed=None):
    """Sample class centres: the batch's positives plus random negatives.

    Static shapes only (XLA-friendly): random scores over all classes, the
    positives get +2 so they always win, `top_k` keeps `num_sampled` of them,
    sorted ascending so labels are remapped with `searchsorted`.

    Args:
        labels: Integer labels in [0, num_classes), shape (B,) or (B, 1).
        num_classes: Total number of classes.
        sample_rate: Fraction of classes per step, in (0, 1].
        seed: Optional seed or `keras.random.SeedGenerator`. Defaults to `None`.

    Returns:
        `(index, remapped)`: the sorted sampled class ids (num_sampled,) and
        the labels remapped to positions in `index` (B,).

    Example:
    >>> index, new = sample_classes(np.array([3, 7]), 10, 0.5, seed=0)
    """
    k = num_sampled_classes(num_classes, sample_rate)
    labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
    batch = labels.shape[0]
    if batch is not None and batch > k:
        raise ValueError(
            "The batch is larger than the number of sampled classes "
            f"(ceil(num_classes * sample_rate) = {k}); raise `sample_rate`. "
            f"Received: batch_size={batch}, num_classes={num_classes}, "
            f"sample_rate={sample_rate}")
    scores = keras.random.uniform((num_classes,), seed=seed)
    ones = ops.ones_like(labels, dtype="float32")
    positive = ops.minimum(ops.scatter(labels[:, None], ones, (num_classes,)), 1.0)  # (C,)
    _, index = ops.top_k(scores + 2.0 * positive, k)
    index = ops.sort(ops.cast(index, "int32"))
    remapped = ops.cast(ops.searchsorted(index, labels), "int32")
    return index, remapped


@register
class PartialFCHead(MarginHead):
    """A margin head that trains on a sample of the class centres (Partial FC).

    Each training step computes logits only over the batch's positive classes plus random
    negatives, ``ceil(C * sample_rate)`` centres in all (labels remapped to positions in the
    sample); the margin is the same :class:`~keras_facemargin.margins.Margin` code path as the
    full heads. The centres are stored as (num_classes, embedding_dim) so that the sampled rows
    are gathered along axis 0: their gradient is a ``tf.IndexedSlices`` of the sampled rows and
    an optimizer without momentum updates only those rows. (Keras' momentum optimizers keep a
    dense velocity: there the non-sampled rows keep moving by their old velocity, as in
    insightface's PartialFC v2.) With ``sample_rate=1.0`` it computes exactly the full head.

    Call it with the labels in training (``head(embeddings, labels, training=True)``, a
    functional model with a labels input) and train with ``head.loss``, which reads the
    remapped labels from the head's output. Without labels (or outside training) it returns
    the cosine to every class centre, as the other heads.

    Args:
        num_classes: C, >= 1.
        margin: a :class:`~keras_facemargin.margins.Margin`. Defaults to `ArcMargin()`.
        sample_rate: fraction of the centres per step, in (0, 1]. Defaults to `0.1`.
        seed: seed of the sampler. Defaults to `None`.
        **kwargs: as for :class:`~keras_facemargin.layers.head.MarginHead` (one centre per
            class).

    Returns:
        In training with labels: logits (B, ceil(C * sample_rate)) over the sampled classes.
        Otherwise: cosines (B, C).

    Example:

    >>> import keras
    >>> from keras_facemargin.training.partial_fc import PartialFCHead
    >>> images, labels = keras.Input((16,)), keras.Input((), dtype="int32")
    >>> head = PartialFCHead(1000, sample_rate=0.1)
    >>> model = keras.Model([images, labels], head(keras.layers.Dense(8)(images), labels))
    >>> model.compile("sgd", loss=head.loss)
    """

    def __init__(self, num_classes: int, margin=None, *, sample_rate: float = 0.1,
                 seed: int | None = None, **kwargs):
        from keras_facemargin.margins import ArcMargin

        if kwargs.get("sub_centers", 1) != 1:
            raise ValueError("PartialFCHead takes one centre per class. Received: "
                             f"sub_centers={kwargs['sub_centers']}")
        super().__init__(num_classes, ArcMargin() if margin is None else margin, **kwargs)
        self.num_sampled = num_sampled_classes(self.num_classes, sample_rate)
        self.sample_rate = float(sample_rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(f"{self.name} expects flat embeddings (batch, embedding_dim). "
                             f"Received: input_shape={tuple(input_shape)}")
        self.kernel = self.add_weight(name="kernel", shape=(self.num_classes,
                                                             int(input_shape[-1])),
                                      initializer=self.kernel_initializer,
                                      regularizer=self.kernel_regularizer)
        self.margin_state = self.margin.build(self)
        self.xi = None

    @property
    def embedding_dim(self):
        return None if not self.built else int(self.kernel.shape[1])

    def call(self, inputs, labels=None, training=None):
        x = ops.cast(inputs, self.compute_dtype)
        if x.shape[-1] is not None and x.shape[-1] != self.kernel.shape[1]:
            raise ValueError(f"{self.name} was built for embeddings of shape (batch, "
                             f"{self.kernel.shape[1]}). Received: {tuple(x.shape)}")
        if self.check_inputs:
            x = check_finite(x, "embeddings")
        if labels is None or not training:
            cos, _, _ = cosine_logits(x, ops.transpose(self.kernel))
            return cos
        if self.check_inputs:
            labels = prepare_labels(labels, self.num_classes)
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        if self.num_sampled == self.num_classes:
            index, remapped = ops.arange(self.num_classes, dtype="int32"), labels
            centres = self.kernel
        else:
            index, remapped = sample_classes(labels, self.num_classes, self.sample_rate,
                                             self.seed_generator)
            centres = ops.take(self.kernel, index, axis=0)  # sparse gradient: sampled rows
        cos, x_norm, kernel_norm = cosine_logits(x, ops.transpose(centres), clip=True)
        context = {"x_norm": x_norm, "kernel_norm": kernel_norm, "training": True,
                   "embeddings": x, "sub_centers": 1}
        context.update(self.margin.context(self.margin_state, x_norm, True))
        logits = self.margin.logits(cos, remapped, context)
        attach_context(logits, {"remapped_labels": remapped, "sampled_index": index})
        return logits

    def compute_output_shape(self, inputs_shape, labels_shape=None):
        width = self.num_classes if labels_shape is None else self.num_sampled
        return (inputs_shape[0], width)

    @property
    def loss(self):
        """Cross-entropy on the sampled logits against the remapped labels."""
        return PartialFCLoss()

    def get_config(self):
        config = super().get_config()
        config.update(sample_rate=self.sample_rate, seed=self.seed,
                      margin=keras.saving.serialize_keras_object(self.margin))
        for key in ("displacement_basis",):
            config.pop(key, None)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["margin"] = keras.saving.deserialize_keras_object(config["margin"])
        return cls(**config)


@register
class PartialFCLoss(ContextLoss):
    """Softmax cross-entropy of :class:`PartialFCHead` logits against the remapped labels.

    ``y_true`` holds the original class ids; the labels remapped to the sampled classes ride on
    the head's output. Given logits over all classes (evaluation), it uses ``y_true`` as is.
    """

    def __init__(self, reduction="sum_over_batch_size", name: str = "partial_fc_loss",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        context = self.context() or {}
        labels = context.get("remapped_labels")
        if labels is None:
            labels = prepare_labels(y_true, y_pred.shape[-1], name="y_true")
        return keras.losses.sparse_categorical_crossentropy(labels, y_pred, from_logits=True)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}
