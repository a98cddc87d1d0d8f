"""VAL@FAR (10-fold, insightface) against a port of insightface's ``calculate_val``.

The port (``tests/insightface_reference.py``) is written from insightface's source; on ordinary
inputs ``val_at_far`` must give the same VAL, std and FAR bit for bit. The degenerate cases
(identical embeddings, tied impostor scores, a target never exceeded) must differ from it in the
documented, sane way.
"""

import numpy as np
import pytest
from insightface_reference import calculate_val, calculate_val_far, interp1d_slinear_scipy18

from keras_facemargin.evaluation import (
    VAL_THRESHOLDS,
    evaluate_pairs,
    pair_distances,
    tar_at_far,
    val_at_far,
)


def _faces(seed, pairs=6000, dim=32, noise=1.0):
    """Unit embeddings of random identities plus noise; consecutive rows form the pairs."""
    rng = np.random.default_rng(seed)
    same = rng.random(pairs) < 0.5
    ids = rng.integers(0, 10 ** 6, size=(pairs, 2))
    ids[same, 1] = ids[same, 0]
    centres = {}

    def centre(i):
        if i not in centres:
            v = np.random.default_rng(int(i) + 7 * seed).normal(size=dim)
            centres[i] = v / np.linalg.norm(v)
        return centres[i]

    emb = np.stack([centre(i) + noise * rng.normal(size=dim) / np.sqrt(dim) for i in ids.ravel()])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb, same


def _dist(emb):
    return np.sum(np.square(np.subtract(emb[0::2], emb[1::2])), 1)


def test_scipy18_port_matches_scipy_without_duplicates():
    """Where the installed scipy accepts the input (strictly increasing x), the port of scipy
    1.8's slinear evaluation gives scipy's exact values."""
    from scipy import interpolate

    rng = np.random.default_rng(0)
    for _ in range(20):
        x = np.cumsum(rng.random(50) + 1e-3)
        y = rng.normal(size=50)
        for q in np.r_[x[0], x[-1], rng.uniform(x[0], x[-1], 20), x[5]]:
            assert float(interp1d_slinear_scipy18(x, y)(q)) == float(
                interpolate.interp1d(x, y, kind="slinear")(q))


@pytest.mark.parametrize("seed,pairs,far_target,n_folds", [
    (0, 6000, 1e-3, 10), (1, 6000, 1e-2, 10), (2, 6000, 1e-1, 10), (3, 601, 1e-2, 10),
    (4, 2000, 1e-3, 5), (5, 6000, 1e-4, 10),
])
def test_bit_identical_to_insightface(seed, pairs, far_target, n_folds):
    emb, same = _faces(seed, pairs)
    want = calculate_val(VAL_THRESHOLDS, emb[0::2], emb[1::2], same, far_target, nrof_folds=n_folds)
    got = val_at_far(_dist(emb), same, far_target, n_folds=n_folds)
    assert got.adjusted == {}
    assert (got.val, got.val_std, got.far) == tuple(float(v) for v in want)
    np.testing.assert_array_equal(got.fold_thresholds, got.insightface_thresholds)
    assert 0.05 < got.val < 1.0  # a non-trivial operating point was tested


def test_evaluate_pairs_reports_val_and_names_tar_apart():
    """``evaluate_pairs`` carries VAL@FAR (10-fold) next to TAR@FAR (one ROC); both as their
    functions compute them on the same distances."""
    emb, same = _faces(6, 3000)
    rep = evaluate_pairs(emb, same, fars=(1e-2, 1e-3))
    dist = pair_distances(emb)
    for far in (1e-2, 1e-3):
        assert rep.val[far].val == val_at_far(dist, same, far).val
        assert rep.tar[far] == tar_at_far(-dist, same, [far])[far]
        want = calculate_val(VAL_THRESHOLDS, *(lambda e: (e[0::2], e[1::2]))(
            emb / np.linalg.norm(emb, axis=1, keepdims=True)), same, far)
        assert rep.val[far].val == pytest.approx(float(want[0]), abs=1e-12)


def test_identical_embeddings_val_zero_not_one():
    """All distances 0: insightface interpolates between threshold 0 (FAR 0) and 0.001 (FAR 1),
    gets 1e-6, accepts every pair: VAL 1.0 at FAR 1.0. No threshold separates anything, so the
    sane answer at FAR 1e-3 accepts nothing: VAL 0, FAR 0."""
    emb = np.ones((1200, 8)) / np.sqrt(8)
    same = np.arange(600) % 2 == 0
    want = calculate_val(VAL_THRESHOLDS, emb[0::2], emb[1::2], same, 1e-3)
    assert float(want[0]) == 1.0 and float(want[2]) == 1.0  # insightface's degenerate answer
    got = val_at_far(_dist(emb), same, 1e-3)
    assert got.val == 0.0 and got.far == 0.0
    assert sorted(got.adjusted) == list(range(10)) and "tie" in got.adjusted[0]
    np.testing.assert_allclose(got.insightface_thresholds, 1e-6)


