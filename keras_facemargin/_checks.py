"""Argument and data validation shared by the heads and losses.

Hyper-parameters are checked in Python at construction. Data (labels, embeddings) is checked at run
time: eagerly with a ``ValueError`` that names the argument and echoes the offending values, in a
``tf.function`` graph with ``tf.debugging`` assertions (``InvalidArgumentError`` with the same text).
XLA drops assertions, so the margin core additionally turns the rows of invalid labels into NaN (see
``keras_facemargin.margins.base.Margin.logits``): an invalid label is never silently trained on.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import keras
import numpy as np
from keras import ops


def _fmt(name: str, value: Any) -> str:
    return f"Received: {name}={value!r}"


def check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_inclusive: bool = True, high_inclusive: bool = True) -> float:
    """Return ``value`` as a float after checking it is a finite real number inside the bounds."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValueError(f"`{name}` must be a finite real number. {_fmt(name, value)}")
    value = float(value)
    if low is not None and (value < low or (value == low and not low_inclusive)):
        op = ">=" if low_inclusive else ">"
        raise ValueError(f"`{name}` must be {op} {low}. {_fmt(name, value)}")
    if high is not None and (value > high or (value == high and not high_inclusive)):
        op = "<=" if high_inclusive else "<"
        raise ValueError(f"`{name}` must be {op} {high}. {_fmt(name, value)}")
    return value


