"""Batch-hard mining: per anchor the farthest positive and the closest negative.

One masked max and one masked min per row, exact for any batch, so this rule needs neither the
sorted-rows path nor the few-positives block: :func:`keras_facemargin.ops.mining.mine` calls it
directly.
"""

from __future__ import annotations

from keras import ops

from keras_facemargin.ops.distances import label_masks
from keras_facemargin.ops.mining.reductions import reduce_last
from keras_facemargin.ops.mining.weights import Weights, tie_share


def mine_hard(dist, labels, margin: float) -> Weights:
    """Batch-hard: per anchor the farthest positive and the closest negative.

    Anchors lacking a positive or a negative are dropped (pytorch-metric-learning's
    ``BatchHardMiner``); ``total`` counts the anchors kept. Tied hardest distances share the
    anchor's gradient equally, as the gradients of ``tf.reduce_max``/``reduce_min`` do.
    """
    positive, negative = label_masks(labels)
    pos_rows = ops.where(positive, dist, ops.zeros_like(dist))
    hardest_pos = reduce_last(pos_rows, "max")
    pad = ops.max(reduce_last(dist, "max")) + 1.0
    neg_rows = ops.where(negative, dist, ops.full_like(dist, pad))
    hardest_neg = reduce_last(neg_rows, "min")
    has_pos = reduce_last(ops.cast(positive, "int32"), "max") > 0
    has_neg = reduce_last(ops.cast(negative, "int32"), "max") > 0
    keep = ops.logical_and(has_pos, has_neg)
    active = ops.logical_and(keep, hardest_pos - hardest_neg + margin > 0)

    def share(rows, hardest, mask):  # each anchor's unit weight split over its tied hardest
        hit = rows == hardest[:, None]
        weight = tie_share(hit, active, dist.dtype)[:, None]
        return ops.where(ops.logical_and(hit, mask), weight, 0.0)

    weights = share(pos_rows, hardest_pos, positive) - share(neg_rows, hardest_neg, negative)
    return Weights(weights, ops.sum(ops.cast(active, "float32")),
                   ops.sum(ops.cast(keep, "float32")))
