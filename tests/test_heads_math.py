"""Every head against closed-form cases and independent float64 NumPy re-derivations."""

import math

import numpy as np
import pytest

import keras_facemargin as kf

import reference as R
from helpers import head_loss_and_grads, set_centres


def _data(seed=0, B=12, D=6, C=5, K=1, norm_scale=1.0):
    rng = np.random.default_rng(seed)
    emb = (rng.normal(size=(B, D)) * norm_scale).astype(np.float32)
    W = rng.normal(size=(D, C * K)).astype(np.float32)
    y = rng.integers(0, C, size=B)
    return emb, W, y


def _logits(head, emb, W, y, training=False):
    if not head.built:
        set_centres(head, W)
    return np.asarray(head(emb, y, training=training), np.float64)


def test_arcface_closed_form_two_classes():
    """Two orthogonal centres e0, e1 and x = r (cos a, sin a) of class 0.

    cos_0 = cos a, cos_1 = sin a, so loss = log(1 + exp(s sin a - s cos(a + m))), independent of r.
    """
    a, m, s = math.pi / 6, 0.5, 64.0
    emb = np.array([[3.0 * math.cos(a), 3.0 * math.sin(a)]], np.float32)
    W = np.eye(2, dtype=np.float32)
    expected = math.log1p(math.exp(s * math.sin(a) - s * math.cos(a + m)))
    loss, _, _ = head_loss_and_grads(kf.ArcMarginLayer(2, margin=m, scale=s), emb, [0], W)
    assert loss == pytest.approx(expected, rel=1e-5)


def test_cosface_and_combined_closed_form():
    """Same geometry: CosFace target s (cos a - m); combined s (cos(m1 a + m2) - m3)."""
    a = 1.0
    emb = np.array([[math.cos(a), math.sin(a)]], np.float32)
    W = np.eye(2, dtype=np.float32)
    s = 30.0
    cos_loss, _, _ = head_loss_and_grads(kf.CosMarginLayer(2, margin=0.35, scale=s), emb, [0], W)
    assert cos_loss == pytest.approx(
        math.log1p(math.exp(s * math.sin(a) - s * (math.cos(a) - 0.35))), rel=1e-5)
    m1, m2, m3 = 1.2, 0.2, 0.1
    comb, _, _ = head_loss_and_grads(
        kf.CombinedMarginLayer(2, m1=m1, m2=m2, m3=m3, scale=s), emb, [0], W)
    assert comb == pytest.approx(
        math.log1p(math.exp(s * math.sin(a) - s * (math.cos(m1 * a + m2) - m3))), rel=1e-5)


@pytest.mark.parametrize("m1,m2,m3", [(1.0, 0.5, 0.0), (1.0, 0.0, 0.35), (0.9, 0.4, 0.15),
                                      (1.5, 0.3, 0.2), (2.0, 0.0, 0.0), (1.0, 3.0, 0.0)])
def test_combined_matches_numpy(m1, m2, m3):
    emb, W, y = _data(1)
    got = _logits(kf.CombinedMarginLayer(5, m1=m1, m2=m2, m3=m3, scale=16.0), emb, W, y)
    np.testing.assert_allclose(got, R.combined(emb, W, y, m1, m2, m3, 16.0), rtol=1e-4, atol=1e-4)


def test_subcenter_matches_numpy():
    emb, W, y = _data(2, K=2)
    got = _logits(kf.SubCenterArcMarginLayer(5, sub_centers=2, margin=0.4, scale=8.0), emb, W, y)
    np.testing.assert_allclose(got, R.combined(emb, W, y, 1.0, 0.4, 0.0, 8.0, K=2),
                               rtol=1e-5, atol=1e-5)


def test_normface_and_softmax_match_numpy():
    emb, W, y = _data(3)
    np.testing.assert_allclose(_logits(kf.NormSoftmaxLayer(5, scale=20.0), emb, W, y),
                               20.0 * R.cosines(emb, W), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_logits(kf.SoftmaxLayer(5), emb, W, y),
                               emb.astype(np.float64) @ W, rtol=1e-4, atol=1e-4)


def test_sphereface_lambda_annealing_schedule():
    """After n training steps lambda = max(5, 1000 (1 + 0.12 n)^-1); logits follow f = (l c + psi)/(1+l)."""
    emb, W, y = _data(4)
    head = kf.SphereMarginLayer(5, margin=4)
    set_centres(head, W)
    for step in range(3):
        got = np.asarray(head(emb, y, training=True), np.float64)
        lam = max(5.0, 1000.0 * (1 + 0.12 * step) ** -1)
        np.testing.assert_allclose(got, R.sphere(emb, W, y, 4, 1.0, lam), rtol=1e-4, atol=1e-4)
    # far in the schedule lambda reaches its floor
    head.margin_state["step"].assign(1e6)
    got = np.asarray(head(emb, y), np.float64)
    np.testing.assert_allclose(got, R.sphere(emb, W, y, 4, 1.0, 5.0), rtol=1e-4, atol=1e-4)


def test_large_margin_softmax_matches_numpy():
    emb, W, y = _data(5)
    got = _logits(kf.LargeMarginSoftmaxLayer(5, margin=3), emb, W, y)
    np.testing.assert_allclose(got, R.large_margin(emb, W, y, 3, 1.0), rtol=1e-4, atol=1e-4)


