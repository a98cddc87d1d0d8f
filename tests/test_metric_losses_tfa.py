"""docs/metric_losses.md's table "reproducing tensorflow-addons' triplet losses": each row
checked against a port of tensorflow-addons' own NumPy references (``tests/tfa_reference.py``),
on batches drawn as its tests draw them (uniform [0, 1) embeddings of dimension 6, 4 classes)."""

import numpy as np
import pytest
from tfa_reference import DIST_FUNCS, triplet_hard_loss_np, triplet_semihard_loss_np

from keras_facemargin import TripletLoss

_DIST = {"L2": "l2", "squared-L2": "squared_l2"}


def _batch(seed, n, every_anchor_has_positive):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 6)).astype(np.float32)
    if every_anchor_has_positive:
        y = np.repeat(np.arange(n // 2) % 4, 2)  # pairs: each anchor has >= 1 positive
        rng.shuffle(y)
    else:
        y = rng.integers(0, 4, size=n)
    return x, y


def _ours(loss, x, y):
    return float(loss(y, x))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("metric", ["L2", "squared-L2"])
def test_semihard_l2_and_squared_l2(seed, metric):
    """TripletSemiHardLoss(distance_metric=M) == TripletLoss(margin=1.0, distance=M, normalize=False)
    (mining="semihard" and its average over all anchor-positive pairs are the defaults)."""
    x, y = _batch(seed, 10, seed % 2 == 0)
    if len(np.unique(y)) == len(y):
        pytest.skip("no positive pair")
    want = triplet_semihard_loss_np(y, x.astype(np.float64), 1.0, DIST_FUNCS[metric])
    got = _ours(TripletLoss(margin=1.0, distance=_DIST[metric], normalize=False), x, y)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_semihard_defaults():
    """TripletSemiHardLoss() is margin 1.0 on the (unsquared) L2 distance of raw embeddings."""
    x, y = _batch(7, 10, True)
    want = triplet_semihard_loss_np(y, x.astype(np.float64))
    assert _ours(TripletLoss(1.0, "l2", normalize=False), x, y) == pytest.approx(want, rel=1e-5)
    # our defaults (squared L2 of unit vectors, margin 0.2) are a different loss
    assert abs(_ours(TripletLoss(), x, y) - want) > 1e-3


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("margin", [0.1, 0.5, 1.0])
def test_semihard_angular_is_half_squared_l2_with_double_margin(seed, margin):
    """TFA's "angular" is 1 - cos = ||a - b||^2 / 2 on unit vectors, so
    max(0, (1-cos_ap) - (1-cos_an) + m) = 0.5 * max(0, d_ap - d_an + 2m) with d the squared L2
    of the normalized embeddings; the semi-hard choice depends only on the order of the
    distances, which the factor keeps."""
    x, y = _batch(seed, 10, True)
    want = triplet_semihard_loss_np(y, x.astype(np.float64), margin, DIST_FUNCS["angular"])
    got = 0.5 * _ours(TripletLoss(margin=2 * margin, distance="squared_l2", normalize=True), x, y)
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6)
    # not our "angular" (arccos, radians)
    assert abs(_ours(TripletLoss(margin=margin, distance="angular"), x, y) - want) > 1e-3


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("metric", ["L2", "squared-L2", "angular"])
def test_hard_when_every_anchor_has_a_positive(seed, metric):
    """TripletHardLoss(distance_metric=M) == TripletLoss(margin=1.0, distance=M, normalize=False,
    mining="hard", average="all") when every anchor has a positive (P x K batches); for
    "angular", 0.5 x the squared-L2 loss of unit vectors with margin 2."""
    x, y = _batch(seed, 20, True)
    want = triplet_hard_loss_np(y, x.astype(np.float64), 1.0, DIST_FUNCS[metric])
    if metric == "angular":
        got = 0.5 * _ours(TripletLoss(2.0, "squared_l2", "hard", normalize=True, average="all"), x, y)
    else:
        got = _ours(TripletLoss(1.0, _DIST[metric], "hard", normalize=False, average="all"), x, y)
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_hard_differs_for_anchors_without_positive(seed):
    """TFA averages over all B anchors and gives an anchor without a positive d_ap = 0, i.e. a
    term max(0, m - min_n d_an); ours leaves such anchors out. TFA's value is
    (kept * ours + sum over those anchors of max(0, m - min d_an)) / B."""
    rng = np.random.default_rng(seed)
    x = rng.random((20, 6)).astype(np.float32)
    y = np.r_[np.repeat(np.arange(8) % 4, 2), [10, 11, 12, 13]]  # 4 anchors without a positive
    rng.shuffle(y)
    want = triplet_hard_loss_np(y, x.astype(np.float64))
    ours = _ours(TripletLoss(1.0, "l2", "hard", normalize=False, average="all"), x, y)
    alone = np.array([np.sum(y == v) == 1 for v in y])
    d = DIST_FUNCS["L2"](x.astype(np.float64))
    extra = sum(max(0.0, 1.0 - np.min(d[i][y != y[i]])) for i in np.flatnonzero(alone))
    assert abs(ours - want) > 1e-4
    assert (ours * np.sum(~alone) + extra) / len(y) == pytest.approx(want, rel=1e-4)
