"""Triplet mining on a pairwise distance matrix, without a (B, B, B) triplet tensor.

Two exact paths, chosen at run time by :func:`mine`:

* P x K batches (every anchor has at most ``max_positives`` positives): each anchor's positives
  are gathered into a (B, P) block from the labels, and every rule is one fused (B, P, B)
  compare-and-count, O(B^2 P) time, O(B^2) memory.
* any batch: each anchor's negative distances are sorted once, and the negatives that fall below
  a threshold (for example ``d_ap + margin``) are counted by a batched binary search, their
  distances summed through a prefix sum, O(B^2 log B).

Static shapes, masks instead of boolean indexing: all of it compiles under XLA.

Every rule chooses its triplets on constant distances and returns :class:`Weights`, so the
loss is linear in the distances (one (B, B) multiply backward). :func:`mine` returns a
:class:`Mined` triple: the sum of the per-triplet losses, the number of terms with a loss > 0,
and the number of terms the rule selected; the loss divides the first by one of the other two.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from keras import ops

from keras_facemargin.ops.distances import label_masks

#: the mining rules of :class:`keras_facemargin.losses.TripletLoss`.
MINING = ("all", "hard", "semihard", "semihard_all")


class Mined(NamedTuple):
    """What :func:`mine` returns: ``loss_sum`` (scalar), ``num_nonzero`` and ``num_terms``."""

    loss_sum: object
    num_nonzero: object
    num_terms: object


class Weights(NamedTuple):
    """A rule's choice as constants: ``loss_sum = sum(weights * dist) + margin * nonzero``.

    Every selected triplet (a, p, n) adds ``d_ap + margin - d_an``: +1 to ``weights[a, p]``,
    -1 to ``weights[a, n]``. Computing the choice on constants and the loss as this linear form
    keeps the backward pass one (B, B) multiply, whichever rule and path chose the triplets.
    """

    weights: object  # (B, B)
    nonzero: object  # triplets with a loss > 0
    total: object  # triplets (or pairs) the rule selected


class SortedRows(NamedTuple):
    values: object  # (B, B): row a holds the masked distances of a ascending, then padding
    count: object  # (B,) int32: number of masked entries of each row
    order: object  # (B, B) int32 or None: the column each sorted value came from


def sort_masked(dist, mask, with_order: bool = False) -> SortedRows:
    """Sort each row's distances where ``mask`` holds (the others padded after them)."""
    masked = ops.where(mask, dist, ops.max(dist) + 1.0)
    order = ops.cast(ops.argsort(masked, axis=1), "int32") if with_order else None
    values = (ops.take_along_axis(masked, order, axis=1) if with_order
              else ops.sort(masked, axis=1))
    return SortedRows(values, ops.sum(ops.cast(mask, "int32"), axis=1), order)


def count_below(rows: SortedRows, queries, inclusive: bool):
    """Per row, how many masked distances lie below each query (``<``, or ``<=`` if inclusive).

    A binary search of ceil(log2(B + 1)) steps over the sorted rows, as a loop: unrolled, XLA
    kept every step's (B, M) bounds alive (at B = 1024 the sort path's temporary memory was 76 MB
    instead of 42, and it ran 1.2-2x slower).

    Args:
        rows: the output of :func:`sort_masked`.
        queries: (B, M) thresholds, row a searched in row a of ``rows``.
        inclusive: count ``d <= q`` instead of ``d < q``.

    Returns:
        (B, M) int32 counts in [0, count[a]].
    """
    values = rows.values
    static_width = values.shape[1]
    width = static_width if static_width is not None else ops.shape(values)[1]
    lo = ops.zeros_like(queries, dtype="int32")
    hi = ops.broadcast_to(rows.count[:, None], ops.shape(queries))

    def step(_, bounds):
        lo, hi = bounds
        active = lo < hi
        mid = (lo + hi) // 2
        probe = ops.take_along_axis(values, ops.minimum(mid, width - 1), axis=1)
        below = probe <= queries if inclusive else probe < queries
        right = ops.logical_and(active, below)
        left = ops.logical_and(active, ops.logical_not(below))
        return ops.where(right, mid + 1, lo), ops.where(left, mid, hi)

    if static_width is not None:
        steps = max(1, math.ceil(math.log2(static_width + 1)))
    else:  # batch size known only at run time (one spare step against float rounding)
        steps = ops.cast(ops.ceil(ops.log2(ops.cast(width, "float32") + 1.0)), "int32") + 1
    lo, _ = ops.fori_loop(0, steps, step, (lo, hi))
    return lo


