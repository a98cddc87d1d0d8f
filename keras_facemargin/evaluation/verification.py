"""Face verification metrics as the field reports them (NumPy only, no TensorFlow or Keras).

* :func:`kfold_accuracy`: the LFW 10-fold protocol exactly as insightface computes it: squared
  L2 distance of L2-normalized embeddings, thresholds 0 to 4 in steps of 0.01, the threshold
  chosen on 9 contiguous folds and applied to the 10th; mean and std of the 10 test accuracies.
  Choosing the threshold on the whole set is optimistic and is deliberately not offered.
* :func:`roc_curve`, :func:`roc_auc`, :func:`equal_error_rate`, :func:`tar_at_far` on similarity
  scores (higher = more likely the same identity). ``tar_at_far`` reads **one ROC over all pairs**
  (no folds): "TAR@FAR (one ROC)".
* :func:`val_at_far`: insightface's ``calculate_val``, the VAL@FAR that papers quote: a distance
  threshold interpolated to the target FAR on 9 folds, VAL and FAR measured on the 10th:
  "VAL@FAR (10-fold, insightface)". Its degenerate answers (ties, identical embeddings) are not
  copied; see the function.
* :func:`evaluate_pairs`: all of the above for one verification set, with or without the flip test
  (the embedding of an image plus the embedding of its mirror image).

Reference: Deng et al., ArcFace, CVPR 2019, Sec. 4 (LFW "unrestricted with labelled outside data").
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

#: insightface's threshold grid on the squared L2 distance of unit vectors (0 <= d <= 4).
DEFAULT_THRESHOLDS = np.arange(0.0, 4.0, 0.01)
DEFAULT_FARS = (1e-2, 1e-3, 1e-4)
#: insightface's finer grid for VAL@FAR (``calculate_val`` in ``eval/verification.py``).
VAL_THRESHOLDS = np.arange(0.0, 4.0, 0.001)


def _as_pairs(issame, name: str = "issame") -> np.ndarray:
    arr = np.asarray(issame)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"`{name}` must be a non-empty 1-D sequence of booleans. "
                         f"Received: {name} with shape {arr.shape}")
    if arr.dtype != bool:
        if not np.all(np.isin(arr, (0, 1))):
            raise ValueError(f"`{name}` must hold booleans (or 0/1). Received: {name}={arr[:8]!r}")
        arr = arr.astype(bool)
    return arr


def _as_scores(scores, n: int, name: str = "scores") -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"`{name}` must have shape ({n},) to match the labels. "
                         f"Received: {name} with shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` must be finite. Received: {np.sum(~np.isfinite(arr))} "
                         f"non-finite values in {name}")
    return arr


def l2_normalize(x, axis: int = -1, epsilon: float = 1e-12) -> np.ndarray:
    """Divide by the L2 norm along ``axis`` (rows of zeros stay zero).

    Args:
        x: array of embeddings, e.g. shape (N, D).
        axis: axis holding the embedding. Defaults to `-1`.
        epsilon: smallest norm divided by. Defaults to `1e-12`.

    Returns:
        float64 array of the shape of ``x``, unit rows.

    Example:

    >>> from keras_facemargin.evaluation import l2_normalize
    >>> l2_normalize([[3.0, 4.0]]).tolist()
    [[0.6, 0.8]]
    """
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), epsilon)


def pair_distances(embeddings, flip_embeddings=None) -> np.ndarray:
    """Squared L2 distance of each consecutive pair (rows 2i, 2i+1) after L2 normalization.

    Args:
        embeddings: (2P, D) embeddings of the pair images in insightface's order
            (image 0 of pair 0, image 1 of pair 0, image 0 of pair 1, ...).
        flip_embeddings: optional (2P, D) embeddings of the mirrored images; when given they
            are added to ``embeddings`` before normalization (the flip test). Defaults to `None`.

    Returns:
        (P,) distances in [0, 4].

    Example:

    >>> import numpy as np
    >>> from keras_facemargin.evaluation import pair_distances
    >>> pair_distances(np.array([[1.0, 0.0], [0.0, 2.0]])).tolist()
    [2.0]
    """
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] == 0 or e.shape[0] % 2:
        raise ValueError("`embeddings` must have shape (2 * num_pairs, dim) with num_pairs >= 1. "
                         f"Received: embeddings with shape {e.shape}")
    if flip_embeddings is not None:
        f = np.asarray(flip_embeddings, dtype=np.float64)
        if f.shape != e.shape:
            raise ValueError(f"`flip_embeddings` must have the shape of `embeddings` {e.shape}. "
                             f"Received: flip_embeddings with shape {f.shape}")
        e = e + f
    e = l2_normalize(e)
    return np.sum(np.square(e[0::2] - e[1::2]), axis=1)


def _accuracy_at(threshold: float, dist: np.ndarray, issame: np.ndarray) -> float:
    return float(np.mean((dist < threshold) == issame))


def _tpr_fpr_at(threshold: float, dist: np.ndarray, issame: np.ndarray) -> tuple[float, float]:
    predict = dist < threshold
    tp = np.sum(predict & issame)
    fp = np.sum(predict & ~issame)
    pos, neg = np.sum(issame), np.sum(~issame)
    return (float(tp / pos) if pos else 0.0, float(fp / neg) if neg else 0.0)


def _fold_bounds(n: int, n_folds: int) -> np.ndarray:
    """Start/end of scikit-learn's ``KFold(n_folds, shuffle=False)`` blocks (as insightface)."""
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1  # the first n % k folds get one extra pair
    return np.concatenate([[0], np.cumsum(sizes)])


