"""Heads against the peer reference outputs in tests/data/peer_reference.npz (pytorch-metric-learning, insightface).

Each case feeds the stored embeddings, labels and class centres (D, C; the head holds their
transpose, one centre per row) to the head whose semantics match the peer, and compares the mean
loss (1e-5 relative) and the gradients with respect to the embeddings and the centres (1e-4
relative, max|a-b| / max|b|).
"""

import numpy as np
import pytest

import keras_facemargin as kf

from helpers import head_loss_and_grads, rel_err, set_centres

LOSS_TOL, GRAD_TOL = 1e-5, 1e-4

CASES = [
    # (case, peer, head factory, check gradients)
    ("arcface", "pml_deg0.5", lambda C: kf.ArcMarginLayer(C, margin=0.5, scale=64.0), True),
    ("arcface", "pml_deg28.6",
     lambda C: kf.ArcMarginLayer(C, margin=float(np.radians(28.6)), scale=64.0), True),
    ("arcface", "if_legacy_combined",
     lambda C: kf.ArcMarginLayer(C, margin=0.5, scale=64.0, boundary="legacy"), True),
    # insightface HEAD: no fallback, margin applied without gradient (straight-through)
    ("arcface", "if_combined",
     lambda C: kf.ArcMarginLayer(C, margin=0.5, boundary="none",
                                 margin_gradient="straight_through"), True),
    ("arcface", "if_ArcFace_cls",
     lambda C: kf.CombinedMarginLayer(C, m1=1.0, m2=0.5, m3=0.0, boundary="none",
                                      margin_gradient="straight_through"), True),
    ("cosface", "pml", lambda C: kf.CosMarginLayer(C, margin=0.35, scale=64.0), True),
    ("cosface", "if_CosFace_cls", lambda C: kf.CosMarginLayer(C, margin=0.35), True),
    ("cosface", "if_combined",
     lambda C: kf.CombinedMarginLayer(C, m1=1.0, m2=0.0, m3=0.35), True),
    # the full combined formula: only the float64 evaluation implements it
    ("combined_1.0_0.3_0.2", "formula_f64",
     lambda C: kf.CombinedMarginLayer(C, m1=1.0, m2=0.3, m3=0.2, scale=64.0), True),
    ("sphereface", "pml",
     lambda C: kf.SphereMarginLayer(C, margin=4, scale=1.0, lambda_base=0.0, lambda_min=0.0), True),
    ("large_margin_softmax", "pml_m4", lambda C: kf.LargeMarginSoftmaxLayer(C, margin=4), True),
    ("large_margin_softmax", "pml_m3", lambda C: kf.LargeMarginSoftmaxLayer(C, margin=3), True),
    ("normalized_softmax", "pml_T0.05", lambda C: kf.NormSoftmaxLayer(C, scale=1 / 0.05), True),
    ("normalized_softmax", "pml_T0.1", lambda C: kf.NormSoftmaxLayer(C, scale=1 / 0.1), True),
    ("subcenter_arcface", "pml",
     lambda C: kf.SubCenterArcMarginLayer(C, sub_centers=3, margin=float(np.radians(28.6))), True),
]


def _case(oracle, case):
    emb = oracle[f"{case}__emb"]
    labels = oracle[f"{case}__labels"]
    kernel = oracle[f"{case}__W"]
    return emb, labels, kernel


@pytest.mark.parametrize("path", ["labels", "loss"])
@pytest.mark.parametrize("case,peer,factory,grads", CASES,
                         ids=[f"{c}-{p}" for c, p, _, _ in CASES])
def test_matches_peer(oracle, case, peer, factory, grads, path):
    emb, labels, kernel = _case(oracle, case)
    sub = 3 if case == "subcenter_arcface" else 1
    head = factory(kernel.shape[1] // sub)
    loss, g_emb, g_w = head_loss_and_grads(head, emb, labels, kernel, path=path)
    key = f"{case}__{peer}__"
    assert abs(loss - float(oracle[key + "loss"])) / abs(float(oracle[key + "loss"])) < LOSS_TOL
    if grads:
        assert rel_err(g_emb, oracle[key + "grad_emb"]) < GRAD_TOL
        assert rel_err(g_w, oracle[key + "grad_W"]) < GRAD_TOL


@pytest.mark.parametrize("case,peer,factory", [
    ("arcface", "pml_deg0.5", CASES[0][2]),
    ("cosface", "pml", CASES[5][2]),
    ("combined_1.0_0.3_0.2", "formula_f64", CASES[8][2]),
    ("sphereface", "pml", CASES[9][2]),
    ("large_margin_softmax", "pml_m4", CASES[10][2]),
])
def test_logits_match_peer(oracle, case, peer, factory):
    """The final scaled logits fed to the cross-entropy, entry by entry."""
    emb, labels, kernel = _case(oracle, case)
    head = factory(kernel.shape[1])
    set_centres(head, kernel)
    logits = np.asarray(head(emb, labels))
    ref = oracle[f"{case}__{peer}__logits"]
    assert rel_err(logits, ref) < 1e-5


def test_insightface_head_combined_ignores_margins_but_ours_does_not(oracle):
    """insightface's CombinedMarginLoss(64, 1.0, 0.3, 0.2) is CosFace(0.2); ours is the formula."""
    emb, labels, kernel = _case(oracle, "combined_1.0_0.3_0.2")
    ours, _, _ = head_loss_and_grads(
        kf.CombinedMarginLayer(100, m1=1.0, m2=0.3, m3=0.2), emb, labels, kernel)
    cosface, _, _ = head_loss_and_grads(kf.CosMarginLayer(100, margin=0.2), emb, labels, kernel)
    peer = float(oracle["combined_1.0_0.3_0.2__if_combined__loss"])
    assert abs(cosface - peer) / peer < LOSS_TOL
    assert abs(ours - peer) / peer > 0.1
