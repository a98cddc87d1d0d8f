"""PartialFCHead: equals the full head at r = 1, samples correctly, sparse updates, fit, bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_facemargin as kf
from keras_facemargin.margins.base import CONTEXT_ATTR
from keras_facemargin.training.partial_fc import PartialFCHead

from reference import combined


def test_rate_one_equals_the_full_arcface_head_exactly():
    rng = np.random.default_rng(0)
    partial, full = PartialFCHead(50, sample_rate=1.0), kf.ArcMarginLayer(50)
    partial.build((None, 6))
    full.build((None, 6))
    full.kernel.assign(partial.kernel.numpy().T)
    x = tf.Variable(rng.normal(size=(8, 6)).astype("float32"))
    y = rng.integers(0, 50, 8)
    with tf.GradientTape(persistent=True) as tape:
        a = partial.loss(y, partial(x, y, training=True))
        b = full.loss(y, full(x))
    assert float(a) == float(b)
    np.testing.assert_array_equal(tape.gradient(a, x), tape.gradient(b, x))
    np.testing.assert_array_equal(np.asarray(tape.gradient(a, partial.kernel)).T,
                                  tape.gradient(b, full.kernel))


def test_sampled_logits_match_numpy_and_the_gradient_is_sparse():
    rng = np.random.default_rng(1)
    head = PartialFCHead(200, sample_rate=0.1, seed=3)
    head.build((None, 8))
    x = tf.Variable(rng.normal(size=(12, 8)).astype("float32"))
    y = rng.integers(0, 200, 12)
    with tf.GradientTape() as tape:
        logits = head(x, y, training=True)
        loss = head.loss(y, logits)
    context = getattr(logits, CONTEXT_ATTR)
    index, remapped = np.asarray(context["sampled_index"]), np.asarray(context["remapped_labels"])
    assert logits.shape == (12, 20) and len(np.unique(index)) == 20
    assert set(y) <= set(index) and np.array_equal(index[remapped], y)
    w = head.kernel.numpy()[index].T.astype(np.float64)
    want = combined(x.numpy().astype(np.float64), w, remapped, 1.0, 0.5, 0.0, 64.0)
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-3)
    grad = tape.gradient(loss, head.kernel)
    assert isinstance(grad, tf.IndexedSlices)
    assert set(np.asarray(grad.indices)) == set(index)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_updates_only_sampled_centres(jit_compile):
    rng = np.random.default_rng(2)
    images, labels = keras.Input((6,)), keras.Input((), dtype="int32")
    head = PartialFCHead(1000, sample_rate=0.05, seed=0)
    model = keras.Model([images, labels], head(keras.layers.Dense(8)(images), labels))
    model.compile(keras.optimizers.SGD(0.5), loss=head.loss, jit_compile=jit_compile)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = rng.integers(0, 1000, 16)
    before = head.kernel.numpy().copy()
    history = model.fit([x, y], y, batch_size=16, epochs=1, verbose=0).history
    changed = np.flatnonzero(np.any(head.kernel.numpy() != before, axis=1))
    assert np.isfinite(history["loss"][0])
    assert set(y) <= set(changed) and len(changed) <= 50  # ceil(1000 * 0.05)
    cos = model.predict([x, y], verbose=0)  # inference: cosines to all 1000 centres
    assert cos.shape == (16, 1000)


def test_serialization(tmp_path):
    images, labels = keras.Input((6,)), keras.Input((), dtype="int32")
    head = PartialFCHead(30, kf.margins.CosMargin(0.3, 16.0), sample_rate=0.5, seed=1)
    model = keras.Model([images, labels], head(keras.layers.Dense(8)(images), labels))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(0).normal(size=(2, 6)).astype("float32")
    np.testing.assert_allclose(loaded.predict([x, np.zeros(2)], verbose=0),
                               model.predict([x, np.zeros(2)], verbose=0), rtol=1e-6)
    assert loaded.layers[-1].sample_rate == 0.5


@pytest.mark.parametrize("rate", [0.0, 1.5, -1.0])
def test_bad_sample_rate(rate):
    with pytest.raises(ValueError, match="sample_rate"):
        PartialFCHead(100, sample_rate=rate)


def test_batch_larger_than_the_sample_is_refused():
    head = PartialFCHead(100, sample_rate=0.05)
    head.build((None, 4))
    x = np.zeros((8, 4), "float32") + 1.0
    with pytest.raises(ValueError, match="sample_rate"):
        head(x, np.arange(8), training=True)
