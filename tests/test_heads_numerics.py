"""No NaN or Inf in any head's loss or gradients, anywhere in theta, at cos = +-1, at zero norm."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

import keras_facemargin as kf

from helpers import set_centres

HEADS = {
    "arc": lambda: kf.ArcMarginLayer(3, margin=0.5, scale=64.0),
    "arc_legacy": lambda: kf.ArcMarginLayer(3, margin=0.5, scale=64.0, boundary="legacy"),
    "arc_none": lambda: kf.ArcMarginLayer(3, margin=0.5, scale=64.0, boundary="none"),
    "cos": lambda: kf.CosMarginLayer(3, margin=0.35, scale=64.0),
    "combined": lambda: kf.CombinedMarginLayer(3, m1=1.3, m2=0.3, m3=0.2, scale=64.0),
    "norm": lambda: kf.NormSoftmaxLayer(3, scale=64.0, learnable_scale=True),
    "sphere": lambda: kf.SphereMarginLayer(3, margin=4),
    "lsoftmax": lambda: kf.LargeMarginSoftmaxLayer(3, margin=4),
    "subcenter": lambda: kf.SubCenterArcMarginLayer(3, sub_centers=2),
    "curricular": lambda: kf.CurricularMarginLayer(3),
    "ada": lambda: kf.AdaMarginLayer(3),
    "mag": lambda: kf.MagMarginLayer(3),
    "elastic": lambda: kf.ElasticMarginLayer(3, seed=0),
    "softmax": lambda: kf.SoftmaxLayer(3),
}


def _geometry(thetas, norm):
    """Embeddings at exact angles ``thetas`` from the class-0 centre e0 (in the e0-e1 plane)."""
    thetas = np.asarray(thetas, np.float64)
    emb = np.zeros((len(thetas), 3), np.float32)
    emb[:, 0] = norm * np.cos(thetas)
    emb[:, 1] = norm * np.sin(thetas)
    emb[thetas == 0.0] = [norm, 0, 0]          # cos = +1 exactly
    emb[thetas == math.pi] = [-norm, 0, 0]     # cos = -1 exactly
    W = np.eye(3, dtype=np.float32)
    return emb, W


def _loss_grads(head, emb, W, labels, training=True):
    emb = tf.Variable(emb)
    set_centres(head, np.repeat(W, head.sub_centers, axis=1))
    with tf.GradientTape() as tape:
        logits = head(emb, labels, training=training)
        loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        loss = tf.reduce_mean(loss) + sum(head.losses)
    grads = tape.gradient(loss, [emb, head.kernel.value] + [v.value for v in
                                                             head.trainable_weights[1:]])
    return loss, grads


def _assert_finite(loss, grads):
    assert np.isfinite(float(loss))
    for g in grads:
        assert g is not None and np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("name", sorted(HEADS))
def test_boundary_cases_are_finite(name):
    thetas = [0.0, 1e-7, 0.3, math.pi / 2, math.pi - 0.5, math.pi - 0.5 + 1e-6, math.pi - 1e-7,
              math.pi]
    emb, W = _geometry(thetas, norm=1.0)
    _assert_finite(*_loss_grads(HEADS[name](), emb, W, np.zeros(len(thetas), "int32")))


@pytest.mark.parametrize("name", sorted(HEADS))
@pytest.mark.parametrize("norm", [0.0, 1e-30, 1e-8, 1e3])
def test_zero_and_tiny_embeddings_are_finite(name, norm):
    emb, W = _geometry([0.0, 1.0, math.pi], norm=norm)
    _assert_finite(*_loss_grads(HEADS[name](), emb, W, np.array([0, 1, 2], "int32")))


@settings(max_examples=25, deadline=None)
@given(thetas=st.lists(st.one_of(st.floats(0.0, math.pi), st.sampled_from([0.0, math.pi])),
                       min_size=1, max_size=6),
       norm=st.one_of(st.floats(1e-6, 1e3), st.just(0.0)),
       name=st.sampled_from(sorted(HEADS)))
def test_property_no_nan_anywhere_in_theta(thetas, norm, name):
    emb, W = _geometry(thetas, norm=norm)
    _assert_finite(*_loss_grads(HEADS[name](), emb, W, np.zeros(len(thetas), "int32")))


@settings(max_examples=20, deadline=None)
@given(theta=st.floats(0.0, math.pi), m=st.floats(0.0, 1.5))
def test_property_default_arcface_target_is_monotone_and_continuous(theta, m):
    """psi(theta + m) never exceeds its value at a slightly smaller angle, and has no jump."""
    d = 1e-3
    thetas = [theta, min(theta + d, math.pi)]
    emb, W = _geometry(thetas, norm=1.0)
    head = kf.ArcMarginLayer(3, margin=m, scale=1.0)
    set_centres(head, W)
    t = np.asarray(head(emb, np.zeros(2, "int32")))[:, 0]
    assert t[1] <= t[0] + 1e-5
    assert t[0] - t[1] <= 2 * d + 1e-5  # Lipschitz in theta: continuous


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_head_computes_in_float32(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        head = kf.ArcMarginLayer(3, margin=0.5, scale=64.0)
        emb, W = _geometry([0.0, 0.5, math.pi], norm=1.0)
        x = keras.ops.cast(emb, policy.split("_")[1])
        set_centres(head, W)
        logits = head(x, np.array([0, 1, 2]))
        assert head.compute_dtype == "float32" and logits.dtype == "float32"
        assert np.all(np.isfinite(np.asarray(logits)))
    finally:
        keras.mixed_precision.set_global_policy("float32")
