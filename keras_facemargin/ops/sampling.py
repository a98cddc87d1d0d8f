"""Partial FC class-centre sampling (An et al., 2022): which centres a training step sees.

Pure ``keras.ops`` with static shapes (compiles under XLA). Used by
:meth:`keras_facemargin.layers.MarginHead.select` when a head has ``sample_rate < 1``.
"""
from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops


def num_sampled_classes(num_classes: int, sample_rate: float) -> int:
    """Number of class centres sampled per step, `ceil(num_classes * sample_rate)`.

    Args:
        num_classes: Total number of identities, a positive int.
        sample_rate: Fraction of centres used per step, in (0, 1].

    Returns:
        The static number of sampled classes (at least 1).

    Example:
    >>> num_sampled_classes(1_000_000, 0.1)
    100000
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"`num_classes` must be a positive int. Received: num_classes={num_classes!r}")
    if not (isinstance(sample_rate, (int, float)) and 0.0 < sample_rate <= 1.0):
        raise ValueError(
            "`sample_rate` must be in (0, 1]. Received: "
            f"sample_rate={sample_rate!r}")
    return max(1, min(num_classes, math.ceil(num_classes * sample_rate)))


def sample_classes(labels, num_classes: int, sample_rate: float, seed=None, inside=None):
    """Sample class centres: the batch's positives plus random negatives.

    Static shapes only (XLA-friendly): random scores over all classes, the
    positives get +2 so they always win, `top_k` keeps `num_sampled` of them,
    sorted ascending so labels are remapped with `searchsorted`.

    Args:
        labels: Integer labels in [0, num_classes), shape (B,) or (B, 1).
        num_classes: Total number of classes.
        sample_rate: Fraction of classes per step, in (0, 1].
        seed: Optional seed or `keras.random.SeedGenerator`. Defaults to `None`.
        inside: optional (B,) bool, the rows whose label is one of these `num_classes`
            classes (sharded centres: the labels of this replica's shard, shifted to
            [0, num_classes)); the other rows are not positives of the sample and are remapped
            to `num_sampled` (one past the sample). Defaults to `None` (every row).

    Returns:
        `(index, remapped)`: the sorted sampled class ids (num_sampled,) and
        the labels remapped to positions in `index` (B,), -1 for a class the sample could
        not hold (only reachable under XLA, see Raises), `num_sampled` for a row not
        `inside`.

    Raises:
        ValueError: (eagerly; an assertion in a graph) the batch holds more distinct classes
            than `num_sampled`: the sample cannot hold every positive. Under XLA, where
            assertions are dropped, the rows left out are remapped to -1.

    Example:
    >>> index, new = sample_classes(np.array([3, 7]), 10, 0.5, seed=0)  # doctest: +SKIP
    """
    k = num_sampled_classes(num_classes, sample_rate)
    labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
    if inside is not None:
        labels = ops.where(inside, labels, ops.zeros_like(labels))
    ones = ops.ones_like(labels, dtype="float32") if inside is None else ops.cast(inside,
                                                                                 "float32")
    scores = keras.random.uniform((num_classes,), seed=seed)
    positive = ops.minimum(ops.scatter(labels[:, None], ones, (num_classes,)), 1.0)  # (C,)
    _, index = ops.top_k(scores + 2.0 * positive, k)
    index = ops.sort(ops.cast(index, "int32"))
    remapped = ops.cast(ops.searchsorted(index, labels), "int32")
    given = inside is not None
    if not given:
        inside = ops.ones_like(labels, dtype="bool")
    remapped = _check_all_sampled(index, remapped, labels, num_classes, sample_rate,
                                  inside if given else None, inside)
    return index, ops.where(inside, remapped, ops.full_like(remapped, k))


def _check_all_sampled(index, remapped, labels, num_classes, sample_rate, shard, inside):
    """``remapped``, -1 where a label is not among the sampled classes ``index``.

    That happens only for a batch with more distinct classes than ``ceil(C * r)``: a
    ``ValueError`` eagerly, an assertion in a graph; XLA drops the assertion, and the -1 tells
    the head those rows are invalid (never trained against another class)."""
    from keras_facemargin._checks import _is_concrete, _is_tf_backend

    k = index.shape[0]
    where = "" if shard is None else " in the shard of one replica"
    message = (f"The batch holds more distinct classes{where} than the {k} class centres "
               f"sampled per step (ceil(num_classes * sample_rate) with num_classes="
               f"{num_classes}{where}, sample_rate={sample_rate}); raise `sample_rate` or put "
               "fewer identities in a batch.")
    found = ops.logical_or(ops.take(index, ops.minimum(remapped, k - 1)) == labels,
                           ops.logical_not(inside))
    if _is_concrete(labels):
        if not bool(np.all(ops.convert_to_numpy(found))):
            mine = ops.convert_to_numpy(labels)[ops.convert_to_numpy(inside)]
            distinct = len(np.unique(mine))
            raise ValueError(f"{message} Received: {distinct} distinct labels")
    elif _is_tf_backend():
        import tensorflow as tf

        check = tf.debugging.Assert(tf.reduce_all(found), [message])
        with tf.control_dependencies([check]):
            remapped = tf.identity(remapped)
    return ops.where(found, remapped, -ops.ones_like(remapped))
