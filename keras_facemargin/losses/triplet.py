"""Triplet loss (FaceNet) with batch-all, batch-hard and semi-hard mining."""

from __future__ import annotations

from typing import Any

from keras import ops

from keras_facemargin._api import register
from keras_facemargin._checks import check_choice, check_int, check_number
from keras_facemargin.losses._pairs import PairLoss
from keras_facemargin.ops.mining import MINING, mine

AVERAGES = ("nonzero", "all")
_DEFAULT_AVERAGE = {"all": "nonzero", "hard": "nonzero", "semihard": "all",
                    "semihard_all": "nonzero"}


@register
class TripletLoss(PairLoss):
    """Triplet loss on a batch of labelled embeddings, with online mining.

    Formula (per triplet of anchor a, positive p of a's identity, negative n of another):
        l(a, p, n) = max(d(a, p) - d(a, n) + margin, 0)

    Mining rules:
        ``"semihard"`` (FaceNet; tensorflow-addons' ``TripletSemiHardLoss``): for each
            anchor-positive pair, the closest negative farther than the positive,
            ``d(a, n) > d(a, p)``; if there is none, the farthest negative. Averaged over the
            anchor-positive pairs.
        ``"semihard_all"`` (pytorch-metric-learning's ``TripletMarginMiner("semihard")``): every
            triplet with ``0 < d(a, n) - d(a, p) <= margin``; averaged over the triplets with a
            loss > 0.
        ``"all"`` (batch-all): every valid triplet, averaged over those with a loss > 0.
        ``"hard"`` (batch-hard): per anchor the farthest positive and the closest negative;
            averaged over the anchors with a loss > 0 (pml's ``BatchHardMiner`` + reducer).

    Distances: ``"squared_l2"`` (FaceNet), ``"l2"`` or ``"angular"`` (``arccos`` of the cosine,
    in radians: the ArcFace paper's triplet-angle loss ``arccos(x_p, x) + m <= arccos(x_n, x)``).

    Computed without the (B, B, B) tensor (see ``max_positives``); compiles under XLA. A batch with
    no valid triplet (e.g. a single identity) gives loss 0 and zero gradients.

    Args:
        margin: ``margin`` >= 0, in the unit of the distance. Defaults to `0.2` (FaceNet).
        distance: ``"squared_l2"``, ``"l2"`` or ``"angular"``. Defaults to `"squared_l2"`.
        mining: ``"semihard"``, ``"semihard_all"``, ``"all"`` or ``"hard"``.
            Defaults to `"semihard"`.
        normalize: L2-normalize the embeddings first. Defaults to `True`.
        average: ``"nonzero"`` (mean over the terms with a loss > 0) or ``"all"`` (mean over
            every selected term); `None` picks the rule's own convention (above).
        global_mining: under ``tf.distribute``, mine over the global batch (all replicas'
            embeddings gathered) instead of each replica's own. Defaults to `False`.
        max_positives: speed only, never the result: batches whose anchors have at most this
            many positives (P x K sampling, K <= 33) take a fused O(B^2 K) path; others sort
            each anchor's negatives (O(B^2 log B)). `0` always sorts. Defaults to `32`.
        reduction, name, dtype: as for any ``keras.losses.Loss``.

    Returns:
        The scalar loss (Keras reduces the per-sample broadcast of it).

    Example:

    >>> import numpy as np
    >>> from keras_facemargin import TripletLoss
    >>> x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    >>> y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    >>> float(TripletLoss(margin=0.2, mining="all")(y, x)) >= 0
    True
    """

    def __init__(self, margin: float = 0.2, distance: str = "squared_l2",
                 mining: str = "semihard", normalize: bool = True, average: str | None = None,
                 global_mining: bool = False, max_positives: int = 32,
                 reduction="sum_over_batch_size", name: str | None = None, dtype=None):
        super().__init__(distance, normalize, global_mining, reduction, name, dtype)
        self.max_positives = check_int("max_positives", max_positives, low=0)
        self.margin = check_number("margin", margin, low=0.0)
        self.mining = check_choice("mining", mining, MINING)
        self.average = None if average is None else check_choice("average", average, AVERAGES)

    def pair_loss(self, dist, labels):
        mined = mine(self.mining, dist, labels, self.margin, self.max_positives)
        average = self.average or _DEFAULT_AVERAGE[self.mining]
        count = mined.num_nonzero if average == "nonzero" else mined.num_terms
        return mined.loss_sum / ops.maximum(count, 1.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "margin": self.margin, "mining": self.mining,
                "average": self.average, "max_positives": self.max_positives}