def _check_folds(n_folds, n: int) -> None:
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or not (
            2 <= n_folds <= n):
        raise ValueError(f"`n_folds` must be an integer in [2, {n}] (the number of "
                         f"pairs). Received: n_folds={n_folds!r}")


def _folds_have_both(issame: np.ndarray, n_folds: int) -> bool:
    """Whether every fold, and every complement of a fold, holds positive and negative pairs."""
    bounds = _fold_bounds(len(issame), n_folds)
    pos, n = int(np.sum(issame)), len(issame)
    for k in range(n_folds):
        p = int(np.sum(issame[bounds[k]:bounds[k + 1]]))
        size = int(bounds[k + 1] - bounds[k])
        if p in (0, size) or pos - p in (0, n - size):
            return False
    return True


@dataclass
class KFoldResult:
    """Result of :func:`kfold_accuracy`.

    Args:
        mean: mean test accuracy over the folds.
        std: population standard deviation (ddof 0, as insightface) over the folds.
        fold_accuracies: (n_folds,) test accuracy of each fold.
        fold_thresholds: (n_folds,) distance threshold chosen on the other folds.
        tpr: (T,) true-positive rate at each grid threshold, averaged over the test folds.
        fpr: (T,) false-positive rate at each grid threshold, averaged over the test folds.

    Returns:
        A plain record.

    Example:

    >>> from keras_facemargin.evaluation import KFoldResult
    >>> KFoldResult(0.9, 0.01, [], [], [], []).mean
    0.9
    """

    mean: float
    std: float
    fold_accuracies: np.ndarray
    fold_thresholds: np.ndarray
    tpr: np.ndarray = field(repr=False)
    fpr: np.ndarray = field(repr=False)


