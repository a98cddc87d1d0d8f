"""Contrastive loss (Hadsell, Chopra and LeCun, 2006) on all pairs of a batch."""

from __future__ import annotations

from typing import Any

from keras import ops

from keras_facemargin._api import register
from keras_facemargin._checks import check_choice, check_number
from keras_facemargin.losses._pairs import PairLoss
from keras_facemargin.ops.distances import label_masks

AVERAGES = ("nonzero", "all")


@register
class ContrastiveLoss(PairLoss):
    """Contrastive loss: pull same-identity pairs together, push others past a margin.

    Formula (over all ordered pairs i != j of the batch, ``p = 2`` if ``squared`` else 1):
        positive pair: max(d_ij - pos_margin, 0)^p
        negative pair: max(neg_margin - d_ij, 0)^p
        loss = mean(positive terms) + mean(negative terms)

    With ``average="nonzero"`` each mean is over the terms > 0 (pytorch-metric-learning's
    ``ContrastiveLoss`` with its default reducer); with ``"all"`` over every pair of that kind.
    A batch without positive (or negative) pairs contributes 0 for that part.

    Args:
        pos_margin: distance below which positive pairs cost nothing, >= 0. Defaults to `0.0`.
        neg_margin: distance above which negative pairs cost nothing, >= 0. Defaults to `1.0`.
        distance: ``"l2"``, ``"squared_l2"`` or ``"angular"``. Defaults to `"l2"`.
        squared: square each hinge (Hadsell et al.'s form). Defaults to `False` (pml).
        normalize: L2-normalize the embeddings first. Defaults to `True`.
        average: ``"nonzero"`` or ``"all"``. Defaults to `"nonzero"`.
        global_mining: under ``tf.distribute``, use all pairs of the global batch.
            Defaults to `False`.
        reduction, name, dtype: as for any ``keras.losses.Loss``.

    Returns:
        The scalar loss.

    Example:

    >>> import numpy as np
    >>> from keras_facemargin import ContrastiveLoss
    >>> x = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]], "float32")
    >>> float(ContrastiveLoss()(np.array([0, 0, 1]), x)) > 0
    True
    """

    def __init__(self, pos_margin: float = 0.0, neg_margin: float = 1.0, distance: str = "l2",
                 squared: bool = False, normalize: bool = True, average: str = "nonzero",
                 global_mining: bool = False, reduction="sum_over_batch_size",
                 name: str | None = None, dtype=None):
        super().__init__(distance, normalize, global_mining, reduction, name, dtype)
        self.pos_margin = check_number("pos_margin", pos_margin, low=0.0)
        self.neg_margin = check_number("neg_margin", neg_margin, low=0.0)
        self.squared = bool(squared)
        self.average = check_choice("average", average, AVERAGES)

    def _mean(self, terms, mask):
        terms = ops.where(mask, terms, ops.zeros_like(terms))
        if self.squared:
            terms = ops.square(terms)
        counted = ops.logical_and(mask, terms > 0) if self.average == "nonzero" else mask
        return ops.sum(terms) / ops.maximum(ops.sum(ops.cast(counted, terms.dtype)), 1.0)

    def pair_loss(self, dist, labels):
        positive, negative = label_masks(labels)
        return (self._mean(ops.relu(dist - self.pos_margin), positive)
                + self._mean(ops.relu(self.neg_margin - dist), negative))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pos_margin": self.pos_margin,
                "neg_margin": self.neg_margin, "squared": self.squared, "average": self.average}
