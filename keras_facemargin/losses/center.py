"""Center loss (Wen et al., ECCV 2016): class centres updated by the paper's rule."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_facemargin._api import register
from keras_facemargin._checks import (
    check_finite,
    check_int,
    check_number,
    nan_where_invalid,
    prepare_labels,
    valid_labels,
)
from keras_facemargin.losses._context import ContextLoss, attach_context
from keras_facemargin.ops.collective import all_sum


@register
class CenterLossLayer(keras.layers.Layer):
    """Holds the class centres of the Center loss; passes the embeddings through unchanged.

    Put it on the embedding output of a model and give ``layer.loss`` (a :class:`CenterLoss`)
    for that output in ``model.compile``. The centres are a non-trainable weight of shape
    (num_classes, embedding_dim), saved with the model; the loss updates them during
    ``model.fit`` with the paper's rule (not with the optimizer), combining the updates of all
    replicas under ``tf.distribute`` so that every replica holds the same centres.

    Args:
        num_classes: number of identities C, >= 1.
        alpha: learning rate of the centres, in [0, 1]. Defaults to `0.5`.
        centers_initializer: initializer of the centres. Defaults to `"zeros"`.
        **kwargs: base layer arguments (computes in float32 unless ``dtype`` is given).

    Call arguments:
        inputs: embeddings (B, D).
        training: Python bool; the centres move only in training.

    Returns:
        The embeddings, unchanged (carrying the centres for :class:`CenterLoss`).

    Example:

    >>> import keras
    >>> from keras_facemargin import CenterLossLayer, SoftmaxLayer
    >>> inputs = keras.Input((16,))
    >>> embedding = keras.layers.Dense(8)(inputs)
    >>> centers = CenterLossLayer(num_classes=5, alpha=0.5, name="centers")
    >>> head = SoftmaxLayer(num_classes=5, name="head")
    >>> model = keras.Model(inputs, {"head": head(embedding), "centers": centers(embedding)})
    >>> model.compile("sgd", loss={"head": head.loss, "centers": centers.loss},
    ...               loss_weights={"head": 1.0, "centers": 0.01})
    """

    def __init__(self, num_classes: int, alpha: float = 0.5, centers_initializer="zeros",
                 **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.num_classes = check_int("num_classes", num_classes, low=1)
        self.alpha = check_number("alpha", alpha, low=0.0, high=1.0)
        self.centers_initializer = keras.initializers.get(centers_initializer)

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(
                f"{self.name} expects embeddings of shape (batch, dim) with a known dim. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self.centers = self.add_weight(
            name="centers", shape=(self.num_classes, int(input_shape[-1])),
            initializer=self.centers_initializer, trainable=False, aggregation="mean",
        )

    def call(self, inputs, training=None):
        x = ops.cast(inputs, self.compute_dtype)
        output = ops.copy(x)
        attach_context(output, {"centers": self.centers, "alpha": self.alpha,
                                "training": bool(training)})
        return output

    def compute_output_shape(self, input_shape):
        return input_shape

    @property
    def loss(self) -> CenterLoss:
        """The :class:`CenterLoss` reading (and updating) this layer's centres."""
        return CenterLoss()

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_classes": self.num_classes, "alpha": self.alpha,
                "centers_initializer": keras.initializers.serialize(self.centers_initializer)}


def center_update(centers, x, labels, alpha: float):
    """The paper's centre update on a batch (summed over all replicas under tf.distribute).

    Formula:
        delta c_j = sum_i [y_i = j] (c_j - x_i) / (1 + sum_i [y_i = j])
        c_j <- c_j - alpha * delta c_j

    Args:
        centers: (C, D) current centres.
        x: (B, D) embeddings; labels: (B,) int class ids.
        alpha: rate in [0, 1].

    Returns:
        The new (C, D) centres.
    """
    num_classes = int(centers.shape[0])
    weight = ops.cast(valid_labels(labels, num_classes), x.dtype)[:, None]  # bad ids: no update
    ids = ops.clip(labels, 0, num_classes - 1)
    sums = ops.segment_sum(x * weight, ids, num_segments=num_classes)
    counts = ops.segment_sum(weight, ids, num_segments=num_classes)
    sums, counts = all_sum([sums, counts])
    delta = (counts * centers - sums) / (1.0 + counts)
    return centers - alpha * delta


@register
class CenterLoss(ContextLoss):
    """Center loss: half the squared distance of each embedding to its class centre.

    Formula:
        loss_i = 1/2 ||x_i - c_{y_i}||^2     (mean over the batch by default)

    ``y_pred`` must be the output of a :class:`CenterLossLayer` (which holds the centres);
    ``y_true`` holds integer class ids. In training the centres then move by the paper's rule
    (see :func:`center_update`); the gradient reaches the embeddings only. Joint supervision
    with a softmax or margin head is a two-output model with ``loss_weights`` (lambda).

    Args:
        reduction, name, dtype: as for any ``keras.losses.Loss``.

    Returns:
        Per-sample losses, reduced by Keras.

    Example: see :class:`CenterLossLayer`.
    """

    def __init__(self, reduction="sum_over_batch_size", name: str = "center_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        if self.building() and self.context() is None:
            return ops.zeros_like(y_pred[:, 0])
        centers_var = self.require_context("centers", "a CenterLossLayer")
        context = self.context()
        centers = ops.convert_to_tensor(centers_var)
        labels = prepare_labels(y_true, int(centers.shape[0]), name="y_true")
        x = check_finite(ops.cast(y_pred, centers.dtype), "embeddings")
        num_classes = int(centers.shape[0])
        own = ops.take(ops.stop_gradient(centers), ops.clip(labels, 0, num_classes - 1), axis=0)
        loss = nan_where_invalid(0.5 * ops.sum(ops.square(x - own), axis=-1), labels,
                                 num_classes)
        if context["training"]:
            centers_var.assign(center_update(centers, ops.stop_gradient(x), labels,
                                             context["alpha"]))
        return loss

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "reduction": self.reduction}
