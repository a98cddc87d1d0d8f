"""A NaN embedding into a pair/triplet loss never trains silently.

Before: the NaN row's distances were compared away (NaN > 0 is false), so the loss read a
plausible 1.0 or 0.2 while the gradients, and after one step every weight, were NaN, and
``TerminateOnNaN`` never fired. Now, like the heads: a ``ValueError`` eagerly, an
``InvalidArgumentError`` in a ``tf.function``; under XLA (which drops assertions) the loss is NaN
and its gradient with respect to the embeddings is exactly 0. (Finite batches:
tests/test_metric_losses_math.py, unchanged.)
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_facemargin as kf

LOSSES = {
    "contrastive_l2": lambda: kf.ContrastiveLoss(distance="l2"),
    "contrastive_angular": lambda: kf.ContrastiveLoss(distance="angular"),
    "triplet_l2": lambda: kf.TripletLoss(distance="l2"),
    "triplet_angular": lambda: kf.TripletLoss(distance="angular"),
    "triplet_l2_hard": lambda: kf.TripletLoss(distance="l2", mining="hard"),
}


def _batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 6)).astype("float32")
    y = np.repeat(np.arange(4), 3)
    return x, y


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_nan_embedding_is_refused_eagerly_and_in_a_graph(name):
    x, y = _batch()
    x[4, 2] = np.nan
    with pytest.raises(ValueError, match=r"`y_pred` must be finite.*1 NaN"):
        LOSSES[name]()(y, x)
    with pytest.raises(tf.errors.InvalidArgumentError, match="y_pred"):
        tf.function(LOSSES[name]())(y, tf.constant(x))


@pytest.mark.parametrize("name, bad", [*((n, np.nan) for n in sorted(LOSSES)),
                                       ("triplet_l2", np.inf)])
def test_under_xla_a_nan_embedding_gives_nan_loss_and_zero_gradients(name, bad):
    x, y = _batch()
    x[4, 2] = bad
    emb = tf.Variable(x)
    loss_fn = LOSSES[name]()

    @tf.function(jit_compile=True)
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, emb)
        return loss, tape.gradient(loss, emb)

    loss, grad = step()
    assert np.isnan(float(loss))
    assert np.all(np.asarray(grad) == 0.0)  # finite and zero: a step changes nothing


@pytest.mark.parametrize("name", ["contrastive_l2", "triplet_angular"])
def test_xla_fit_on_a_nan_embedding_reports_nan_changes_no_weight_and_terminates(name):
    """The NaN enters the embedding after the trainable layer (a second input added to its
    output), so the weights' gradient is the loss's gradient alone: exactly 0."""
    x, y = _batch()
    poison = np.zeros_like(x[:, :5])
    poison[7, 1] = np.nan
    keras.utils.set_random_seed(0)
    inputs, extra = keras.Input((6,)), keras.Input((5,))
    emb = keras.layers.Add()([keras.layers.Dense(5)(inputs), extra])
    model = keras.Model([inputs, extra], emb)
    model.compile(keras.optimizers.SGD(0.1), loss=LOSSES[name](), jit_compile=True)
    before = [w.copy() for w in model.get_weights()]
    hist = model.fit([x, poison], y, batch_size=12, epochs=3, verbose=0, shuffle=False,
                     callbacks=[keras.callbacks.TerminateOnNaN()])
    assert np.isnan(hist.history["loss"][0])
    assert len(hist.history["loss"]) == 1  # TerminateOnNaN stopped the run
    for got, want in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(got, want)


def test_fit_without_xla_stops_with_the_error_and_changes_no_weight():
    x, y = _batch()
    x[7] = np.nan
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5)])
    model.compile(keras.optimizers.SGD(0.1), loss=kf.TripletLoss(distance="l2"),
                  jit_compile=False)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(tf.errors.InvalidArgumentError, match="y_pred"):
        model.fit(x, y, batch_size=12, epochs=1, verbose=0)
    for got, want in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(got, want)
