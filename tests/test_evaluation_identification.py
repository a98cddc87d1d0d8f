"""1:N identification and ArcFace Table 3 angle statistics vs brute-force references."""

import numpy as np
import pytest

from keras_facemargin.evaluation import angle_statistics, identification


def _brute_identification(g, gy, p, py, fpir):
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    pn = p / np.linalg.norm(p, axis=1, keepdims=True)
    ids = sorted(set(gy.tolist()))
    rank1, top, pred, mated = [], [], [], []
    for q in range(len(p)):
        best = {i: max(float(pn[q] @ gn[k]) for k in range(len(g)) if gy[k] == i) for i in ids}
        winner = max(ids, key=lambda i: (best[i], -ids.index(i)))
        top.append(best[winner])
        pred.append(winner)
        mated.append(py[q] in ids)
        if py[q] in ids:
            rank1.append(winner == py[q])
    top, pred, mated = np.array(top), np.array(pred), np.array(mated)
    nonmated = np.sort(top[~mated])[::-1]
    # smallest threshold (strictly above a non-mated score) that accepts <= fpir of them
    tpir = 0.0
    for t in np.r_[nonmated, -np.inf]:
        if np.mean(top[~mated] > t) <= fpir:
            tpir = max(tpir, np.mean((pred[mated] == py[mated]) & (top[mated] > t)))
    return np.mean(rank1), tpir


def test_identification_matches_brute_force():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, 8))
    gy = np.repeat(np.arange(8), 2)  # identities 0-7 enrolled twice
    g = centres[gy] + 0.6 * rng.normal(size=(16, 8))
    py = rng.integers(0, 12, size=60)  # 8-11 are not enrolled (non-mated)
    p = centres[py] + 0.6 * rng.normal(size=(60, 8))
    rep = identification(g, gy, p, py, fpirs=(0.1, 0.3))
    for fpir in (0.1, 0.3):
        r1, tpir = _brute_identification(g, gy, p, py, fpir)
        assert rep.rank1 == pytest.approx(r1)
        assert rep.tpir[fpir] == pytest.approx(tpir)
    assert rep.num_mated == int(np.sum(py < 8))
    assert np.all(np.diff(rep.cmc) >= 0) and rep.cmc[7] == 1.0  # 8 identities: rank 8 is certain


def test_identification_bad_input():
    with pytest.raises(ValueError, match="gallery_labels"):
        identification(np.eye(3), [0, 1], np.eye(3), [0, 1, 2])
    with pytest.raises(ValueError, match="max_rank"):
        identification(np.eye(3), [0, 1, 2], np.eye(3), [0, 1, 2], max_rank=0)


def test_angle_statistics_closed_form():
    """Class 0 at +-10 degrees around 0 deg, class 1 at +-10 around 90 deg, class 2 at 180 deg.
    Centres: 0, 90, 180 deg -> Intra = (10*4 + 0*2)/6, Inter = mean(90, 90, 90) = 90.
    Weights at 5, 95, 185 deg -> W-EC = 5, W-Inter = 90."""
    deg = np.array([-10, 10, 80, 100, 180, 180])
    y = np.array([0, 0, 1, 1, 2, 2])
    e = np.stack([np.cos(np.radians(deg)), np.sin(np.radians(deg))], axis=1) * 3.0
    wdeg = np.radians([5, 95, 185])
    w = np.stack([np.cos(wdeg), np.sin(wdeg)])  # (D, C)
    s = angle_statistics(e, y, w)
    assert s.intra == pytest.approx(40 / 6)
    assert s.inter == pytest.approx(90)
    assert s.w_ec == pytest.approx(5)
    assert s.w_inter == pytest.approx(90)


def test_angle_statistics_subcenters_and_brute_force():
    rng = np.random.default_rng(1)
    e = rng.normal(size=(50, 6))
    y = rng.integers(0, 5, 50)
    w = rng.normal(size=(6, 10))  # K = 2
    s = angle_statistics(e, y, w, sub_centers=2)
    en = e / np.linalg.norm(e, axis=1, keepdims=True)
    ang = lambda a, b: np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)))  # noqa: E731
    cent = [en[y == c].mean(0) for c in range(5)]
    assert s.intra == pytest.approx(np.mean([ang(en[i], cent[y[i]]) for i in range(50)]))
    assert s.inter == pytest.approx(np.mean([min(ang(cent[a], cent[b]) for b in range(5) if b != a)
                                             for a in range(5)]))
    wc = [min((w[:, 2 * c + k] for k in range(2)), key=lambda v: ang(v, cent[c])) for c in range(5)]
    assert s.w_ec == pytest.approx(np.mean([ang(wc[c], cent[c]) for c in range(5)]))
    with pytest.raises(ValueError, match="sub_centers"):
        angle_statistics(e, y, w, sub_centers=3)


@pytest.mark.parametrize("where, rows", [("probe", [3]), ("probe", list(range(10))),
                                         ("gallery", [7])])
def test_nan_rows_are_refused_by_row(where, rows):
    """Before: a NaN probe, all-NaN probes and a NaN gallery row gave rank-1 1.000 / 0.100 /
    0.900 (a NaN similarity sorts like a number). Now a ValueError naming the rows."""
    rng = np.random.default_rng(0)
    g = rng.normal(size=(10, 8))
    gy = np.arange(10)
    p = g + 0.01 * rng.normal(size=g.shape)
    (p if where == "probe" else g)[rows, 1] = np.nan
    shown = ", ".join(map(str, rows))
    with pytest.raises(ValueError, match=rf"`{where}_embeddings` must be finite: {len(rows)} of "
                                         rf"10 rows.*rows \[{shown}\]"):
        identification(g, gy, p, gy)
