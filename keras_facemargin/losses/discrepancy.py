"""DiscFace's discrepancy loss (Kim et al., ACCV 2020)."""

from __future__ import annotations

from typing import Any

from keras import ops

from keras_facemargin._api import register
from keras_facemargin._checks import nan_where_invalid, prepare_labels
from keras_facemargin.losses._context import ContextLoss
from keras_facemargin.ops.cosine import l2_normalize, safe_norm


@register
class DiscrepancyLoss(ContextLoss):
    """DiscFace discrepancy loss: align every displacement vector with one learnable basis.

    Formula:
        eps_i  = x_i / |x_i| - W_{y_i} / |W_{y_i}|
        loss_i = || eps_i - xi ||_2,   xi the head's learnable displacement basis
        L_total = L_softmax + lambda * mean_i loss_i

    ``y_pred`` must be the output of a head built with ``displacement_basis=True`` (which owns
    ``xi``, trained by the optimizer with the rest of the model). Combine with the head's loss
    through :class:`JointLoss`: ``JointLoss([head.loss, DiscrepancyLoss()], [1.0, lambda])``.

    Args:
        reduction, name, dtype: as for any ``keras.losses.Loss``.

    Returns:
        Per-sample discrepancies.

    Example:

    >>> from keras_facemargin import SoftmaxLayer, JointLoss
    >>> head = SoftmaxLayer(num_classes=10, displacement_basis=True)
    >>> loss = JointLoss([head.loss, DiscrepancyLoss()], weights=[1.0, 0.1])
    """

    def __init__(self, reduction="sum_over_batch_size", name: str = "discrepancy_loss",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        if self.building() and self.context() is None:
            return ops.zeros_like(y_pred[:, 0])
        xi = self.require_context(
            "xi", "a head built with displacement_basis=True (e.g. SoftmaxLayer(..., "
                  "displacement_basis=True))")
        context = self.context()
        kernel = ops.transpose(ops.cast(context["kernel"], "float32"))  # (D, C)
        num_classes = int(kernel.shape[1])
        labels = prepare_labels(y_true, num_classes, name="y_true")
        x = l2_normalize(ops.cast(context["embeddings"], "float32"))
        own = ops.take(kernel, ops.clip(labels, 0, num_classes - 1), axis=1)
        w_y = l2_normalize(ops.transpose(own))
        value = safe_norm(x - w_y - ops.cast(xi, "float32")[None, :], axis=-1)
        return nan_where_invalid(value, labels, num_classes)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "reduction": self.reduction}
