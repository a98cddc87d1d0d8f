"""The ArcFace paper's add-on losses on a margin head's output: Intra-loss and Inter-loss."""

from __future__ import annotations

import math
from typing import Any

from keras import ops

from keras_facemargin._api import register
from keras_facemargin._checks import nan_where_invalid, prepare_labels
from keras_facemargin.losses._context import ContextLoss
from keras_facemargin.ops.cosine import l2_normalize, safe_acos


@register
class IntraLoss(ContextLoss):
    """Intra-loss (ArcFace paper): the angle between each embedding and its class centre.

    Formula:
        loss_i = theta_{y_i} / pi,   theta_{y_i} = arccos(cos(x_i, W_{y_i}))

    ``y_pred`` is a margin head's output called without labels (the cosine matrix), ``y_true``
    the integer class ids. Add it to the head's loss with :class:`JointLoss`
    (``JointLoss([head.loss, IntraLoss()], weights=[1.0, 1.0])``: "ArcFace + Intra").

    Args:
        reduction, name, dtype: as for any ``keras.losses.Loss``.

    Returns:
        Per-sample angles / pi, in [0, 1].

    Example:

    >>> import numpy as np
    >>> cos = np.array([[1.0, 0.0], [0.0, -1.0]], "float32")
    >>> float(IntraLoss()(np.array([0, 1]), cos))   # (0 + pi) / pi / 2
    0.5
    """

    def __init__(self, reduction="sum_over_batch_size", name: str = "intra_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        context = self.context() or {}
        cos = context.get("cosine", y_pred)  # a softmax head outputs W.x: use its cosines
        num_classes = int(cos.shape[-1])
        labels = prepare_labels(y_true, num_classes, name="y_true")
        index = ops.clip(labels, 0, num_classes - 1)[:, None]
        cos_y = ops.take_along_axis(ops.cast(cos, "float32"), index, axis=1)[:, 0]
        return nan_where_invalid(safe_acos(cos_y) / math.pi, labels, num_classes)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "reduction": self.reduction}


@register
class InterLoss(ContextLoss):
    """Inter-loss (ArcFace paper): minus the mean angle between W_{y_i} and the other centres.

    Formula:
        loss_i = - 1 / (pi (n - 1)) sum_{j != y_i} arccos(<W_{y_i}, W_j> / (|W_{y_i}| |W_j|))

    Minimizing it pushes the class centres of the batch's identities apart. ``y_pred`` must be
    the output of a margin head (one centre per class) inside the same model: the loss reads
    the head's class centres from it.

    Args:
        reduction, name, dtype: as for any ``keras.losses.Loss``.

    Returns:
        Per-sample values in [-1, 0].

    Example:

    >>> from keras_facemargin import ArcMarginLayer, JointLoss
    >>> head = ArcMarginLayer(num_classes=10)
    >>> loss = JointLoss([head.loss, InterLoss()], weights=[1.0, 1.0])  # "ArcFace + Inter"
    """

    def __init__(self, reduction="sum_over_batch_size", name: str = "inter_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        if self.building() and self.context() is None:
            return ops.zeros_like(y_pred[:, 0])
        kernel = self.require_context("kernel", "a margin head (e.g. ArcMarginLayer)")
        if self.context().get("sub_centers", 1) != 1:
            raise ValueError("InterLoss needs one centre per class; the head has sub-centres.")
        centres = l2_normalize(ops.transpose(ops.cast(kernel, "float32")), axis=0)  # (D, C)
        num_classes = int(centres.shape[1])
        labels = prepare_labels(y_true, num_classes, name="y_true")
        own = ops.take(centres, ops.clip(labels, 0, num_classes - 1), axis=1)
        cos = ops.matmul(ops.transpose(own), centres)  # (B, C)
        others = 1.0 - ops.one_hot(labels, num_classes, dtype=cos.dtype)
        angles = ops.sum(safe_acos(cos) * others, axis=1)
        return nan_where_invalid(-angles / (math.pi * max(num_classes - 1, 1)), labels,
                                 num_classes)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "reduction": self.reduction}