def kfold_accuracy(distances, issame, n_folds: int = 10, thresholds=None) -> KFoldResult:
    """LFW-protocol accuracy: a distance threshold chosen on ``n_folds - 1`` folds, tested on the rest.

    Folds are contiguous blocks of pairs (scikit-learn ``KFold(n_folds, shuffle=False)``, as
    insightface), a pair is predicted "same" when ``distance < threshold``, and the training
    threshold is the first of the grid with the highest training accuracy.

    Args:
        distances: (P,) squared L2 distances of normalized embeddings (see :func:`pair_distances`).
        issame: (P,) booleans, True for a same-identity pair.
        n_folds: number of folds, 2 <= n_folds <= P. Defaults to `10`.
        thresholds: grid of candidate thresholds. Defaults to `numpy.arange(0, 4, 0.01)`.

    Returns:
        :class:`KFoldResult` (mean, std, per-fold accuracies and thresholds, averaged ROC on
        the grid).

    Example:

    >>> import numpy as np
    >>> from keras_facemargin.evaluation import kfold_accuracy
    >>> d = np.array([0.1, 3.0] * 10); same = np.array([True, False] * 10)
    >>> kfold_accuracy(d, same).mean
    1.0
    """
    issame = _as_pairs(issame)
    dist = _as_scores(distances, len(issame), "distances")
    _check_folds(n_folds, len(issame))
    grid = DEFAULT_THRESHOLDS if thresholds is None else np.asarray(thresholds, np.float64)
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError(f"`thresholds` must be a non-empty 1-D array. Received: shape {grid.shape}")
    bounds = _fold_bounds(len(issame), n_folds)
    accs, chosen = np.zeros(n_folds), np.zeros(n_folds)
    tprs, fprs = np.zeros((n_folds, grid.size)), np.zeros((n_folds, grid.size))
    # accuracy of every threshold on every pair, vectorized: (T, P) boolean
    correct = (dist[None, :] < grid[:, None]) == issame[None, :]
    for k in range(n_folds):
        test = np.zeros(len(issame), bool)
        test[bounds[k]:bounds[k + 1]] = True
        train_acc = correct[:, ~test].mean(axis=1)
        best = int(np.argmax(train_acc))
        chosen[k] = grid[best]
        accs[k] = correct[best, test].mean()
        for t, thr in enumerate(grid):
            tprs[k, t], fprs[k, t] = _tpr_fpr_at(thr, dist[test], issame[test])
    return KFoldResult(float(np.mean(accs)), float(np.std(accs)), accs, chosen,
                       tprs.mean(axis=0), fprs.mean(axis=0))


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of similarity scores: every distinct score is a threshold (``score >= t``).

    Args:
        scores: (P,) similarity scores, higher = more likely the same identity (e.g. cosine,
            or minus the distance).
        labels: (P,) booleans, True for a same-identity (positive) pair.

    Returns:
        ``(fpr, tpr, thresholds)``, starting at (0, 0) with threshold ``+inf``, thresholds
        decreasing (scikit-learn's ``roc_curve(..., drop_intermediate=False)`` convention).

    Example:

    >>> from keras_facemargin.evaluation import roc_curve
    >>> fpr, tpr, thr = roc_curve([0.9, 0.1, 0.8, 0.3], [True, False, True, False])
    >>> tpr.tolist(), fpr.tolist()
    ([0.0, 0.5, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.5, 1.0])
    """
    labels = _as_pairs(labels, "labels")
    scores = _as_scores(scores, len(labels))
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        raise ValueError("`labels` must contain both positive and negative pairs for a ROC "
                         f"curve. Received: {pos} positive and {neg} negative pairs")
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    tpr = np.r_[0.0, tps / pos]
    fpr = np.r_[0.0, fps / neg]
    return fpr, tpr, np.r_[np.inf, s[last]]


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve (trapezoids over :func:`roc_curve`; ties count one half).

    Args:
        scores: (P,) similarity scores, higher = same identity.
        labels: (P,) booleans.

    Returns:
        The AUC in [0, 1].

    Example:

    >>> from keras_facemargin.evaluation import roc_auc
    >>> roc_auc([0.9, 0.1, 0.8, 0.3], [True, False, True, False])
    1.0
    """
    fpr, tpr, _ = roc_curve(scores, labels)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def equal_error_rate(scores, labels) -> float:
    """Equal error rate: where the false-positive rate equals the false-negative rate.

    Linear interpolation between the two ROC points that bracket ``fpr == 1 - tpr``.

    Args:
        scores: (P,) similarity scores, higher = same identity.
        labels: (P,) booleans.

    Returns:
        The EER in [0, 1].

    Example:

    >>> from keras_facemargin.evaluation import equal_error_rate
    >>> equal_error_rate([0.9, 0.1, 0.8, 0.3], [True, False, True, False])
    0.0
    """
    fpr, tpr, _ = roc_curve(scores, labels)
    fnr = 1.0 - tpr
    diff = fnr - fpr  # decreasing from 1 to -1 along the curve
    i = int(np.flatnonzero(diff <= 0)[0])
    if i == 0 or diff[i] == 0:
        return float(fpr[i])
    # crossing between i - 1 (diff > 0) and i (diff <= 0)
    w = diff[i - 1] / (diff[i - 1] - diff[i])
    return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


def tar_at_far(scores, labels, fars=DEFAULT_FARS) -> dict[float, float]:
    """True-accept rate at fixed false-accept rates on one ROC: "TAR@FAR (one ROC)".

    For each ``far``, the best TPR over the thresholds whose FPR is at most ``far`` (0 when even
    the strictest threshold accepts more impostors than allowed). With N negative pairs, a FAR
    below 1/N can only be met with zero false accepts. The threshold is read on the same pairs
    it is scored on, so this reads higher (issue 16 measured up to +0.064) than the held-out
    "VAL@FAR (10-fold, insightface)" of :func:`val_at_far`, which papers quote.

    Args:
        scores: (P,) similarity scores, higher = same identity.
        labels: (P,) booleans.
        fars: false-accept rates, each in (0, 1]. Defaults to `(1e-2, 1e-3, 1e-4)`.

    Returns:
        dict ``{far: tar}``.

    Example:

    >>> from keras_facemargin.evaluation import tar_at_far
    >>> tar_at_far([0.9, 0.1, 0.8, 0.3], [True, False, True, False], fars=[0.5])
    {0.5: 1.0}
    """
    fpr, tpr, _ = roc_curve(scores, labels)
    out = {}
    for far in fars:
        if not (0.0 < float(far) <= 1.0):
            raise ValueError(f"`fars` must hold rates in (0, 1]. Received: far={far!r}")
        ok = fpr <= float(far) + 1e-12
        out[float(far)] = float(np.max(tpr[ok]))
    return out


@dataclass
class ValResult:
    """Result of :func:`val_at_far`: "VAL@FAR (10-fold, insightface)".

    Args:
        val: mean over the test folds of the true-accept rate (insightface's ``val_mean``).
        val_std: population std (ddof 0) of the fold VALs (``val_std``).
        far: mean over the test folds of the false-accept rate actually reached (``far_mean``).
        far_target: the FAR the thresholds were chosen for.
        fold_val: (n_folds,) VAL of each test fold.
        fold_far: (n_folds,) FAR of each test fold.
        fold_thresholds: (n_folds,) distance threshold used on each test fold
            (``distance < threshold`` accepts).
        insightface_thresholds: (n_folds,) the threshold insightface's ``calculate_val`` would
            use (``nan`` where it raises); equal to ``fold_thresholds`` except in ``adjusted``.
        adjusted: ``{fold: reason}`` for the folds where insightface's threshold was replaced
            (see :func:`val_at_far`); empty on ordinary inputs.

    Returns:
        A plain record.

    Example:

    >>> from keras_facemargin.evaluation import ValResult
    >>> ValResult(0.9, 0.01, 1e-3, 1e-3, [], [], [], [], {}).val
    0.9
    """

    val: float
    val_std: float
    far: float
    far_target: float
    fold_val: np.ndarray = field(repr=False)
    fold_far: np.ndarray = field(repr=False)
    fold_thresholds: np.ndarray = field(repr=False)
    insightface_thresholds: np.ndarray = field(repr=False)
    adjusted: dict = field(default_factory=dict)


def _interpolated_threshold(far: np.ndarray, grid: np.ndarray, target: float) -> float:
    """insightface's ``interp1d(far_train, thresholds, kind="slinear")(far_target)`` on a
    non-decreasing step function, as scipy 1.6-1.8 evaluated it (stable sort; knots
    ``r_[x0, x, x_last]``; de Boor with k=1): a line between the last grid point whose FAR is
    ``<= target`` and the next one, in scipy's order of operations. ``nan`` where insightface
    does not interpolate (no FAR above the target) or scipy raises (target below the first FAR)."""
    above = np.flatnonzero(far > target)
    if above.size == 0 or above[0] == 0:
        return float("nan")
    hi = int(above[0])
    lo = hi - 1
    w = 1.0 / (far[hi] - far[lo])
    return float(grid[lo] * (w * (far[hi] - target)) + grid[hi] * (w * (target - far[lo])))


def _val_threshold(neg: np.ndarray, grid: np.ndarray, target: float) -> tuple[float, float, str]:
    """``(threshold, insightface's threshold, reason for a change or "")`` on one training split.

    ``neg``: sorted distances of the training negatives."""
    n = neg.size
    # insightface: far_train[t] = float(sum(dist_neg < t)) / float(n_diff), for every grid t
    far = np.searchsorted(neg, grid, side="left") / float(n)
    ours = _interpolated_threshold(far, grid, target)
    if np.max(far) < target:
        theirs = 0.0  # insightface's `else: threshold = 0.0`
    elif np.max(far) == target:
        # scipy 1.8 evaluates the spline at its right end on the last non-empty knot
        # interval: 0 when the last two FARs are equal, about the last grid point otherwise
        theirs = 0.0 if far[-1] == far[-2] else float(grid[-1])
    else:
        theirs = ours
    if np.isnan(ours):
        if np.max(far) <= target:
            return float(grid[-1]), theirs, (
                "no grid threshold exceeds the FAR target on the training folds: the largest "
                f"one is used (insightface: {theirs:g}, accepting nothing)")
        return float(grid[0]), theirs, ("the first grid threshold already exceeds the FAR "
                                        "target (insightface's interp1d raises)")
    allowed = int(np.floor(target * n + 1e-9))  # most false accepts within the target
    accepted = int(np.searchsorted(neg, ours, side="left"))
    if accepted > allowed:
        v = neg[allowed]  # the negative whose acceptance takes the FAR over the target
        tied = int(np.searchsorted(neg, v, side="right") - np.searchsorted(neg, v, side="left"))
        if tied >= 2 and v < ours:
            return float(v), theirs, (
                f"{tied} training negatives tie at distance {v:.6g}; insightface's threshold "
                f"{ours:.6g} accepts all of them (FAR {accepted / n:.3g} for a target of "
                f"{target:g}); the threshold is lowered to the tie, which rejects them")
    return ours, theirs, ""


def val_at_far(distances, issame, far_target: float = 1e-3, n_folds: int = 10,
               thresholds=None) -> ValResult:
    """VAL@FAR as insightface's ``calculate_val`` computes it: "VAL@FAR (10-fold, insightface)".

    For each of ``n_folds`` contiguous folds (scikit-learn ``KFold(shuffle=False)``): on the
    other folds, the false-accept rate of every grid threshold (``distance < t`` accepts), and
    the threshold where that curve reaches ``far_target`` by linear interpolation between the
    two grid points around it; on the held-out fold, VAL (true-accept rate) and FAR at that
    threshold. Reported: mean and population std of the fold VALs, mean of the fold FARs.

    On ordinary inputs the thresholds, VAL and FAR are bit-identical to insightface's code as
    it runs with scipy 1.6 to 1.8 (scipy >= 1.9 refuses the repeated FAR values that
    ``calculate_val`` passes to ``interp1d``, scipy issue 21550). Three degenerate answers are
    not copied (the folds concerned are listed in ``ValResult.adjusted``):

    * **tied negatives at the crossing**: when two or more training negatives share the
      distance at which the FAR passes the target, insightface's interpolated threshold lies
      above the tie and accepts all of them (e.g. a training FAR of 0.04 for a target of 1e-3 on
      quantized scores; FAR 1.0 and VAL 1.0 when all embeddings are identical). Here the
      threshold drops to the tied distance, which rejects the group: the training FAR stays
      within the target.
    * **the target is never exceeded** on the training folds (e.g. all impostor distances at
      least 3.999, or ``far_target=1``): insightface uses threshold 0 (VAL 0); here the largest
      grid threshold, whose FAR is within the target.
    * **a fold without positive or negative pairs**: insightface divides by zero; here a
      ``ValueError``.

    With N negative pairs in the training folds the FAR moves in steps of 1/N; a target below
    one step is interpolated inside the step (as insightface does), so the test FAR can exceed
    it: read ``ValResult.far`` next to ``val``.

    Args:
        distances: (P,) squared L2 distances of normalized embeddings (see :func:`pair_distances`).
        issame: (P,) booleans, True for a same-identity pair.
        far_target: the false-accept rate, in (0, 1]. Defaults to `1e-3`.
        n_folds: number of folds, 2 <= n_folds <= P. Defaults to `10`.
        thresholds: increasing grid of candidate thresholds. Defaults to insightface's
            `numpy.arange(0, 4, 0.001)`.

    Returns:
        :class:`ValResult`.

    Example:

    >>> import numpy as np
    >>> from keras_facemargin.evaluation import val_at_far
    >>> rng = np.random.default_rng(0)
    >>> same = np.arange(6000) % 2 == 0
    >>> d = np.where(same, rng.normal(0.8, 0.2, 6000), rng.normal(1.9, 0.2, 6000))
    >>> r = val_at_far(d, same, far_target=1e-3)
    >>> 0.9 < r.val <= 1.0 and r.far < 0.01
    True

    Reference: insightface ``recognition/arcface_torch/eval/verification.py``
    (``calculate_val``, ``calculate_val_far``); Deng et al., ArcFace, CVPR 2019, Sec. 4.
    """
    issame = _as_pairs(issame)
    dist = _as_scores(distances, len(issame), "distances")
    _check_folds(n_folds, len(issame))
    if isinstance(far_target, bool) or not isinstance(far_target, (int, float, np.floating)) or not (
            0.0 < float(far_target) <= 1.0):
        raise ValueError(f"`far_target` must be a rate in (0, 1]. Received: far_target={far_target!r}")
    target = float(far_target)
    grid = VAL_THRESHOLDS if thresholds is None else np.asarray(thresholds, np.float64)
    if grid.ndim != 1 or grid.size < 2 or np.any(np.diff(grid) <= 0):
        raise ValueError("`thresholds` must be an increasing 1-D array of at least 2 values. "
                         f"Received: thresholds with shape {grid.shape}")
    bounds = _fold_bounds(len(issame), n_folds)
    vals, fars = np.zeros(n_folds), np.zeros(n_folds)
    used, theirs = np.zeros(n_folds), np.zeros(n_folds)
    adjusted = {}
    for k in range(n_folds):
        test = np.zeros(len(issame), bool)
        test[bounds[k]:bounds[k + 1]] = True
        for part, mask in (("training", ~test), ("test", test)):
            n_same = int(np.sum(issame[mask]))
            if n_same in (0, int(np.sum(mask))):
                raise ValueError(
                    f"`issame` must give every fold's {part} part both positive and negative "
                    f"pairs (insightface divides by zero otherwise). Received: fold {k} {part} "
                    f"part with {n_same} positive of {int(np.sum(mask))} pairs; interleave the "
                    "pairs or lower n_folds")
        neg = np.sort(dist[~test & ~issame])
        used[k], theirs[k], reason = _val_threshold(neg, grid, target)
        if reason:
            adjusted[k] = reason
        d, s = dist[test], issame[test]
        accept = d < used[k]
        vals[k] = float(np.sum(accept & s)) / float(np.sum(s))
        fars[k] = float(np.sum(accept & ~s)) / float(np.sum(~s))
    return ValResult(float(np.mean(vals)), float(np.std(vals)), float(np.mean(fars)), target,
                     vals, fars, used, theirs, adjusted)


@dataclass
class VerificationReport:
    """Result of :func:`evaluate_pairs` for one verification set.

    Args:
        accuracy: 10-fold mean accuracy.
        accuracy_std: std of the fold accuracies.
        auc: ROC AUC on the negated distances.
        eer: equal error rate.
        tar: ``{far: tar}``, "TAR@FAR (one ROC)": the best TPR on one ROC over all pairs
            (no folds, the threshold seen on the same pairs).
        best_threshold: mean of the per-fold distance thresholds.
        fpr: ROC false-positive rates (for plots).
        tpr: ROC true-positive rates (for plots).
        val: ``{far: ValResult}``, "VAL@FAR (10-fold, insightface)" (:func:`val_at_far`: the
            threshold chosen on the other folds); empty, with a warning, when a fold has no
            positive or no negative pair. Defaults to `{}`.

    Returns:
        A plain record.

    Example:

    >>> from keras_facemargin.evaluation import VerificationReport
    >>> VerificationReport(0.99, 0.01, 0.999, 0.01, {}, 1.4, [], []).accuracy
    0.99
    """

    accuracy: float
    accuracy_std: float
    auc: float
    eer: float
    tar: dict
    best_threshold: float
    fpr: np.ndarray = field(repr=False)
    tpr: np.ndarray = field(repr=False)
    val: dict = field(default_factory=dict)


def evaluate_pairs(embeddings, issame, flip_embeddings=None, n_folds: int = 10,
                   fars=DEFAULT_FARS) -> VerificationReport:
    """Every verification number for one pair set (insightface's ordering of images).

    Args:
        embeddings: (2P, D) embeddings, images 2i and 2i+1 forming pair i.
        issame: (P,) booleans.
        flip_embeddings: optional (2P, D) embeddings of the mirrored images (flip test: the two
            are summed before normalization). Defaults to `None`.
        n_folds: folds of the accuracy protocol. Defaults to `10`.
        fars: false-accept rates of TAR@FAR (one ROC) and VAL@FAR (10-fold, insightface).
            Defaults to `(1e-2, 1e-3, 1e-4)`.

    Returns:
        :class:`VerificationReport`.

    Example:

    >>> import numpy as np
    >>> from keras_facemargin.evaluation import evaluate_pairs
    >>> e = np.array([[1, 0], [1, 0.1], [1, 0], [0, 1]] * 10, dtype=float)
    >>> evaluate_pairs(e, [True, False] * 10).accuracy
    1.0
    """
    issame = _as_pairs(issame)
    dist = pair_distances(embeddings, flip_embeddings)
    if len(dist) != len(issame):
        raise ValueError(f"`embeddings` must hold 2 images per pair: {2 * len(issame)} rows for "
                         f"{len(issame)} pairs. Received: {2 * len(dist)} rows")
    k = kfold_accuracy(dist, issame, n_folds=n_folds)
    fpr, tpr, _ = roc_curve(-dist, issame)
    val = {}
    if _folds_have_both(issame, n_folds):
        val = {float(far): val_at_far(dist, issame, far, n_folds=n_folds) for far in fars}
    else:
        warnings.warn("VAL@FAR (10-fold, insightface) is left out: a fold (or the rest of the "
                      "pairs) has no positive or no negative pair, where insightface divides by "
                      f"zero. Received: {len(issame)} pairs in {n_folds} folds", stacklevel=2)
    return VerificationReport(k.mean, k.std, roc_auc(-dist, issame), equal_error_rate(-dist, issame),
                              tar_at_far(-dist, issame, fars), float(np.mean(k.fold_thresholds)),
                              fpr, tpr, val)
