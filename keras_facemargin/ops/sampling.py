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


def sample_classes(labels, num_classes: int, sample_rate: float, seed=None):
    """Sample class centres: the batch's positives plus random negatives.

    Static shapes only (XLA-friendly): random scores over all classes, the
    positives get +2 so they always win, `top_k` keeps `num_sampled` of them,
    sorted ascending so labels are remapped with `searchsorted`.

    Args:
        labels: Integer labels in [0, num_classes), shape (B,) or (B, 1).
        num_classes: Total number of classes.
        sample_rate: Fraction of classes per step, in (0, 1].
        seed: Optional seed or `keras.random.SeedGenerator`. Defaults to `None`.

    Returns:
        `(index, remapped)`: the sorted sampled class ids (num_sampled,) and
        the labels remapped to positions in `index` (B,).

    Raises:
        ValueError: (eagerly; an assertion in a graph) the batch holds more distinct classes
            than `num_sampled`: the sample cannot hold every positive. Under XLA, where
            assertions are dropped, :func:`sampled_mask` is False for the rows left out.

    Example:
    >>> index, new = sample_classes(np.array([3, 7]), 10, 0.5, seed=0)  # doctest: +SKIP
    """
    k = num_sampled_classes(num_classes, sample_rate)
    labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
    scores = keras.random.uniform((num_classes,), seed=seed)
    ones = ops.ones_like(labels, dtype="float32")
    positive = ops.minimum(ops.scatter(labels[:, None], ones, (num_classes,)), 1.0)  # (C,)
    _, index = ops.top_k(scores + 2.0 * positive, k)
    index = ops.sort(ops.cast(index, "int32"))
    remapped = ops.cast(ops.searchsorted(index, labels), "int32")
    remapped = _check_all_sampled(index, remapped, labels, num_classes, sample_rate)
    return index, remapped


def sampled_mask(index, remapped, labels):
    """(B,) True where ``labels`` are among the sampled classes ``index`` at ``remapped``.

    Always True unless the batch holds more distinct classes than the sample (the sample
    cannot hold every positive; those rows must not train against another class).
    """
    k = index.shape[0]
    position = ops.minimum(remapped, k - 1)
    return ops.take(index, position) == ops.cast(labels, "int32")


def _check_all_sampled(index, remapped, labels, num_classes, sample_rate):
    """A batch with more distinct classes than ``ceil(C * r)``: ``ValueError`` eagerly, an
    assertion in a graph (XLA drops it; the head then reports those rows invalid)."""
    from keras_facemargin._checks import _is_concrete, _is_tf_backend

    k = index.shape[0]
    message = (f"The batch holds more distinct classes than the {k} class centres sampled per "
               f"step (ceil(num_classes * sample_rate) with num_classes={num_classes}, "
               f"sample_rate={sample_rate}); raise `sample_rate` or put fewer identities in a "
               "batch.")
    found = sampled_mask(index, remapped, labels)
    if _is_concrete(labels):
        if not bool(np.all(ops.convert_to_numpy(found))):
            distinct = len(np.unique(ops.convert_to_numpy(labels)))
            raise ValueError(f"{message} Received: {distinct} distinct labels")
    elif _is_tf_backend():
        import tensorflow as tf

        check = tf.debugging.Assert(tf.reduce_all(found), [message])
        with tf.control_dependencies([check]):
            remapped = tf.identity(remapped)
    return remapped
