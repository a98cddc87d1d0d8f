"""Joint supervision on one output: a weighted sum of losses."""

from __future__ import annotations

from typing import Any

import keras

from keras_facemargin._api import register


@register
class JointLoss(keras.losses.Loss):
    """A weighted sum of losses applied to the same ``(y_true, y_pred)``.

    For joint supervision on one head output, e.g. "ArcFace + Intra":
    ``JointLoss([head.loss, IntraLoss()], weights=[1.0, 1.0])``. Each member sees the head's
    output exactly as it would alone (context included) and reduces it itself. For losses on
    different outputs (softmax on the logits + Center or Triplet on the embeddings) use a model
    with two outputs and ``loss_weights`` instead.

    Args:
        losses: a list of ``keras.losses.Loss`` instances (or their serialized configs).
        weights: one float per loss. Defaults to all `1.0`.
        name: loss name. Defaults to `"joint_loss"`.

    Returns:
        ``sum_k weights[k] * losses[k](y_true, y_pred)``.

    Example:

    >>> from keras_facemargin import ArcMarginLayer, IntraLoss
    >>> head = ArcMarginLayer(num_classes=10)
    >>> loss = JointLoss([head.loss, IntraLoss()], weights=[1.0, 1.0])
    """

    def __init__(self, losses, weights=None, name: str = "joint_loss",
                 reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        losses = [keras.saving.deserialize_keras_object(x) if isinstance(x, dict) else x
                  for x in losses]
        if not losses or not all(isinstance(x, keras.losses.Loss) for x in losses):
            raise ValueError(
                "`losses` must be a non-empty list of keras.losses.Loss instances. "
                f"Received: losses={losses!r}"
            )
        weights = [1.0] * len(losses) if weights is None else [float(w) for w in weights]
        if len(weights) != len(losses):
            raise ValueError(
                f"`weights` must hold one float per loss ({len(losses)}). Received: "
                f"weights={weights}"
            )
        self.losses = losses
        self.weights = weights

    def __call__(self, y_true, y_pred, sample_weight=None):
        total = None
        for loss, weight in zip(self.losses, self.weights, strict=True):
            value = weight * loss(y_true, y_pred, sample_weight=sample_weight)
            total = value if total is None else total + value
        return total

    def call(self, y_true, y_pred):  # pragma: no cover - __call__ does the work
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "weights": self.weights,
                "losses": [keras.saving.serialize_keras_object(x) for x in self.losses]}