def test_tied_impostor_scores_keep_far_within_target():
    """4% of the negative pairs share one distance (0.5) below every other negative: the training
    FAR jumps 0 -> 0.04 between grid points 0.500 and 0.501, insightface's interpolated threshold
    0.500025 accepts the whole tie: FAR 0.04, 40x the target of 1e-3. Here the threshold drops to
    0.5 and rejects the tie: FAR 0, VAL = the positives below 0.5."""
    rng = np.random.default_rng(7)
    pairs = 6000
    same = np.arange(pairs) % 2 == 0
    neg = np.flatnonzero(~same)
    dist = np.where(same, rng.uniform(0.1, 0.9, pairs), rng.uniform(1.5, 3.0, pairs))
    tied = neg[rng.random(neg.size) < 0.04]
    dist[tied] = 0.5
    # 1-D embeddings sqrt(d) and 0: both sides read the port's own distances
    e1 = np.sqrt(dist)[:, None]
    e2 = np.zeros_like(e1)
    port_dist = np.sum(np.square(np.subtract(e1, e2)), 1)
    want = calculate_val(VAL_THRESHOLDS, e1, e2, same, 1e-3)
    assert float(want[2]) > 0.03  # insightface: FAR about 40x the target
    got = val_at_far(port_dist, same, 1e-3)
    assert got.far == 0.0 and sorted(got.adjusted) == list(range(10))
    assert got.val == pytest.approx(np.mean(port_dist[same] < 0.5), abs=0.02)
    for k, thr in enumerate(got.fold_thresholds):  # training FAR within the target on every fold
        train = np.ones(pairs, bool)
        train[k * 600:(k + 1) * 600] = False
        assert calculate_val_far(thr, port_dist[train], same[train])[1] <= 1e-3


def test_target_never_exceeded_uses_largest_threshold():
    """Antipodal impostors (distance 4 > 3.999): no grid threshold reaches FAR 1e-3, insightface
    falls back to threshold 0 (VAL 0); the largest grid threshold meets the target and accepts
    every genuine pair."""
    rng = np.random.default_rng(8)
    v = rng.normal(size=(3000, 4))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    same = np.arange(3000) % 2 == 0
    e2 = np.where(same[:, None], v, -v)
    want = calculate_val(VAL_THRESHOLDS, v, e2, same, 1e-3)
    assert float(want[0]) == 0.0
    got = val_at_far(np.sum(np.square(v - e2), 1), same, 1e-3)
    assert got.val == 1.0 and got.far == 0.0 and len(got.adjusted) == 10
    np.testing.assert_array_equal(got.fold_thresholds, VAL_THRESHOLDS[-1])


def test_bad_input_names_the_argument():
    emb, same = _faces(9, 200)
    d = _dist(emb)
    with pytest.raises(ValueError, match="far_target"):
        val_at_far(d, same, 0.0)
    with pytest.raises(ValueError, match="far_target"):
        val_at_far(d, same, 1.5)
    with pytest.raises(ValueError, match="n_folds"):
        val_at_far(d, same, n_folds=1)
    with pytest.raises(ValueError, match="thresholds"):
        val_at_far(d, same, thresholds=[1.0, 0.5])
    # the first 20 pairs all positive: fold 0's test part has no negative pair
    s = same.copy()
    s[:20] = True
    with pytest.raises(ValueError, match="fold 0 test part"):
        val_at_far(d, s)


def test_cli_table_names_each_number():
    """``facemargin eval``'s table says which TAR is one ROC and which VAL is insightface's."""
    from keras_facemargin.cli.eval import format_table

    emb, same = _faces(10, 3000)
    rep = evaluate_pairs(emb, same, fars=(1e-2, 1e-3))
    head, _, row = format_table([("toy", 3000, rep)]).splitlines()
    cols = [c.strip() for c in head.strip("|").split("|")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cols) == len(cells)
    i = cols.index("VAL@FAR=0.001 (10-fold, insightface, %)")
    assert float(cells[i]) == pytest.approx(100 * val_at_far(pair_distances(emb), same, 1e-3).val,
                                            abs=0.005)
    assert cols[i + 1] == "reached FAR"
    j = cols.index("TAR@FAR=0.001 (one ROC, %)")
    assert float(cells[j]) == pytest.approx(100 * tar_at_far(-pair_distances(emb), same, [1e-3])[1e-3],
                                            abs=0.005)


def test_small_sets_leave_val_out_with_a_warning():
    emb, same = _faces(11, 30)
    with pytest.warns(UserWarning, match="VAL@FAR"):
        rep = evaluate_pairs(emb, np.r_[np.ones(3, bool), same[3:]])
    assert rep.val == {}