def _float(x):
    return ops.cast(x, "float32")


def _masked(mask, counts):
    return ops.where(mask, counts, ops.zeros_like(counts))


def sorted_all(dist, labels, margin: float) -> Weights:
    """Batch-all on sorted rows: every valid triplet, loss ``relu(d_ap - d_an + margin)``.

    ``nonzero`` counts the triplets with ``d_an < d_ap + margin``; ``total`` all valid triplets.
    """
    positive, negative = label_masks(labels)
    neg, pos = sort_masked(dist, negative), sort_masked(dist, positive)
    below = _masked(positive, count_below(neg, dist + margin, inclusive=False))  # per (a, p)
    # per (a, n): the positives with d_ap > d_an - margin
    above = _masked(negative, pos.count[:, None] - count_below(pos, dist - margin, True))
    total = ops.sum(_float(positive) * _float(neg.count)[:, None])
    return Weights(_float(below) - _float(above), ops.sum(_float(below)), total)


def sorted_semihard_all(dist, labels, margin: float) -> Weights:
    """pytorch-metric-learning's semi-hard rule: every triplet with ``0 < d_an - d_ap <= m``.

    Their loss is ``d_ap + m - d_an`` (0 only where ``d_an - d_ap == m``).
    """
    positive, negative = label_masks(labels)
    neg, pos = sort_masked(dist, negative), sort_masked(dist, positive)
    lower = count_below(neg, dist, inclusive=True)
    per_pair = _masked(positive, ops.maximum(count_below(neg, dist + margin, False) - lower, 0))
    selected = _masked(positive, ops.maximum(count_below(neg, dist + margin, True) - lower, 0))
    # per (a, n): the positives with d_an - margin < d_ap < d_an
    per_negative = _masked(negative, ops.maximum(
        count_below(pos, dist, False) - count_below(pos, dist - margin, True), 0))
    return Weights(_float(per_pair) - _float(per_negative), ops.sum(_float(per_pair)),
                   ops.sum(_float(selected)))


def sorted_semihard(dist, labels, margin: float) -> Weights:
    """FaceNet / tensorflow-addons semi-hard: one negative per anchor-positive pair.

    For each (a, p): the closest negative farther than the positive (``d_an > d_ap``); if there
    is none, the farthest negative. Loss ``relu(d_ap - d_an + margin)``; ``total`` counts the
    anchor-positive pairs (that have a negative at all).
    """
    positive, negative = label_masks(labels)
    neg = sort_masked(dist, negative, with_order=True)
    inside = count_below(neg, dist, inclusive=True)
    last = ops.maximum(neg.count[:, None] - 1, 0)
    index = ops.where(inside < neg.count[:, None], inside, last)
    chosen = ops.take_along_axis(neg.values, index, axis=1)
    pairs = ops.logical_and(positive, (neg.count > 0)[:, None])
    active = _float(ops.logical_and(pairs, dist - chosen + margin > 0))
    column = ops.take_along_axis(neg.order, index, axis=1)
    weights = active - _pair_weights(column, active, ops.shape(dist))
    return Weights(weights, ops.sum(active), ops.sum(_float(pairs)))


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
    return Weights(weights, ops.sum(_float(active)), ops.sum(_float(keep)))


#: the sort-based path of each rule but "hard": exact for any batch.
SORTED = {"all": sorted_all, "semihard": sorted_semihard, "semihard_all": sorted_semihard_all}


def _pair_weights(column, weight, shape):
    """Scatter (B, M) weights at columns ``column`` of their rows into a (B, B) matrix."""
    rows = ops.broadcast_to(ops.arange(shape[0], dtype="int32")[:, None], ops.shape(column))
    index = ops.stack([ops.reshape(rows, (-1,)), ops.reshape(column, (-1,))], axis=1)
    return ops.scatter(index, ops.reshape(ops.cast(weight, "float32"), (-1,)), shape)


