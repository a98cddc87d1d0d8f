"""Pairwise distances and label masks for pair- and triplet-based losses (``keras.ops``)."""

from __future__ import annotations

from keras import ops

from keras_facemargin._checks import check_choice
from keras_facemargin.ops.cosine import l2_normalize, safe_acos

#: the distances every pair-based loss accepts.
DISTANCES = ("squared_l2", "l2", "angular")

# Below this squared distance, sqrt is taken as 0 with a zero gradient (no NaN at d = 0).
_TINY = 1e-12


def safe_sqrt(x):
    """``sqrt(max(x, 0))`` with a finite gradient: 0 where ``x <= 1e-12`` instead of Inf."""
    positive = x > _TINY
    return ops.where(positive, ops.sqrt(ops.where(positive, x, ops.ones_like(x))),
                     ops.zeros_like(x))


def pairwise_distances(x, distance: str = "squared_l2", normalize: bool = True):
    """All pairwise distances between the rows of ``x``.

    Formula:
        squared_l2: d_ij = ||x_i - x_j||^2 = ||x_i||^2 + ||x_j||^2 - 2 <x_i, x_j>  (clipped >= 0)
        l2:         d_ij = ||x_i - x_j||
        angular:    d_ij = arccos(<x_i, x_j> / (||x_i|| ||x_j||))  in radians

    The diagonal is exactly 0 for the L2 forms. Gradients are finite everywhere (also for
    coincident points and for ``cos = +-1`` in the angular form, where they are 0).

    Args:
        x: embeddings, shape (B, D).
        distance: one of ``"squared_l2"``, ``"l2"``, ``"angular"``. Defaults to `"squared_l2"`.
        normalize: L2-normalize the rows first (the angular distance always does).
            Defaults to `True`.

    Returns:
        A (B, B) float tensor.

    Example:

    >>> import numpy as np
    >>> d = pairwise_distances(np.eye(2, dtype="float32"), "squared_l2")
    >>> np.asarray(d).round(3).tolist()
    [[0.0, 2.0], [2.0, 0.0]]
    """
    distance = check_choice("distance", distance, DISTANCES)
    if normalize or distance == "angular":
        x = l2_normalize(x)
    gram = ops.matmul(x, ops.transpose(x))
    if distance == "angular":
        return safe_acos(gram)
    squared = ops.sum(ops.square(x), axis=-1)
    d2 = ops.maximum(squared[:, None] + squared[None, :] - 2.0 * gram, 0.0)
    d2 = d2 * (1.0 - ops.eye(ops.shape(x)[0], dtype=d2.dtype))
    return d2 if distance == "squared_l2" else safe_sqrt(d2)


def label_masks(labels, valid=None):
    """Masks of the positive and negative pairs of a batch.

    Args:
        labels: integer class ids, shape (B,).
        valid: optional boolean (B,): rows that take part (e.g. padding excluded).

    Returns:
        ``(positive, negative)``, boolean (B, B): ``positive[i, j]`` iff ``y_i == y_j`` and
        ``i != j``; ``negative[i, j]`` iff ``y_i != y_j``.
    """
    same = ops.equal(labels[:, None], labels[None, :])
    not_self = ops.logical_not(ops.cast(ops.eye(ops.shape(labels)[0]), "bool"))
    positive = ops.logical_and(same, not_self)
    negative = ops.logical_not(same)
    if valid is not None:
        both = ops.logical_and(valid[:, None], valid[None, :])
        positive = ops.logical_and(positive, both)
        negative = ops.logical_and(negative, both)
    return positive, negative
