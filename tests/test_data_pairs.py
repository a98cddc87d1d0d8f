"""keras_facemargin.data.lfw_like_pairs: LFW-style pairs, checked against sklearn's folds and
NumPy counts written here (not against the function's own output)."""

import numpy as np
import pytest
from sklearn.model_selection import KFold

from keras_facemargin.data import lfw_like_pairs
from keras_facemargin.data.glyphs import lfw_like_pairs as glyphs_pairs


def _labels():
    """Identities 7, 8, 9 (60, 45, 1 images: identity 9 cannot give a positive pair) and 3 (5)."""
    return np.r_[np.full(60, 7), np.full(45, 8), [9], np.full(5, 3)][np.random.default_rng(0)
                                                                      .permutation(111)]


def test_folds_are_lfw_blocks_of_the_librarys_kfold():
    """Each of scikit-learn's ``KFold(10, shuffle=False)`` test blocks (the library's folds,
    as insightface's) holds 30 same pairs followed by 30 different pairs."""
    labels = _labels()
    idx, same = lfw_like_pairs(labels, 600, seed=1)
    assert idx.shape == (600, 2) and same.shape == (600,) and same.dtype == bool
    for _, test in KFold(n_splits=10, shuffle=False).split(same):
        assert same[test].tolist() == [True] * 30 + [False] * 30
    a, b = labels[idx[:, 0]], labels[idx[:, 1]]
    np.testing.assert_array_equal(a == b, same)  # positives one identity, negatives two
    assert np.all(idx[:, 0] != idx[:, 1])  # never an image with itself
    assert 9 not in a[same]  # the identity with one image never makes a positive pair
    assert np.all((idx >= 0) & (idx < len(labels)))


def test_draw_is_seeded_and_uniform_over_identities():
    """Same seed, same pairs; another seed, other pairs. The identity of a positive pair is
    uniform over the 3 identities with 2 images or more, the two identities of a negative pair
    uniform over the 4 identities (expected counts, 5 binomial standard deviations)."""
    labels = _labels()
    idx, same = lfw_like_pairs(labels, 6000, seed=5)
    idx2, same2 = lfw_like_pairs(labels, 6000, seed=5)
    np.testing.assert_array_equal(idx, idx2)
    np.testing.assert_array_equal(same, same2)
    assert not np.array_equal(idx, lfw_like_pairs(labels, 6000, seed=6)[0])
    pos = labels[idx[same, 0]]
    for ident in (7, 8, 3):  # 3000 draws, p = 1/3
        assert abs(np.sum(pos == ident) - 1000) < 5 * np.sqrt(3000 / 3 * 2 / 3)
    neg = labels[idx[~same]].ravel()  # each identity in a negative pair with p = 1/2
    for ident in (7, 8, 9, 3):
        assert abs(np.sum(neg == ident) - 1500) < 5 * np.sqrt(3000 / 4)


def test_without_repeats_no_pair_twice():
    """repeats=False: no unordered pair of images twice, while the default draw (independent
    draws) does repeat on 3 identities; the layout is the same; too many pairs is refused."""
    labels = np.repeat([7, 8, 9], 40)
    idx, same = lfw_like_pairs(labels, 1200, seed=2, repeats=False)
    keys = {tuple(sorted(map(int, p))) for p in idx}
    assert len(keys) == 1200
    np.testing.assert_array_equal(labels[idx[:, 0]] == labels[idx[:, 1]], same)
    for _, test in KFold(n_splits=10, shuffle=False).split(same):
        assert same[test].tolist() == [True] * 60 + [False] * 60
    with_repeats = lfw_like_pairs(labels, 1200, seed=2)[0]
    assert len({tuple(sorted(map(int, p))) for p in with_repeats}) < 1200
    # 3 x C(40, 2) = 2340 distinct positive pairs: at most 1170 positives, 2340 pairs in all
    lfw_like_pairs(labels, 2340, repeats=False)
    with pytest.raises(ValueError, match="num_pairs"):
        lfw_like_pairs(labels, 2360, repeats=False)


def test_glyphs_reexports_the_same_function():
    assert glyphs_pairs is lfw_like_pairs


@pytest.mark.parametrize("kwargs,match", [
    ({"num_pairs": 30}, "num_pairs"),
    ({"num_pairs": 0}, "num_pairs"),
    ({"num_pairs": 40, "n_folds": 0}, "n_folds"),
    ({"num_pairs": 40, "labels": np.zeros((4, 2), int)}, "labels"),
    ({"num_pairs": 40, "labels": np.arange(5)}, "labels"),  # nobody has 2 images
    ({"num_pairs": 40, "labels": np.zeros(5, int)}, "labels"),  # one identity
])
def test_bad_input_names_the_argument(kwargs, match):
    kwargs = {"labels": np.repeat(np.arange(3), 2), **kwargs}
    with pytest.raises(ValueError, match=match):
        lfw_like_pairs(**kwargs)
