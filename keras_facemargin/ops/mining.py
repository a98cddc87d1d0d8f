"""Triplet mining on a pairwise distance matrix, in O(B^2 log B) time and O(B^2) memory.

Every rule here is computed without materialising the (B, B, B) triplet tensor: each anchor's
negative distances are sorted once, and the negatives that fall below a threshold (for example
``d_ap + margin``) are counted by a batched binary search, their distances summed through a
prefix sum. Static shapes, masks instead of boolean indexing: all of it compiles under XLA.

Each miner returns a :class:`Mined` triple: the sum of the per-triplet losses, the number of
terms with a loss > 0, and the number of terms the rule selected; the loss divides the first
by one of the other two.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from keras import ops

#: the mining rules of :class:`keras_facemargin.losses.TripletLoss`.
MINING = ("all", "hard", "semihard", "semihard_all")


class Mined(NamedTuple):
    """What a miner returns: ``loss_sum`` (scalar), ``num_nonzero`` and ``num_terms``."""

    loss_sum: object
    num_nonzero: object
    num_terms: object


class SortedNegatives(NamedTuple):
    values: object  # (B, B): row a holds a's negative distances ascending, then padding
    count: object  # (B,) int32: number of negatives of each anchor
    prefix: object  # (B, B + 1): prefix[a, k] = sum of the k smallest negative distances


def sort_negatives(dist, negative) -> SortedNegatives:
    """Sort each anchor's negative distances (non-negatives padded after them)."""
    pad = ops.stop_gradient(ops.max(dist)) + 1.0
    values = ops.sort(ops.where(negative, dist, pad), axis=1)
    count = ops.sum(ops.cast(negative, "int32"), axis=1)
    width = ops.shape(dist)[1]
    in_row = ops.arange(width, dtype="int32")[None, :] < count[:, None]
    cumulative = ops.cumsum(ops.where(in_row, values, ops.zeros_like(values)), axis=1)
    prefix = ops.concatenate([ops.zeros_like(cumulative[:, :1]), cumulative], axis=1)
    return SortedNegatives(values, count, prefix)


def count_below(negatives: SortedNegatives, queries, inclusive: bool):
    """Per anchor row, how many negatives lie below each query (``<``, or ``<=`` if inclusive).

    A binary search with a static number of steps (ceil(log2(B + 1))) over the sorted rows.

    Args:
        negatives: the output of :func:`sort_negatives`.
        queries: (B, M) thresholds, row a searched in anchor a's negatives.
        inclusive: count ``d <= q`` instead of ``d < q``.

    Returns:
        (B, M) int32 counts in [0, count[a]].
    """
    values = ops.stop_gradient(negatives.values)
    queries = ops.stop_gradient(queries)
    static_width = values.shape[1]
    width = static_width if static_width is not None else ops.shape(values)[1]
    lo = ops.zeros_like(queries, dtype="int32")
    hi = ops.broadcast_to(negatives.count[:, None], ops.shape(queries))

    def step(_, bounds):
        lo, hi = bounds
        active = lo < hi
        mid = (lo + hi) // 2
        probe = ops.take_along_axis(values, ops.minimum(mid, width - 1), axis=1)
        below = probe <= queries if inclusive else probe < queries
        right = ops.logical_and(active, below)
        left = ops.logical_and(active, ops.logical_not(below))
        return ops.where(right, mid + 1, lo), ops.where(left, mid, hi)

    if static_width is not None:  # unrolled: a fixed, small number of steps
        for i in range(max(1, math.ceil(math.log2(static_width + 1)))):
            lo, hi = step(i, (lo, hi))
    else:  # batch size known only at run time
        steps = ops.cast(ops.ceil(ops.log2(ops.cast(width, "float32") + 1.0)), "int32") + 1
        lo, hi = ops.fori_loop(0, steps, step, (lo, hi))
    return lo


def _prefix(negatives: SortedNegatives, counts):
    return ops.take_along_axis(negatives.prefix, counts, axis=1)


def _total(x, mask):
    return ops.sum(ops.where(mask, x, ops.zeros_like(x)))


def _count(mask):
    return ops.sum(ops.cast(mask, "float32"))


def mine_all(dist, positive, negative, margin: float) -> Mined:
    """Batch-all: every valid triplet, loss ``relu(d_ap - d_an + margin)``.

    ``num_nonzero`` counts the triplets with ``d_an < d_ap + margin``; ``num_terms`` all
    valid triplets.
    """
    neg = sort_negatives(dist, negative)
    threshold = dist + margin
    below = ops.where(positive, count_below(neg, threshold, inclusive=False), 0)
    per_pair = ops.cast(below, dist.dtype) * threshold - _prefix(neg, below)
    terms = ops.cast(positive, "float32") * ops.cast(neg.count[:, None], "float32")
    return Mined(_total(per_pair, positive), ops.sum(ops.cast(below, "float32")), ops.sum(terms))


