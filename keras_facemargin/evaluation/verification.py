"""Face verification metrics as the field reports them (NumPy only, no TensorFlow or Keras).

* :func:`kfold_accuracy`: the LFW 10-fold protocol exactly as insightface computes it: squared
  L2 distance of L2-normalized embeddings, thresholds 0 to 4 in steps of 0.01, the threshold
  chosen on 9 contiguous folds and applied to the 10th; mean and std of the 10 test accuracies.
  Choosing the threshold on the whole set is optimistic and is deliberately not offered.
* :func:`roc_curve`, :func:`roc_auc`, :func:`equal_error_rate`, :func:`tar_at_far` on similarity
  scores (higher = more likely the same identity).
* :func:`evaluate_pairs`: all of the above for one verification set, with or without the flip test
  (the embedding of an image plus the embedding of its mirror image).

Reference: Deng et al., ArcFace, CVPR 2019, Sec. 4 (LFW "unrestricted with labelled outside data").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: insightface's threshold grid on the squared L2 distance of unit vectors (0 <= d <= 4).
DEFAULT_THRESHOLDS = np.arange(0.0, 4.0, 0.01)
DEFAULT_FARS = (1e-2, 1e-3, 1e-4)


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
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or not (
            2 <= n_folds <= len(issame)):
        raise ValueError(f"`n_folds` must be an integer in [2, {len(issame)}] (the number of "
                         f"pairs). Received: n_folds={n_folds!r}")
    grid = DEFAULT_THRESHOLDS if thresholds is None else np.asarray(thresholds, np.float64)
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError(f"`thresholds` must be a non-empty 1-D array. Received: shape {grid.shape}")
    # sklearn KFold(shuffle=False): the first P % k folds get one extra pair
    sizes = np.full(n_folds, len(issame) // n_folds)
    sizes[: len(issame) % n_folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
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
    """True-accept rate at fixed false-accept rates.

    For each ``far``, the best TPR over the thresholds whose FPR is at most ``far`` (0 when even
    the strictest threshold accepts more impostors than allowed). With N negative pairs, a FAR
    below 1/N can only be met with zero false accepts.

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
class VerificationReport:
    """Result of :func:`evaluate_pairs` for one verification set.

    Args:
        accuracy: 10-fold mean accuracy.
        accuracy_std: std of the fold accuracies.
        auc: ROC AUC on the negated distances.
        eer: equal error rate.
        tar: ``{far: tar}``.
        best_threshold: mean of the per-fold distance thresholds.
        fpr: ROC false-positive rates (for plots).
        tpr: ROC true-positive rates (for plots).

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


def evaluate_pairs(embeddings, issame, flip_embeddings=None, n_folds: int = 10,
                   fars=DEFAULT_FARS) -> VerificationReport:
    """Every verification number for one pair set (insightface's ordering of images).

    Args:
        embeddings: (2P, D) embeddings, images 2i and 2i+1 forming pair i.
        issame: (P,) booleans.
        flip_embeddings: optional (2P, D) embeddings of the mirrored images (flip test: the two
            are summed before normalization). Defaults to `None`.
        n_folds: folds of the accuracy protocol. Defaults to `10`.
        fars: false-accept rates for TAR@FAR. Defaults to `(1e-2, 1e-3, 1e-4)`.

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
    return VerificationReport(k.mean, k.std, roc_auc(-dist, issame), equal_error_rate(-dist, issame),
                              tar_at_far(-dist, issame, fars), float(np.mean(k.fold_thresholds)),
                              fpr, tpr)
