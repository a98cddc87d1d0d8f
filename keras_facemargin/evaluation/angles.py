"""The angle statistics of ArcFace's Table 3 (NumPy only): W-EC, W-Inter, Intra, Inter.

* **W-EC**: mean over classes of the angle between the class weight W_j and the centre of the
  class's normalized embeddings.
* **W-Inter**: mean over classes of the smallest angle between W_j and any other W_k.
* **Intra**: mean over samples of the angle between x_i and its class's embedding centre.
* **Inter**: mean over classes of the smallest angle between its embedding centre and any other.

The embedding centre of a class is the mean of its L2-normalized embeddings (its direction is all
that enters an angle). All angles are in degrees.

Reference: Deng et al., ArcFace, CVPR 2019, Table 3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keras_facemargin.evaluation.verification import l2_normalize


@dataclass
class AngleStats:
    """Angle statistics in degrees (see the module docstring).

    Args:
        w_ec: W-EC (NaN when no weights were given).
        w_inter: W-Inter (NaN when no weights were given).
        intra: Intra.
        inter: Inter.

    Returns:
        A plain record.

    Example:

    >>> from keras_facemargin.evaluation import AngleStats
    >>> AngleStats(14.3, 71.6, 38.5, 65.0).intra
    38.5
    """

    w_ec: float
    w_inter: float
    intra: float
    inter: float


def _angle(cos) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _min_offdiag_angle(unit: np.ndarray) -> float:
    cos = unit @ unit.T
    np.fill_diagonal(cos, -np.inf)
    return float(np.mean(_angle(cos.max(axis=1))))


def angle_statistics(embeddings, labels, weights=None, sub_centers: int = 1) -> AngleStats:
    """ArcFace Table 3 statistics of embeddings and (optionally) class weights.

    Args:
        embeddings: (N, D) embeddings (normalized here).
        labels: (N,) integer class ids in [0, C).
        weights: optional class centres of shape (D, C) (the head's ``kernel``; with K
            sub-centres per class (D, C*K), column c*K + k). Defaults to `None` (W-EC and
            W-Inter are then NaN).
        sub_centers: K; each class is represented by its sub-centre nearest the class's
            embedding centre. Defaults to `1`.

    Returns:
        :class:`AngleStats` in degrees.

    Example:

    >>> import numpy as np
    >>> from keras_facemargin.evaluation import angle_statistics
    >>> e = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> angle_statistics(e, [0, 1], weights=np.eye(2)).inter
    90.0
    """
    e = l2_normalize(embeddings)
    y = np.asarray(labels)
    if e.ndim != 2 or y.shape != (e.shape[0],):
        raise ValueError("`embeddings` must be (N, D) and `labels` (N,). Received: embeddings "
                         f"with shape {e.shape}, labels with shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ValueError(f"`labels` must be non-negative integers. Received: dtype {y.dtype}")
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"`labels` must hold at least 2 classes. Received: {len(classes)}")
    centres = l2_normalize(np.stack([e[y == c].mean(axis=0) for c in classes]))
    index = np.searchsorted(classes, y)
    intra = float(np.mean(_angle(np.sum(e * centres[index], axis=1))))
    inter = _min_offdiag_angle(centres)
    w_ec = w_inter = float("nan")
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 2 or w.shape[0] != e.shape[1]:
            raise ValueError(f"`weights` must have shape ({e.shape[1]}, num_classes * K). "
                             f"Received: weights with shape {w.shape}")
        if isinstance(sub_centers, bool) or not isinstance(sub_centers, int) or sub_centers < 1 \
                or w.shape[1] % sub_centers or w.shape[1] // sub_centers <= int(y.max()):
            raise ValueError("`sub_centers` must be an integer >= 1 dividing the columns of "
                             "`weights` into at least max(labels) + 1 classes. Received: "
                             f"sub_centers={sub_centers!r}, weights with shape {w.shape}")
        wn = l2_normalize(w.T).reshape(-1, sub_centers, w.shape[0])  # (C, K, D)
        # per class, the sub-centre closest to the class's embedding centre
        best = np.argmax(np.einsum("ckd,cd->ck", wn[classes], centres), axis=1)
        wc = wn[classes, best]  # (n_classes, D)
        w_ec = float(np.mean(_angle(np.sum(wc * centres, axis=1))))
        w_inter = _min_offdiag_angle(wn[:, 0] if sub_centers == 1 else wc)
    return AngleStats(w_ec, w_inter, intra, inter)