def mine_semihard_all(dist, positive, negative, margin: float) -> Mined:
    """pytorch-metric-learning's semi-hard rule: every triplet with ``0 < d_an - d_ap <= m``.

    Their loss is ``d_ap + m - d_an`` (0 only where ``d_an - d_ap == m``).
    """
    neg = sort_negatives(dist, negative)
    threshold = dist + margin
    upper = ops.where(positive, count_below(neg, threshold, inclusive=False), 0)
    upper_incl = ops.where(positive, count_below(neg, threshold, inclusive=True), 0)
    lower = ops.where(positive, count_below(neg, dist, inclusive=True), 0)
    nonzero = ops.maximum(upper - lower, 0)
    per_pair = (ops.cast(nonzero, dist.dtype) * threshold
                - (_prefix(neg, ops.maximum(upper, lower)) - _prefix(neg, lower)))
    selected = ops.maximum(upper_incl - lower, 0)
    return Mined(_total(per_pair, positive), ops.sum(ops.cast(nonzero, "float32")),
                 ops.sum(ops.cast(selected, "float32")))


def mine_semihard(dist, positive, negative, margin: float) -> Mined:
    """FaceNet / tensorflow-addons semi-hard: one negative per anchor-positive pair.

    For each (a, p): the closest negative farther than the positive (``d_an > d_ap``); if there
    is none, the farthest negative. Loss ``relu(d_ap - d_an + margin)``; ``num_terms`` counts the
    anchor-positive pairs (that have a negative at all).
    """
    neg = sort_negatives(dist, negative)
    inside = count_below(neg, dist, inclusive=True)
    last = ops.maximum(neg.count[:, None] - 1, 0)
    index = ops.where(inside < neg.count[:, None], inside, last)
    chosen = ops.take_along_axis(neg.values, index, axis=1)
    pairs = ops.logical_and(positive, (neg.count > 0)[:, None])
    loss = ops.relu(dist - chosen + margin)
    return Mined(_total(loss, pairs), _count(ops.logical_and(pairs, loss > 0)), _count(pairs))


def mine_hard(dist, positive, negative, margin: float) -> Mined:
    """Batch-hard: per anchor the farthest positive and the closest negative.

    Anchors lacking a positive or a negative are dropped (pytorch-metric-learning's
    ``BatchHardMiner``); ``num_terms`` counts the anchors kept.
    """
    zero = ops.zeros_like(dist)
    hardest_pos = ops.max(ops.where(positive, dist, zero), axis=1)
    pad = ops.stop_gradient(ops.max(dist)) + 1.0
    hardest_neg = ops.min(ops.where(negative, dist, pad + zero), axis=1)
    keep = ops.logical_and(ops.any(positive, axis=1), ops.any(negative, axis=1))
    loss = ops.relu(hardest_pos - hardest_neg + margin)
    return Mined(_total(loss, keep), _count(ops.logical_and(keep, loss > 0)), _count(keep))


MINERS = {"all": mine_all, "hard": mine_hard, "semihard": mine_semihard,
          "semihard_all": mine_semihard_all}


# --- fast path: few positives per anchor -----------------------------------------------------
# With P x K sampling each anchor has K - 1 positives. Gathering them into a (B, P) block makes
# every rule a fused (B, P, B) compare-and-reduce, far cheaper on CPU than sorting B rows.


def _positive_block(dist, positive, width: int):
    """(B, P) distances of each anchor's positives (first ``width``), and their validity."""
    if dist.shape[1] is None or int(dist.shape[1]) < width:  # batch size unknown: pad columns
        dist = ops.pad(dist, [[0, 0], [0, width]])
        positive = ops.pad(positive, [[0, 0], [0, width]])
    rank = ops.where(positive, ops.ones_like(dist), ops.zeros_like(dist))
    # top_k on {0, 1} picks positives first; the index tie-break keeps it deterministic
    order = rank * 2.0 - ops.arange(ops.shape(dist)[1], dtype=dist.dtype)[None, :] / (
        ops.cast(ops.shape(dist)[1], dist.dtype) + 1.0)
    _, index = ops.top_k(ops.stop_gradient(order), k=width)
    valid = ops.take_along_axis(positive, index, axis=1)
    return ops.take_along_axis(dist, index, axis=1), valid