def test_curricularface_hard_negatives_and_t_update():
    emb, W, y = _data(6, B=32, C=4)
    head = kf.CurricularMarginLayer(4, margin=0.5, scale=10.0)
    got = _logits(head, emb, W, y, training=True)
    ref, t = R.curricular(emb, W, y, 0.5, 10.0, t_before=0.0)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    assert float(head.margin_state["t"]) == pytest.approx(t, rel=1e-5)
    got2 = _logits(head, emb, W, y, training=True)
    ref2, _ = R.curricular(emb, W, y, 0.5, 10.0, t_before=t)
    np.testing.assert_allclose(got2, ref2, rtol=1e-4, atol=1e-4)
    # inference: no update
    _logits(head, emb, W, y, training=False)
    assert float(head.margin_state["t"]) == pytest.approx(
        0.01 * R.cosines(emb, W)[np.arange(32), y].mean() + 0.99 * t, rel=1e-5)


def test_adaface_norm_statistics_and_margin():
    emb, W, y = _data(7, B=16, norm_scale=5.0)
    head = kf.AdaMarginLayer(5, margin=0.4, scale=16.0)
    got = _logits(head, emb, W, y, training=True)
    ref, (mean, std) = R.ada(emb, W, y, 0.4, 16.0)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    assert float(head.margin_state["batch_mean"]) == pytest.approx(mean, rel=1e-5)
    assert float(head.margin_state["batch_std"]) == pytest.approx(std, rel=1e-5)


def test_magface_margin_and_regularizer():
    emb, W, y = _data(8, norm_scale=20.0)
    head = kf.MagMarginLayer(5, scale=16.0)
    got = _logits(head, emb, W, y)
    ref, reg = R.mag(emb, W, y, 16.0)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    assert float(sum(head.losses)) == pytest.approx(reg, rel=1e-5)


@pytest.mark.parametrize("kind", ["arc", "cos"])
def test_elasticface_inference_uses_mean_margin(kind):
    emb, W, y = _data(9)
    got = _logits(kf.ElasticMarginLayer(5, margin=0.3, kind=kind, scale=8.0), emb, W, y)
    m2, m3 = (0.3, 0.0) if kind == "arc" else (0.0, 0.3)
    np.testing.assert_allclose(got, R.combined(emb, W, y, 1.0, m2, m3, 8.0), rtol=1e-4, atol=1e-4)


def test_elasticface_training_margins_are_gaussian():
    """With cos_y known, the drawn margin is recoverable: m_b = cos_y - target (cos variant)."""
    rng = np.random.default_rng(10)
    B = 4000
    emb = rng.normal(size=(B, 4)).astype(np.float32)
    W = rng.normal(size=(4, 3)).astype(np.float32)
    y = rng.integers(0, 3, B)
    head = kf.ElasticMarginLayer(3, margin=0.35, std=0.05, kind="cos", scale=1.0, seed=3)
    logits = _logits(head, emb, W, y, training=True)
    drawn = R.cosines(emb, W)[np.arange(B), y] - logits[np.arange(B), y]
    assert drawn.mean() == pytest.approx(0.35, abs=0.005)
    assert drawn.std() == pytest.approx(0.05, rel=0.08)


def test_elasticface_plus_gives_smallest_margin_to_easiest_sample():
    rng = np.random.default_rng(11)
    emb = rng.normal(size=(64, 4)).astype(np.float32)
    W = rng.normal(size=(4, 3)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    head = kf.ElasticMarginLayer(3, margin=0.35, std=0.1, kind="cos", plus=True, scale=1.0, seed=1)
    logits = _logits(head, emb, W, y, training=True)
    cy = R.cosines(emb, W)[np.arange(64), y]
    drawn = cy - logits[np.arange(64), y]
    order = np.argsort(-cy)
    assert np.all(np.diff(drawn[order]) >= -1e-6)


def test_boundary_rules_over_theta():
    """Target logit over theta in [0, pi]: the default is monotone and continuous.

    pytorch-metric-learning's rule ("legacy") is monotone but jumps by cos(m) + m sin(m) - 1 at
    pi - m; current insightface ("none") turns back up after pi - m.
    """
    m = 0.5
    theta = np.linspace(0.0, math.pi, 20001)
    emb = np.stack([np.cos(theta), np.sin(theta)], 1).astype(np.float32)
    W = np.eye(2, dtype=np.float32)
    y = np.zeros(len(theta), int)

    def target(boundary):
        logits = _logits(kf.ArcMarginLayer(2, margin=m, scale=1.0, boundary=boundary), emb, W, y)
        return logits[:, 0]

    cont = target("continuous")
    assert np.all(np.diff(cont) <= 1e-6)
    assert np.max(np.abs(np.diff(cont))) < 1e-3
    legacy = target("legacy")
    assert np.all(np.diff(legacy) <= 1e-6)
    assert np.max(np.abs(np.diff(legacy))) == pytest.approx(
        math.cos(m) + m * math.sin(m) - 1.0, abs=2e-3)
    none = target("none")
    assert none[-1] - none.min() == pytest.approx(1.0 - math.cos(m), abs=1e-3)


def test_straight_through_same_loss_other_gradient():
    emb, W, y = _data(12)
    exact = head_loss_and_grads(kf.ArcMarginLayer(5, margin=0.5, scale=16.0), emb, y, W)
    st = head_loss_and_grads(
        kf.ArcMarginLayer(5, margin=0.5, scale=16.0, margin_gradient="straight_through"),
        emb, y, W)
    assert st[0] == pytest.approx(exact[0], rel=1e-6)
    assert np.max(np.abs(st[1] - exact[1])) > 1e-3


def test_easy_margin_applies_only_to_positive_cosines():
    emb, W, y = _data(13)
    got = _logits(kf.ArcMarginLayer(5, margin=0.5, scale=4.0, easy_margin=True), emb, W, y)
    cos = R.cosines(emb, W)
    cy = cos[np.arange(len(y)), y]
    target = np.where(cy > 0, np.cos(np.arccos(cy) + 0.5), cy)
    np.testing.assert_allclose(got, R.with_target(cos, y, target, 4.0), rtol=1e-4, atol=1e-4)