# --- fast path: few positives per anchor -----------------------------------------------------
# With P x K sampling each anchor has K - 1 positives. Gathering them into a (B, P) block makes
# every rule a few fused (B, P, B) compare-and-reduce passes, far cheaper on CPU than sorting B
# rows. The block comes from the labels alone (a sort of B labels, no (B, B) top_k).
#
# How the passes are written matters on XLA's CPU backend, which emits a reduction over the
# last axis as a scalar loop (about 3 ns an element here) but vectorizes elementwise code:
# - reductions over the B negatives fold FOLD slices of the row together elementwise first,
#   then reduce the B / FOLD that are left (:func:`reduce_last`);
# - sums over the P positives are P unrolled elementwise terms (:func:`sum_over_positives`).
# At B = 4096, P = 4 the FaceNet semi-hard choice went from 440 ms to about 120 ms this way.
# Both are exact: min/max in any order, and integer counts.

#: slices of a row combined elementwise before the last-axis reduction of :func:`reduce_last`.
FOLD = 8

_REDUCE = {"min": (ops.minimum, ops.min), "max": (ops.maximum, ops.max),
           "sum": (ops.add, ops.sum)}


def reduce_last(x, kind: str):
    """``min``/``max``/``sum`` of ``x`` over its last axis, in a form XLA's CPU backend vectorizes.

    The last axis is cut into :data:`FOLD` equal slices, combined elementwise, and the
    remaining B / FOLD columns reduced. Min and max are exact in any order; use integer ``x``
    for exact sums. Falls back to the plain reduction for a dynamic or indivisible width.
    """
    combine, reduce = _REDUCE[kind]
    width = x.shape[-1]
    if width is None or width % FOLD or width < 2 * FOLD:
        return reduce(x, axis=-1)
    step = width // FOLD
    acc = x[..., :step]
    for i in range(1, FOLD):
        acc = combine(acc, x[..., i * step:(i + 1) * step])
    return reduce(acc, axis=-1)


def tie_share(hit, active, dtype):
    """Each active choice's unit weight split over its ``hit`` entries (last axis), as the
    gradients of ``tf.reduce_min``/``reduce_max`` split it over tied extremes; 0 if inactive."""
    ties = reduce_last(ops.cast(hit, "int32"), "sum")
    return ops.where(active, 1.0 / ops.cast(ops.maximum(ties, 1), dtype), 0.0)


def sum_over_positives(term, width: int):
    """``sum_p term(p)`` for p < ``width``: (B, B) terms added elementwise (P is static)."""
    total = term(0)
    for p in range(1, width):
        total = total + term(p)
    return total


class LabelGroups(NamedTuple):
    order: object  # (B,) int32: argsort of the labels
    first: object  # (B,) int32: position of a's label group in ``order``
    size: object  # (B,) int32: size of a's label group (a included)
    rank: object  # (B,) int32: position of a inside its group


def label_groups(labels) -> LabelGroups:
    """Group a batch by label in O(B log B): a sort and segment sums, no (B, B) comparison."""
    n = ops.shape(labels)[0]
    order = ops.cast(ops.argsort(labels), "int32")
    ordered = ops.take(labels, order)
    is_start = ops.concatenate([ops.ones((1,), "int32"),
                                ops.cast(ops.not_equal(ordered[1:], ordered[:-1]), "int32")])
    group = ops.cumsum(is_start) - 1
    position = ops.arange(n, dtype="int32")
    start = ops.segment_max(ops.where(is_start > 0, position, 0), group, num_segments=n)
    size = ops.segment_sum(ops.ones_like(position), group, num_segments=n)
    inverse = ops.cast(ops.argsort(order), "int32")  # where each sample sits in ``order``
    first = ops.take(ops.take(start, group), inverse)
    return LabelGroups(order, first, ops.take(ops.take(size, group), inverse), inverse - first)


