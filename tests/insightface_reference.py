"""A port of insightface's VAL@FAR code, FOR CHECKING ONLY (not library code).

Written by reading ``recognition/arcface_torch/eval/verification.py`` of deepinsight/insightface
(``LFold``, ``calculate_val``, ``calculate_val_far``; MIT licence, after David Sandberg's
facenet). The arithmetic is kept line for line; only the imports differ:

* ``interp1d(far_train, thresholds, kind="slinear")`` is replaced by
  :func:`interp1d_slinear_scipy18`, a port of how scipy 1.6 to 1.8 evaluated it. ``far_train`` is
  a step function with repeated values; scipy >= 1.9 refuses repeated ``x`` ("Expect x to not
  have duplicates", scipy issue 21550), so insightface's function raises on every input with a
  current scipy, and scipy < 1.6 sorted ``x`` unstably. The port follows scipy 1.8's
  ``interp1d.__init__`` (stable ``argsort``), ``make_interp_spline`` for ``k=1`` (knots
  ``r_[x[0], x, x[-1]]``, coefficients ``y``), ``_bspl.find_interval`` and ``_bspl._deBoor_D``;
  :func:`test_evaluation_val.test_scipy18_port_matches_scipy_without_duplicates` checks it against
  the installed scipy where both accept the input.
"""

import numpy as np
from sklearn.model_selection import KFold


def interp1d_slinear_scipy18(x, y):
    """``scipy.interpolate.interp1d(x, y, kind="slinear")`` as scipy 1.6-1.8 computed it."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ind = np.argsort(x, kind="mergesort")
    x, y = x[ind], y[ind]
    if np.any(x[1:] < x[:-1]):
        raise ValueError("Expect x to be a 1-D sorted array_like.")
    k = 1
    t = np.r_[x[0], x, x[-1]]
    c = y

    def f(x_new):
        x_new = float(x_new)
        if x_new < x[0]:
            raise ValueError("A value in x_new is below the interpolation range.")
        if x_new > x[-1]:
            raise ValueError("A value in x_new is above the interpolation range.")
        # _bspl.find_interval(t, k, xval, prev_l=k, extrapolate=True)
        n = t.shape[0] - k - 1
        ell = k
        while x_new < t[ell] and ell != k:
            ell -= 1
        ell += 1
        while x_new >= t[ell] and ell != n:
            ell += 1
        ell -= 1
        # _bspl._deBoor_D(t, x, k, ell, m=0, result=h)
        h = [1.0, 0.0]
        hh = [h[0]]
        h[0] = 0.0
        xb, xa = t[ell + 1], t[ell]
        if xb == xa:
            h[1] = 0.0
        else:
            w = hh[0] / (xb - xa)
            h[0] += w * (xb - x_new)
            h[1] = w * (x_new - xa)
        out = 0.0
        for a in range(k + 1):
            out += c[ell + a - k] * h[a]
        return np.array(out)

    return f


class LFold:
    def __init__(self, n_splits=2, shuffle=False):
        self.n_splits = n_splits
        if self.n_splits > 1:
            self.k_fold = KFold(n_splits=n_splits, shuffle=shuffle)

    def split(self, indices):
        if self.n_splits > 1:
            return self.k_fold.split(indices)
        return [(indices, indices)]


def calculate_val(thresholds, embeddings1, embeddings2, actual_issame, far_target, nrof_folds=10):
    assert embeddings1.shape[0] == embeddings2.shape[0]
    assert embeddings1.shape[1] == embeddings2.shape[1]
    nrof_pairs = min(len(actual_issame), embeddings1.shape[0])
    nrof_thresholds = len(thresholds)
    k_fold = LFold(n_splits=nrof_folds, shuffle=False)

    val = np.zeros(nrof_folds)
    far = np.zeros(nrof_folds)

    diff = np.subtract(embeddings1, embeddings2)
    dist = np.sum(np.square(diff), 1)
    indices = np.arange(nrof_pairs)

    for fold_idx, (train_set, test_set) in enumerate(k_fold.split(indices)):
        far_train = np.zeros(nrof_thresholds)
        for threshold_idx, threshold in enumerate(thresholds):
            _, far_train[threshold_idx] = calculate_val_far(
                threshold, dist[train_set], actual_issame[train_set])
        if np.max(far_train) >= far_target:
            f = interp1d_slinear_scipy18(far_train, thresholds)
            threshold = f(far_target)
        else:
            threshold = 0.0

        val[fold_idx], far[fold_idx] = calculate_val_far(
            threshold, dist[test_set], actual_issame[test_set])

    val_mean = np.mean(val)
    far_mean = np.mean(far)
    val_std = np.std(val)
    return val_mean, val_std, far_mean


def calculate_val_far(threshold, dist, actual_issame):
    predict_issame = np.less(dist, threshold)
    true_accept = np.sum(np.logical_and(predict_issame, actual_issame))
    false_accept = np.sum(np.logical_and(predict_issame, np.logical_not(actual_issame)))
    n_same = np.sum(actual_issame)
    n_diff = np.sum(np.logical_not(actual_issame))
    val = float(true_accept) / float(n_same)
    far = float(false_accept) / float(n_diff)
    return val, far