def mine_few_positives(rule: str, dist, positive, negative, margin: float, width: int) -> Mined:
    """The rule ``rule`` exactly, assuming no anchor has more than ``width`` positives."""
    d_ap, valid = _positive_block(dist, positive, width)  # (B, P)
    d_an = dist[:, None, :]  # (B, 1, B)
    neg = negative[:, None, :]
    pair_ok = valid[:, :, None]
    if rule == "semihard":
        # pick with argmin/argmax on constants, then gather: the backward is a (B, P) scatter
        # instead of the (B, P, B) equality mask the gradient of a min would build
        const = ops.stop_gradient(dist)
        pad = ops.max(const) + 1.0
        farther = ops.logical_and(neg, const[:, None, :] > ops.stop_gradient(d_ap)[:, :, None])
        closest = ops.argmin(ops.where(farther, const[:, None, :], pad), axis=2)  # (B, P)
        farthest = ops.argmax(ops.where(negative, const, -1.0), axis=1)  # (B,)
        # a negative farther than the positive exists iff the farthest negative is: O(B P)
        far = ops.take_along_axis(const, farthest[:, None], axis=1)  # (B, 1)
        found = far > ops.stop_gradient(d_ap)
        index = ops.where(found, closest, farthest[:, None])
        chosen = ops.take_along_axis(dist, index, axis=1)
        pairs = ops.logical_and(valid, ops.any(negative, axis=1)[:, None])
        loss = ops.relu(d_ap - chosen + margin)
        return Mined(_total(loss, pairs), _count(ops.logical_and(pairs, loss > 0)),
                     _count(pairs))
    # Which triplets count is decided on constants; the loss is then linear in the distances:
    # sum_{a,p,n} [chosen] (d_ap + m - d_an) = sum count_p * d_ap + m N - sum count_n * d_an,
    # with count_p (B, P) and count_n (B, B) the two reductions of the same (B, P, B) mask.
    # Same value, same gradient, and no (B, P, B) tensor in the backward pass.
    const_ap, const_an = ops.stop_gradient(d_ap)[:, :, None], ops.stop_gradient(d_an)
    gap = const_ap + margin - const_an  # (B, P, B): the triplet loss before the hinge
    chosen = ops.logical_and(ops.logical_and(neg, pair_ok), gap > 0)
    if rule == "semihard_all":
        farther = const_an > const_ap
        selected = ops.logical_and(ops.logical_and(neg, pair_ok),
                                   ops.logical_and(farther, gap >= 0))
        chosen = ops.logical_and(chosen, farther)
        total = _count(selected)
    else:
        counts = ops.cast(ops.sum(ops.cast(negative, "int32"), axis=1), "float32")
        total = ops.sum(ops.cast(valid, "float32") * counts[:, None])
    weight = ops.cast(chosen, dist.dtype)
    count_p = ops.sum(weight, axis=2)  # (B, P)
    count_n = ops.sum(weight, axis=1)  # (B, B)
    nonzero = ops.sum(count_p)
    loss_sum = ops.sum(count_p * d_ap) + margin * nonzero - ops.sum(count_n * dist)
    return Mined(loss_sum, nonzero, total)


#: widths of the fast path, tried smallest first (a switch picks the first that fits).
WIDTHS = (2, 4, 8, 16, 32)


def mine(rule: str, dist, positive, negative, margin: float,
         max_positives: int | None = 32) -> Mined:
    """Apply the mining ``rule``; exact for any batch.

    When every anchor has at most ``max_positives`` positives (P x K sampling with
    K <= max_positives + 1), a fused (B, P, B) path runs with P the smallest of
    :data:`WIDTHS` (or ``max_positives``) that holds the batch's largest positive count;
    otherwise the sort-based path. All paths are compiled; ``ops.switch`` runs one of them.

    Args:
        rule: one of :data:`MINING`.
        dist, positive, negative: (B, B) distances and masks.
        margin: the triplet margin.
        max_positives: largest P of the fast path; `None` or 0 always sorts.

    Returns:
        A :class:`Mined`.
    """
    if rule == "hard" or not max_positives:
        return MINERS[rule](dist, positive, negative, margin)
    batch = dist.shape[1]
    widths = sorted({w for w in WIDTHS if w < max_positives} | {max_positives})
    if batch is not None:
        widths = sorted({min(w, max(int(batch) - 1, 1)) for w in widths})
    most = ops.max(ops.sum(ops.cast(positive, "int32"), axis=1))
    index = sum(ops.cast(most > w, "int32") for w in widths)

    def fast(width):
        return lambda d, p, n: tuple(mine_few_positives(rule, d, p, n, margin, width))

    branches = [fast(w) for w in widths]
    branches.append(lambda d, p, n: tuple(MINERS[rule](d, p, n, margin)))
    return Mined(*ops.switch(index, branches, dist, positive, negative))