def check_int(name: str, value: Any, *, low: int | None = None) -> int:
    """Return ``value`` as an int after checking it is an integer (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, (Integral, Real)) or (
        isinstance(value, Real) and not float(value).is_integer()
    ):
        raise ValueError(f"`{name}` must be an integer. {_fmt(name, value)}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"`{name}` must be an integer >= {low}. {_fmt(name, value)}")
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}. {_fmt(name, value)}")
    return value


def _is_tf_backend() -> bool:
    return keras.backend.backend() == "tensorflow"


def _is_concrete(x) -> bool:
    """True for values we can read now (numpy, eager tensors), False inside a traced graph."""
    if isinstance(x, (np.ndarray, list, tuple, int, float)):
        return True
    if _is_tf_backend():
        import tensorflow as tf

        return tf.executing_eagerly() and not isinstance(x, keras.KerasTensor)
    return not isinstance(x, keras.KerasTensor)


def prepare_labels(labels, num_classes: int | None, name: str = "labels"):
    """Validate integer class labels and return them as an int32 vector of shape (B,).

    Accepts shape (B,) or (B, 1), integer dtype or float dtype holding whole numbers (Keras losses
    receive ``y_true`` cast to float). Raises ``ValueError`` eagerly, or adds graph assertions,
    when a label is negative, >= ``num_classes`` or not a whole number.
    """
    return ops.cast(_checked_labels(labels, num_classes, name), "int32")


def _checked_labels(labels, num_classes: int | None, name: str = "labels"):
    """:func:`prepare_labels` without the final cast: (B,) labels in their own dtype."""
    shape = tuple(labels.shape) if hasattr(labels, "shape") else np.shape(labels)
    if len(shape) == 2 and shape[-1] == 1:
        labels = ops.reshape(labels, (-1,))
    elif len(shape) != 1:
        raise ValueError(
            f"`{name}` must be integer class ids of shape (batch,) or (batch, 1). "
            f"Received: {name}.shape={shape}"
        )
    if not hasattr(labels, "dtype"):
        labels = np.asarray(labels)
    dtype = keras.backend.standardize_dtype(labels.dtype)
    if "complex" in dtype or dtype == "bool" or dtype == "string":
        raise ValueError(f"`{name}` must hold integer class ids. Received: {name}.dtype={dtype}")
    is_float = "float" in dtype
    bound = "" if num_classes is None else f" in [0, {num_classes})"
    message = f"`{name}` must be integer class ids{bound}."
    if _is_concrete(labels):
        values = np.asarray(keras.ops.convert_to_numpy(labels))
        bad = values < 0
        if num_classes is not None:
            bad |= values >= num_classes
        if is_float:
            bad |= ~np.isfinite(values) | (np.floor(np.nan_to_num(values)) != values)
        if bad.any():
            raise ValueError(f"{message} Received: {name} containing {values[bad][:5].tolist()}")
    elif _is_tf_backend():
        import tensorflow as tf

        checks = [tf.debugging.assert_non_negative(labels, message=message)]
        if num_classes is not None:
            checks.append(
                tf.debugging.assert_less(labels, tf.cast(num_classes, labels.dtype), message=message)
            )
        if is_float:
            checks.append(tf.debugging.assert_equal(tf.floor(labels), labels, message=message))
        with tf.control_dependencies(checks):
            labels = tf.identity(labels)
    return labels


def check_finite(x, name: str):
    """Raise (eagerly) or assert (in a graph) that ``x`` holds no NaN or Inf."""
    if _is_concrete(x):
        values = np.asarray(keras.ops.convert_to_numpy(x))
        if not np.isfinite(values).all():
            raise ValueError(
                f"`{name}` must be finite. Received: {name} with "
                f"{int(np.isnan(values).sum())} NaN and {int(np.isinf(values).sum())} Inf values"
            )
        return x
    if _is_tf_backend():
        import tensorflow as tf

        return tf.debugging.check_numerics(x, message=f"`{name}` must be finite (no NaN/Inf)")
    return x


def valid_labels(labels, num_classes: int):
    """Boolean (B,): labels in [0, num_classes). Assertions vanish under XLA; this does not."""
    return ops.logical_and(labels >= 0, labels < num_classes)


def nan_unless(ok, values):
    """``values`` where ``ok`` (broadcast), NaN elsewhere; the gradient there is 0, never NaN."""
    return ops.where(ok, values, ops.full_like(values, float("nan")))


def nan_where_invalid(values, labels, num_classes: int):
    """``values`` with NaN in the rows whose label is out of range (so a bad label can never train
    silently where the run-time assertions were compiled away)."""
    return nan_unless(valid_labels(labels, num_classes), values)


def finite_or_zero(x):
    """``(x with its NaN/Inf entries set to 0, whether all of x was finite)``.

    For losses that mine over the whole batch: compute the loss on the first, then
    ``nan_unless(all_finite, loss)``. One non-finite embedding then gives a NaN loss (what
    ``TerminateOnNaN`` and the logs see) whose gradient is exactly 0 for every weight, instead of
    a plausible loss with NaN gradients. Works under XLA (no assertion).
    """
    finite = ops.isfinite(x)
    return ops.where(finite, x, ops.zeros_like(x)), ops.all(finite)


def labels_and_validity(labels, num_classes: int, batch=None, check: bool = True,
                        name: str = "labels"):
    """Class ids as int32 (B,) plus a (B,) validity mask that survives XLA.

    Checks (eagerly a ``ValueError``, in a graph assertions; ``check=False`` skips them) the
    rank, the range [0, ``num_classes``), integrality and, where ``batch`` is given, the batch
    size. Independently of those checks (which XLA drops), ``valid`` is False where a label is
    out of range or fractional, computed on the labels before any cast: 3.5 or -0.5 never become
    3 or 0. Invalid labels are replaced by 0 in the returned ids so every gather stays in range.

    Returns:
        ``(safe_labels, valid)``.
    """
    shape = tuple(labels.shape) if hasattr(labels, "shape") else np.shape(labels)
    if not hasattr(labels, "dtype"):
        labels = np.asarray(labels)
    static_batch = batch if isinstance(batch, int) else None
    if static_batch is None and batch is not None and _is_concrete(batch):
        static_batch = int(np.asarray(batch))
    if (len(shape) in (1, 2) and static_batch is not None and shape[0] is not None
            and shape[0] != static_batch):
        raise ValueError(
            f"`{name}` must hold one class id per embedding ({static_batch} embeddings). "
            f"Received: {name}.shape={shape}"
        )
    if check:
        labels = _checked_labels(labels, num_classes, name=name)
        if batch is not None and static_batch is None and _is_tf_backend():
            import tensorflow as tf

            check_batch = tf.debugging.assert_equal(
                tf.shape(labels)[0], tf.cast(batch, tf.int32),
                message=f"`{name}` must hold one class id per embedding")
            with tf.control_dependencies([check_batch]):
                labels = tf.identity(labels)
    elif len(shape) == 2 and shape[-1] == 1:
        labels = ops.reshape(labels, (-1,))
    elif len(shape) != 1:
        _checked_labels(labels, num_classes, name=name)  # raises the rank error
    dtype = keras.backend.standardize_dtype(labels.dtype)
    if "float" in dtype:
        values = ops.cast(labels, "float32")
        valid = ops.logical_and(ops.isfinite(values), ops.floor(values) == values)
        valid = ops.logical_and(valid, values >= 0.0)
        valid = ops.logical_and(valid, values < float(num_classes))
        ids = ops.cast(ops.where(valid, values, ops.zeros_like(values)), "int32")
    else:
        ids = ops.cast(labels, "int32")
        valid = valid_labels(ids, num_classes)
        ids = ops.where(valid, ids, ops.zeros_like(ids))
    return ids, valid


def guarded_loss(per_sample, valid):
    """Per-sample loss that is NaN, with a zero gradient, unless every label of the batch is valid.

    A batch whose invalid labels slipped past the (XLA-dropped) assertions reports NaN
    (``keras.callbacks.TerminateOnNaN`` stops the run) while its gradient is exactly zero
    (:func:`nan_unless`): nothing is trained on it.
    """
    return nan_unless(ops.all(valid), per_sample)
