"""How a mining rule hands back its choice: constant weights on the distance matrix.

Every rule, whichever family computes it, chooses its triplets on constant (stop-gradient)
distances and returns :class:`Weights`. The loss is then the linear form
``sum(weights * dist) + margin * nonzero``, so no mining path is differentiated through: the
backward pass is one (B, B) multiply. Where a rule picks an extreme (the hardest positive, the
closest negative) and several distances tie, :func:`tie_share` splits the choice's unit weight
over them, as the gradients of ``tf.reduce_min``/``reduce_max`` do.
"""

from __future__ import annotations

from typing import NamedTuple

from keras import ops

from keras_facemargin.ops.mining.reductions import reduce_last


class Weights(NamedTuple):
    """A rule's choice as constants: ``loss_sum = sum(weights * dist) + margin * nonzero``.

    Every selected triplet (a, p, n) adds ``d_ap + margin - d_an``: +1 to ``weights[a, p]``,
    -1 to ``weights[a, n]``. Computing the choice on constants and the loss as this linear form
    keeps the backward pass one (B, B) multiply, whichever rule and path chose the triplets.
    """

    weights: object  # (B, B)
    nonzero: object  # triplets with a loss > 0
    total: object  # triplets (or pairs) the rule selected


def tie_share(hit, active, dtype):
    """Each active choice's unit weight split over its ``hit`` entries (last axis), as the
    gradients of ``tf.reduce_min``/``reduce_max`` split it over tied extremes; 0 if inactive."""
    ties = reduce_last(ops.cast(hit, "int32"), "sum")
    return ops.where(active, 1.0 / ops.cast(ops.maximum(ties, 1), dtype), 0.0)
