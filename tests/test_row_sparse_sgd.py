"""RowSparseSGD: the PartialFC (v1) row rule against numpy, Keras SGD on dense gradients, fit."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_facemargin import FaceRecognizer
from keras_facemargin.training import PartialFCHead, RowSparseSGD


def numpy_row_sgd(w, steps, lr, momentum, nesterov, weight_decay):
    """insightface PartialFC v1 written out: rows named by a step change, no other row does."""
    w, m = w.astype(np.float64).copy(), np.zeros_like(w, dtype=np.float64)
    for rows, values in steps:
        g = {}
        for r, v in zip(rows, values, strict=True):  # repeated rows add up
            g[r] = g.get(r, 0.0) + v
        for r, gr in g.items():
            decay = lr * weight_decay * w[r] if weight_decay else 0.0
            m[r] = momentum * m[r] - lr * gr
            w[r] += (momentum * m[r] - lr * gr if nesterov else m[r]) - decay
    return w, m


def random_steps(rng, num_rows, dim, count=4):
    steps = []
    for _ in range(count):
        rows = rng.integers(0, num_rows, size=7)  # repeats on purpose
        steps.append((rows, rng.normal(size=(7, dim))))
    return steps


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
@pytest.mark.parametrize("momentum,nesterov,weight_decay", [
    (0.0, False, None), (0.9, False, None), (0.9, True, None), (0.9, False, 0.01)])
def test_sparse_updates_follow_the_row_rule(momentum, nesterov, weight_decay, jit):
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(20, 3)).astype(np.float32)
    steps = random_steps(rng, 20, 3)
    var = keras.Variable(w0)
    opt = RowSparseSGD(0.1, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    opt.build([var])

    def apply(rows, values):
        opt.apply([tf.IndexedSlices(values, rows, tf.constant([20, 3]))], [var])

    apply = tf.function(apply, jit_compile=True) if jit else apply
    for rows, values in steps:
        apply(tf.constant(rows, tf.int32), tf.constant(values, tf.float32))
    want_w, want_m = numpy_row_sgd(w0, steps, 0.1, momentum, nesterov, weight_decay)
    np.testing.assert_allclose(var.numpy(), want_w, rtol=1e-5, atol=1e-6)
    if momentum:
        np.testing.assert_allclose(opt.momentums[0].numpy(), want_m, rtol=1e-5, atol=1e-6)
    untouched = sorted(set(range(20)) - {int(r) for rows, _ in steps for r in rows})
    assert untouched and np.array_equal(var.numpy()[untouched], w0[untouched])


def test_dense_gradients_are_keras_sgd():
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=(5, 4)).astype(np.float32)
    a, b = keras.Variable(w0), keras.Variable(w0)
    ours = RowSparseSGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    theirs = keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    for _ in range(3):
        g = tf.constant(rng.normal(size=(5, 4)).astype(np.float32))
        ours.apply([g], [a])
        theirs.apply([g], [b])
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def changed_rows_per_step(optimizer, steps=3):
    rng = np.random.default_rng(2)
    keras.utils.set_random_seed(0)
    head = PartialFCHead(400, sample_rate=0.05, seed=0)  # 20 sampled centres per step
    model = FaceRecognizer(keras.Sequential([keras.Input((6,)), keras.layers.Dense(8)]), head)
    model.compile(optimizer, jit_compile=True)
    counts = []
    for _ in range(steps):
        x = rng.normal(size=(16, 6)).astype("float32")
        y = rng.integers(0, 400, 16)
        before = head.kernel.numpy().copy()
        model.train_on_batch(x, y)
        counts.append(int(np.sum(np.any(head.kernel.numpy() != before, axis=1))))
    return counts


def test_partial_fc_moves_only_the_sampled_centres_with_momentum():
    """With momentum, Keras' SGD keeps moving centres sampled in earlier steps; ours does not."""
    ours = changed_rows_per_step(RowSparseSGD(0.5, momentum=0.9, weight_decay=5e-4))
    keras_sgd = changed_rows_per_step(keras.optimizers.SGD(0.5, momentum=0.9))
    assert all(0 < n <= 20 for n in ours), ours
    assert keras_sgd[1] > 20, keras_sgd  # the contrast: dense momentum moves earlier rows too


def test_serialization_round_trip():
    opt = RowSparseSGD(0.2, momentum=0.8, nesterov=True, weight_decay=1e-4)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(opt))
    assert type(again) is RowSparseSGD
    assert again.get_config() == opt.get_config()
