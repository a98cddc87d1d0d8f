"""SGD whose row-sparse updates stay row-sparse: weights, momentum and weight decay (TensorFlow)."""
from __future__ import annotations

import keras
import tensorflow as tf

from keras_facemargin._api import register


def unique_rows(gradient: tf.IndexedSlices):
    """Sum the slices of repeated rows, with static shapes (no ``tf.unique``: XLA can compile it).

    Args:
        gradient: a ``tf.IndexedSlices`` of k slices, rows possibly repeated (for example
            gathered from several replicas).

    Returns:
        ``(rows, values, valid)``: (k,) int32 rows, (k, ...) summed values and a (k,) mask of the
        entries that hold a distinct row (the first ``n_unique``); the others have row 0 and
        value 0, so adding them changes nothing.
    """
    index = tf.cast(gradient.indices, tf.int32)
    k = tf.shape(index)[0]
    order = tf.argsort(index, stable=True)
    index = tf.gather(index, order)
    previous = tf.concat([[-1], index], axis=0)[:-1]
    starts = tf.not_equal(index, previous)
    segment = tf.cumsum(tf.cast(starts, tf.int32)) - 1
    values = tf.math.unsorted_segment_sum(tf.gather(gradient.values, order), segment, k)
    valid = tf.range(k) < tf.reduce_sum(tf.cast(starts, tf.int32))
    rows = tf.where(valid, tf.math.unsorted_segment_max(index, segment, k), 0)
    return rows, values, valid


@register
class RowSparseSGD(keras.optimizers.SGD):
    """Keras SGD (momentum, Nesterov, weight decay) that updates only the rows a sparse gradient
    names: the rows of the variable, of its momentum, and the weight decay.

    Keras' SGD turns a ``tf.IndexedSlices`` gradient dense as soon as momentum is on: every row
    of the momentum decays and every row of the variable moves by its old velocity, and weight
    decay shrinks every row. For Partial FC (:class:`~keras_facemargin.training.PartialFCHead`),
    whose centres receive the gradient of the sampled rows only, this optimizer applies insightface's
    PartialFC (v1) rule instead: a class centre and its momentum change only in the steps that
    sample it, and a step costs O(sampled rows), not O(all classes). Dense gradients get exactly
    Keras' SGD. Repeated rows (the slices of several replicas) are summed first.

    For a sparse gradient g on rows R, with decoupled weight decay wd as in Keras:
    ``w[R] -= lr * wd * w[R]``; ``m[R] = momentum * m[R] - lr * g[R]``; ``w[R] += m[R]``
    (Nesterov: ``w[R] += momentum * m[R] - lr * g[R]``). Other rows are left as they are.

    Args:
        learning_rate, momentum, nesterov, weight_decay, **kwargs: as ``keras.optimizers.SGD``.

    Example:

    >>> from keras_facemargin.training import RowSparseSGD
    >>> optimizer = RowSparseSGD(0.1, momentum=0.9, weight_decay=5e-4)
    """

    def _backend_apply_gradients(self, grads, trainable_variables):
        # which variables get row-sparse updates: their weight decay is applied per row instead
        self._row_sparse = {self._var_key(v) for g, v in zip(grads, trainable_variables,
                                                                 strict=True)
                            if isinstance(g, tf.IndexedSlices)}
        return super()._backend_apply_gradients(grads, trainable_variables)

    def _use_weight_decay(self, variable):
        if self._var_key(variable) in getattr(self, "_row_sparse", ()):
            return False
        return super()._use_weight_decay(variable)

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        lr = tf.cast(learning_rate, dtype)
        rows, grad, valid = unique_rows(gradient)
        grad = tf.cast(grad, dtype)
        keep = tf.reshape(tf.cast(valid, dtype), [-1] + [1] * (len(variable.shape) - 1))
        shape = tf.shape(variable, out_type=tf.int32)
        step = -lr * grad
        if self.momentum != 0:
            velocity = self.momentums[self._get_variable_index(variable)]
            momentum = tf.cast(self.momentum, dtype)
            old = tf.gather(_tensor(velocity), rows)
            new = momentum * old + step
            self.assign_add(velocity, tf.IndexedSlices(keep * (new - old), rows, shape))
            step = momentum * new + step if self.nesterov else new
        if self.weight_decay is not None and super()._use_weight_decay(variable):
            decay = tf.cast(self.weight_decay, dtype) * lr * tf.gather(_tensor(variable), rows)
            step = step - decay
        self.assign_add(variable, tf.IndexedSlices(keep * step, rows, shape))


def _tensor(variable):
    return variable.value if isinstance(variable, keras.Variable) else variable