def _positive_block(dist, groups: LabelGroups, width: int):
    """(B, P) distances of each anchor's positives (first ``width`` of its group), validity."""
    n = ops.shape(dist)[0]
    slot = ops.arange(width, dtype="int32")[None, :]
    skip_self = slot + ops.cast(slot >= groups.rank[:, None], "int32")
    column = ops.take(groups.order, ops.minimum(groups.first[:, None] + skip_self, n - 1))
    valid = slot < (groups.size - 1)[:, None]
    return ops.take_along_axis(dist, column, axis=1), valid, column


def mine_few_positives(rule: str, dist, labels, margin: float, width: int) -> Weights:
    """The rule ``rule`` exactly, assuming no anchor has more than ``width`` positives."""
    groups = label_groups(labels)
    dtype = dist.dtype
    inf = ops.cast(float("inf"), dtype)
    d_ap, valid, column = _positive_block(dist, groups, width)  # (B, P)
    const = ops.stop_gradient(dist)
    is_negative = ops.not_equal(labels[:, None], labels[None, :])
    d_an = ops.where(is_negative, const, inf)  # (B, B); +inf: not a negative
    num_negatives = ops.cast(ops.shape(labels)[0] - groups.size, "float32")
    low = ops.where(valid, ops.stop_gradient(d_ap), inf)  # (B, P); +inf: no pair
    col = ops.arange(ops.shape(dist)[0], dtype="int32")[None, :]

    def per_pair(values, p):  # (B, P) values put at the positives' columns: (B, B)
        return ops.where(col == column[:, p:p + 1], values[:, p:p + 1], ops.zeros_like(dist))

    if rule == "semihard":
        # the negative of (a, p): the closest farther than p, else the farthest one
        closest = reduce_last(ops.where(d_an[:, None, :] > low[:, :, None], d_an[:, None, :],
                                        inf), "min")
        farthest = reduce_last(ops.where(is_negative, const, -inf), "max")[:, None]
        target = ops.where(closest < inf, closest, farthest)
        pairs = ops.logical_and(valid, (num_negatives > 0)[:, None])
        active = ops.logical_and(pairs, low - target + margin > 0)
        # the loss is linear in the chosen distances: weight the negatives equal to the target;
        # tied negatives share the pair's gradient, as tf.reduce_min's does
        target = ops.where(active, target, -inf)  # -inf: an inactive pair hits nothing
        share = tie_share(d_an[:, None, :] == target[:, :, None], active, dtype)
        active = ops.cast(active, dtype)
        weights = sum_over_positives(lambda p: per_pair(active, p) - ops.where(
            d_an == target[:, p:p + 1], share[:, p:p + 1], 0.0), width)
        return Weights(weights, ops.sum(ops.cast(active, "float32")),
                       ops.sum(ops.cast(pairs, "float32")))
    high = ops.where(valid, low + margin, -inf)  # -inf: no pair, nothing below
    if rule == "semihard_all":  # low < d_an < high counts; d_an == high is selected with loss 0
        def chosen(d, lo, hi):
            return ops.logical_and(d > lo, d < hi)

        selected = ops.logical_and(d_an[:, None, :] > low[:, :, None],
                                   d_an[:, None, :] <= high[:, :, None])
        total = ops.cast(ops.sum(reduce_last(ops.cast(selected, "int32"), "sum")), "float32")
    else:  # batch-all: every negative below high counts, every valid triplet is a term
        def chosen(d, lo, hi):
            return d < hi

        total = ops.sum(ops.cast(valid, "float32") * num_negatives[:, None])
    # sum_{a,p,n} [chosen] (d_ap + m - d_an) = sum count_p d_ap + m N - sum count_n d_an
    count_p = reduce_last(ops.cast(chosen(d_an[:, None, :], low[:, :, None], high[:, :, None]),
                                   "int32"), "sum")
    count_p = ops.cast(count_p, dtype)  # (B, P)
    weights = sum_over_positives(lambda p: per_pair(count_p, p) - ops.cast(
        chosen(d_an, low[:, p:p + 1], high[:, p:p + 1]), dtype), width)
    return Weights(weights, ops.cast(ops.sum(count_p), "float32"), total)


#: widths of the fast path, tried smallest first (a switch picks the first that fits).
WIDTHS = (2, 4, 8, 16, 32)


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
