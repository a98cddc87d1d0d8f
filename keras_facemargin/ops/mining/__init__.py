"""Triplet mining on a pairwise distance matrix, without a (B, B, B) triplet tensor.

:func:`mine` applies a rule of :data:`MINING` and returns a :class:`Mined` triple: the sum of
the per-triplet losses, the number of terms with a loss > 0, and the number of terms the rule
selected; the loss divides the first by one of the other two. It picks one of two exact
families at run time (``ops.switch``; both are compiled):

* :mod:`~keras_facemargin.ops.mining.positive_block`: P x K batches (every anchor has at most
  ``max_positives`` positives). Each anchor's positives are gathered into a (B, P) block from
  the labels, and every rule is one fused (B, P, B) compare-and-count, O(B^2 P) time,
  O(B^2) memory.
* :mod:`~keras_facemargin.ops.mining.sorted_rows`: any batch. Each anchor's negative distances
  are sorted once, and the negatives that fall below a threshold (for example
  ``d_ap + margin``) are counted by a batched binary search, O(B^2 log B).

Batch-hard (:mod:`~keras_facemargin.ops.mining.hard`) is one masked max and min per row and
needs neither. What the rules share: :mod:`~keras_facemargin.ops.mining.weights` (every rule
chooses its triplets on constant distances and returns :class:`Weights`, so the loss is linear
in the distances: one (B, B) multiply backward) and
:mod:`~keras_facemargin.ops.mining.reductions` (reductions XLA's CPU backend vectorizes).

Static shapes, masks instead of boolean indexing: all of it compiles under XLA.
"""

from __future__ import annotations

from typing import NamedTuple

from keras import ops

from keras_facemargin.ops.mining.hard import mine_hard
from keras_facemargin.ops.mining.positive_block import label_groups, mine_few_positives
from keras_facemargin.ops.mining.reductions import FOLD, reduce_last
from keras_facemargin.ops.mining.sorted_rows import SORTED
from keras_facemargin.ops.mining.weights import Weights, tie_share

__all__ = ["FOLD", "MINING", "WIDTHS", "Mined", "Weights", "mine", "reduce_last", "tie_share"]

#: the mining rules of :class:`keras_facemargin.losses.TripletLoss`.
MINING = ("all", "hard", "semihard", "semihard_all")

#: widths of the few-positives path, tried smallest first (a switch picks the first that fits).
WIDTHS = (2, 4, 8, 16, 32)


class Mined(NamedTuple):
    """What :func:`mine` returns: ``loss_sum`` (scalar), ``num_nonzero`` and ``num_terms``."""

    loss_sum: object
    num_nonzero: object
    num_terms: object


def mine(rule: str, dist, labels, margin: float, max_positives: int | None = 32) -> Mined:
    """Apply the mining ``rule``; exact for any batch.

    When every anchor has at most ``max_positives`` positives (P x K sampling with
    K <= max_positives + 1), a fused (B, P, B) path runs with P the smallest of
    :data:`WIDTHS` (or ``max_positives``) that holds the batch's largest positive count;
    otherwise the sort-based path. All paths are compiled; ``ops.switch`` runs one of them.
    Each path chooses the triplets on constants (:class:`Weights`); the loss is then linear in
    ``dist``, so no path is differentiated through (fast to compile, one (B, B) backward).

    Args:
        rule: one of :data:`MINING`.
        dist: (B, B) distances.
        labels: (B,) integer labels.
        margin: the triplet margin.
        max_positives: largest P of the fast path; `None` or 0 always sorts.

    Returns:
        A :class:`Mined`.
    """
    if rule == "hard" or not max_positives:  # one path: no switch
        choose = mine_hard if rule == "hard" else SORTED[rule]
        return _linear_loss(choose(ops.stop_gradient(dist), labels, margin), dist, margin)
    batch = dist.shape[1]
    widths = sorted({w for w in WIDTHS if w < max_positives} | {max_positives})
    if batch is not None:
        widths = sorted({min(w, max(int(batch) - 1, 1)) for w in widths})
    groups = label_groups(labels)
    most = ops.max(groups.size) - 1
    index = sum(ops.cast(most > w, "int32") for w in widths)

    def fast(width):
        return lambda d, y: tuple(mine_few_positives(rule, d, y, margin, width))

    def sort_based(d, y):
        return tuple(SORTED[rule](d, y, margin))

    branches = [fast(w) for w in widths] + [sort_based]
    chosen = Weights(*ops.switch(index, branches, ops.stop_gradient(dist), labels))
    return _linear_loss(chosen, dist, margin)


def _linear_loss(chosen: Weights, dist, margin: float) -> Mined:
    return Mined(ops.sum(chosen.weights * dist) + margin * chosen.nonzero, chosen.nonzero,
                 chosen.total)
