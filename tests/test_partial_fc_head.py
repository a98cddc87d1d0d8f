"""Partial FC (``sample_rate < 1`` on a head): equals the full head at r = 1, samples correctly,
sparse updates, fit through FaceRecognizer, serialization, bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_facemargin as kf
from keras_facemargin.training.partial_fc import PartialFCHead

from reference import combined


def _ce(labels, logits):
    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits,
                                                                       from_logits=True))


def test_rate_one_equals_the_full_arcface_head():
    """Same kernel layout; compute_logits at r = 1 == the Sequential path of the full head."""
    rng = np.random.default_rng(0)
    partial, full = PartialFCHead(50, sample_rate=1.0), kf.ArcMarginLayer(50)
    partial.build((None, 6))
    full.build((None, 6))
    full.kernel.assign(partial.kernel.numpy())
    x = tf.Variable(rng.normal(size=(8, 6)).astype("float32"))
    y = rng.integers(0, 50, 8)
    with tf.GradientTape(persistent=True) as tape:
        out = partial.compute_logits(x, y, training=True)
        a = _ce(out.labels, out.logits)
        b = full.loss(y, full(x))
    np.testing.assert_array_equal(np.asarray(out.labels), y)
    assert float(a) == pytest.approx(float(b), rel=1e-6)
    np.testing.assert_allclose(tape.gradient(a, x), tape.gradient(b, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tape.gradient(a, partial.kernel), tape.gradient(b, full.kernel),
                               rtol=1e-5, atol=1e-6)


def test_sampled_logits_match_numpy_and_the_gradient_is_sparse():
    rng = np.random.default_rng(1)
    head = PartialFCHead(200, sample_rate=0.1, seed=3)
    head.build((None, 8))
    x = tf.Variable(rng.normal(size=(12, 8)).astype("float32"))
    y = rng.integers(0, 200, 12)
    with tf.GradientTape() as tape:
        out = head.compute_logits(x, y, training=True)
        loss = _ce(out.labels, out.logits)
    grad = tape.gradient(loss, head.kernel)
    assert isinstance(grad, tf.IndexedSlices)
    # the rows the step gathered, in the order of the logits' columns
    index, remapped = np.asarray(grad.indices), np.asarray(out.labels)
    assert out.logits.shape == (12, 20) and len(np.unique(index)) == 20
    assert set(y) <= set(index) and np.array_equal(index[remapped], y)
    w = head.kernel.numpy()[index].T.astype(np.float64)
    want = combined(x.numpy().astype(np.float64), w, remapped, 1.0, 0.5, 0.0, 64.0)
    np.testing.assert_allclose(out.logits, want, rtol=1e-4, atol=1e-3)


def _recognizer(head, seed=0):
    keras.utils.set_random_seed(seed)
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8)])
    return kf.FaceRecognizer(backbone, head)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_updates_only_sampled_centres(jit_compile):
    rng = np.random.default_rng(2)
    head = PartialFCHead(1000, sample_rate=0.05, seed=0)
    model = _recognizer(head)
    model.compile(keras.optimizers.SGD(0.5), jit_compile=jit_compile)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = rng.integers(0, 1000, 16)
    before = head.kernel.numpy().copy()
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    changed = np.flatnonzero(np.any(head.kernel.numpy() != before, axis=1))
    assert np.isfinite(history["loss"][0])
    assert set(y) <= set(changed) and len(changed) <= 50  # ceil(1000 * 0.05)
    cos = model.predict(x, verbose=0)  # inference: cosines to all 1000 centres
    assert cos.shape == (16, 1000)


def test_serialization(tmp_path):
    head = PartialFCHead(30, kf.margins.CosMargin(0.3, 16.0), sample_rate=0.5, seed=1)
    model = _recognizer(head)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(0).normal(size=(2, 6)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6)
    assert loaded.head.sample_rate == 0.5


@pytest.mark.parametrize("rate", [0.0, 1.5, -1.0])
def test_bad_sample_rate(rate):
    with pytest.raises(ValueError, match="sample_rate"):
        PartialFCHead(100, sample_rate=rate)


def test_more_distinct_classes_than_the_sample_is_refused():
    head = PartialFCHead(100, sample_rate=0.05)
    head.build((None, 4))
    x = np.zeros((8, 4), "float32") + 1.0
    with pytest.raises(ValueError, match=r"5 class centres.*sample_rate=0.05.*8 distinct labels"):
        head.compute_logits(x, np.arange(8), training=True)
    # 8 rows of 4 classes fit in a sample of 5: accepted, every label kept
    out = head.compute_logits(x, np.repeat(np.arange(4), 2), training=True)
    assert np.all(np.asarray(out.valid)) and out.logits.shape == (8, 5)


def test_sampled_head_refuses_the_label_call_and_the_sequential_loss():
    """Its training logits are over the sample: only FaceRecognizer / compute_logits train it."""
    head = PartialFCHead(100, sample_rate=0.5)
    head.build((None, 4))
    x = np.ones((2, 4), "float32")
    with pytest.raises(ValueError, match="FaceRecognizer"):
        head(x, np.array([0, 1]), training=True)
    with pytest.raises(ValueError, match="FaceRecognizer"):
        head.loss(np.array([0, 1]), head(x))
