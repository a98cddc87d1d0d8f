"""The few-positives family: exact when no anchor has more than P positives, O(B^2 P).

With P x K sampling each anchor has K - 1 positives. :func:`label_groups` groups the batch by
label (a sort of the B labels and segment sums, no (B, B) comparison or ``top_k``), and each
anchor's positives are gathered from their groups into a (B, P) block. Every rule is then a few
fused (B, P, B) compare-and-reduce passes against the row of negatives, far cheaper on CPU than
sorting B rows; the reductions are written so XLA's CPU backend vectorizes them
(:mod:`keras_facemargin.ops.mining.reductions`).

:func:`keras_facemargin.ops.mining.mine` compiles this path for a few widths P and switches at
run time to the smallest that holds the batch, or to the sorted-rows family
(:mod:`keras_facemargin.ops.mining.sorted_rows`) when none does.
"""

from __future__ import annotations

from typing import NamedTuple

from keras import ops

from keras_facemargin.ops.mining.reductions import reduce_last, sum_over_positives
from keras_facemargin.ops.mining.weights import Weights, tie_share


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
