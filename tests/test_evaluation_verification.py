"""Verification metrics vs scikit-learn and brute-force NumPy references written here."""

import numpy as np
import pytest
from sklearn import metrics

from keras_facemargin.evaluation import (
    equal_error_rate,
    evaluate_pairs,
    kfold_accuracy,
    pair_distances,
    roc_auc,
    roc_curve,
    tar_at_far,
)


def _scores(seed, n=300, ties=False):
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.5
    scores = rng.normal(size=n) + 1.2 * labels
    if ties:
        scores = np.round(scores, 1)
    return scores, labels


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_roc_and_auc_match_sklearn(seed, ties):
    scores, labels = _scores(seed, ties=ties)
    fpr, tpr, thr = roc_curve(scores, labels)
    sk_fpr, sk_tpr, sk_thr = metrics.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])
    assert roc_auc(scores, labels) == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-12)


def test_eer_brute_force():
    """EER: the FPR where FPR and FNR cross, checked against a dense threshold sweep."""
    scores, labels = _scores(3, n=2000)
    grid = np.linspace(scores.min() - 1, scores.max() + 1, 20001)
    fpr = np.array([np.mean(scores[~labels] >= t) for t in grid[::10]])
    fnr = np.array([np.mean(scores[labels] < t) for t in grid[::10]])
    i = np.argmin(np.abs(fpr - fnr))
    assert equal_error_rate(scores, labels) == pytest.approx((fpr[i] + fnr[i]) / 2, abs=3e-3)
    # perfectly separated scores: EER 0; reversed: 1
    assert equal_error_rate([2.0, 1.0], [True, False]) == 0.0
    assert equal_error_rate([1.0, 2.0], [True, False]) == 1.0


def test_tar_at_far_brute_force():
    scores, labels = _scores(4, n=3000)
    got = tar_at_far(scores, labels, fars=(1e-1, 1e-2, 1e-3, 1e-4))
    neg, pos = scores[~labels], scores[labels]
    for far, tar in got.items():
        best = 0.0
        for t in np.r_[np.unique(scores), np.inf]:  # accept score >= t
            if np.mean(neg >= t) <= far:
                best = max(best, np.mean(pos >= t))
        assert tar == pytest.approx(best), far


def _insightface_kfold_brute(dist, issame, n_folds=10):
    """Brute force: contiguous folds (sklearn KFold), every grid threshold tried on train."""
    from sklearn.model_selection import KFold

    thresholds = np.arange(0, 4, 0.01)
    accs = []
    for train, test in KFold(n_splits=n_folds, shuffle=False).split(dist):
        train_acc = [np.mean((dist[train] < t) == issame[train]) for t in thresholds]
        t = thresholds[int(np.argmax(train_acc))]
        accs.append(np.mean((dist[test] < t) == issame[test]))
    return np.mean(accs), np.std(accs)


@pytest.mark.parametrize("n_pairs", [600, 123])
def test_kfold_accuracy_matches_brute_force(n_pairs):
    rng = np.random.default_rng(n_pairs)
    issame = rng.random(n_pairs) < 0.5
    dist = np.clip(rng.normal(1.0, 0.35, n_pairs) + 0.6 * ~issame, 0, 4)
    got = kfold_accuracy(dist, issame)
    mean, std = _insightface_kfold_brute(dist, issame)
    assert got.mean == pytest.approx(mean, abs=1e-12)
    assert got.std == pytest.approx(std, abs=1e-12)
    assert len(got.fold_accuracies) == 10


def test_kfold_is_not_the_optimistic_whole_set_threshold():
    """On noisy scores the held-out accuracy is below the accuracy of the best threshold
    chosen on all pairs (an upper bound), never above it."""
    rng = np.random.default_rng(7)
    issame = rng.random(400) < 0.5
    dist = np.clip(rng.normal(1.5, 0.5, 400) + 0.3 * ~issame, 0, 4)
    whole = max(np.mean((dist < t) == issame) for t in np.arange(0, 4, 0.01))
    got = kfold_accuracy(dist, issame)
    assert got.mean <= whole + 1e-12


def test_pair_distances_and_flip_closed_form():
    """Pair (e0, e1) at 90 degrees: squared distance 2; the flip embeddings rotate the sum."""
    e = np.array([[2.0, 0.0], [0.0, 5.0]])
    assert pair_distances(e).tolist() == pytest.approx([2.0])
    # flipped embeddings equal to the originals: same directions, same distance
    assert pair_distances(e, e).tolist() == pytest.approx([2.0])
    # flip sums (1,0)+(0,1) and (0,1)+(0,1): 45 degrees apart -> 2 - 2 cos 45
    f = np.array([[0.0, 2.0], [0.0, 5.0]])
    assert pair_distances(e, f)[0] == pytest.approx(2 - 2 * np.cos(np.pi / 4))


def test_evaluate_pairs_on_separable_data():
    rng = np.random.default_rng(0)
    ids = rng.normal(size=(40, 16))
    e, same = [], []
    for i in range(200):
        a = rng.integers(40)
        b = a if i % 2 == 0 else (a + 1 + rng.integers(39)) % 40
        e += [ids[a] + 0.05 * rng.normal(size=16), ids[b] + 0.05 * rng.normal(size=16)]
        same.append(a == b)
    rep = evaluate_pairs(np.array(e), same)
    assert rep.accuracy == 1.0 and rep.accuracy_std == 0.0
    assert rep.auc == 1.0 and rep.eer == 0.0 and rep.tar[1e-2] == 1.0


@pytest.mark.parametrize("kwargs,match", [
    (dict(distances=[0.1, 0.2], issame=[True]), "distances"),
    (dict(distances=[0.1] * 20, issame=[True, False] * 10, n_folds=1), "n_folds"),
    (dict(distances=[np.nan] * 2, issame=[True, False], n_folds=2), "finite"),
    (dict(distances=[0.1, 0.2], issame=[2, 3], n_folds=2), "issame"),
])
def test_kfold_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kfold_accuracy(**kwargs)


def test_bad_input_messages():
    with pytest.raises(ValueError, match="both positive and negative"):
        roc_curve([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="fars"):
        tar_at_far([0.1, 0.2], [True, False], fars=[0.0])
    with pytest.raises(ValueError, match="embeddings"):
        pair_distances(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="flip_embeddings"):
        pair_distances(np.zeros((2, 4)), np.zeros((2, 3)))
