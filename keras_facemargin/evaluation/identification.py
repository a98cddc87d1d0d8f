"""1:N identification from a gallery and probes (NumPy only).

Closed set: rank-k accuracy (CMC) of the probes whose identity is enrolled in the gallery.
Open set: TPIR at FPIR (true-positive identification rate at a false-positive identification
rate): a probe is accepted when its best gallery score reaches a threshold; the threshold is set
on the non-mated probes (identities not in the gallery) so that a fraction ``fpir`` of them is
accepted; a mated probe counts as a true positive when it is accepted AND its best match is its
own identity.

Reference: Grother et al., NIST IR 8271 (FRVT Part 2, identification), the metrics of MegaFace /
IJB-C 1:N.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from keras_facemargin.evaluation.verification import l2_normalize


@dataclass
class IdentificationReport:
    """Result of :func:`identification`.

    Args:
        rank1: fraction of mated probes whose best gallery match is their identity.
        cmc: (R,) rank-k accuracy for k = 1..R.
        tpir: ``{fpir: tpir}`` (empty when there are no non-mated probes).
        num_mated: probes whose identity is in the gallery.
        num_nonmated: probes whose identity is not.

    Returns:
        A plain record.

    Example:

    >>> from keras_facemargin.evaluation import IdentificationReport
    >>> IdentificationReport(1.0, [1.0], {}, 3, 0).rank1
    1.0
    """

    rank1: float
    cmc: np.ndarray = field(repr=False)
    tpir: dict = field(default_factory=dict)
    num_mated: int = 0
    num_nonmated: int = 0


def _check(emb, labels, name: str) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(emb, dtype=np.float64)
    y = np.asarray(labels)
    if e.ndim != 2 or e.shape[0] == 0:
        raise ValueError(f"`{name}_embeddings` must have shape (N, D) with N >= 1. "
                         f"Received: shape {e.shape}")
    if y.shape != (e.shape[0],):
        raise ValueError(f"`{name}_labels` must have shape ({e.shape[0]},). "
                         f"Received: {name}_labels with shape {y.shape}")
    bad = np.flatnonzero(~np.isfinite(e).all(axis=1))
    if bad.size:  # a NaN row would rank last (or first) and still count as a search
        shown = ", ".join(str(i) for i in bad[:10]) + (", ..." if bad.size > 10 else "")
        raise ValueError(f"`{name}_embeddings` must be finite: {bad.size} of {e.shape[0]} rows "
                         f"hold NaN or Inf. Received: NaN/Inf in rows [{shown}]")
    return e, y


def identification(gallery_embeddings, gallery_labels, probe_embeddings, probe_labels,
                   fpirs=(1e-1, 1e-2), max_rank: int = 10) -> IdentificationReport:
    """Rank-k accuracy and TPIR@FPIR of probes searched against a gallery (cosine similarity).

    A gallery identity may have several images; its score is the best of them.

    Args:
        gallery_embeddings: (G, D) enrolled embeddings.
        gallery_labels: (G,) identity of each gallery embedding.
        probe_embeddings: (Q, D) searched embeddings.
        probe_labels: (Q,) identity of each probe; identities absent from the gallery are
            non-mated probes (open set).
        fpirs: false-positive identification rates in (0, 1]. Defaults to `(0.1, 0.01)`.
        max_rank: longest rank of the CMC curve. Defaults to `10`.

    Returns:
        :class:`IdentificationReport`.

    Example:

    >>> import numpy as np
    >>> from keras_facemargin.evaluation import identification
    >>> g = np.eye(3); p = np.eye(3) + 0.1
    >>> identification(g, [0, 1, 2], p, [0, 1, 2]).rank1
    1.0
    """
    g, gy = _check(gallery_embeddings, gallery_labels, "gallery")
    p, py = _check(probe_embeddings, probe_labels, "probe")
    if g.shape[1] != p.shape[1]:
        raise ValueError("`probe_embeddings` must have the gallery's dimension "
                         f"{g.shape[1]}. Received: {p.shape[1]}")
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"`max_rank` must be an integer >= 1. Received: max_rank={max_rank!r}")
    ids = np.unique(gy)
    sim = l2_normalize(p) @ l2_normalize(g).T  # (Q, G)
    # best score per gallery identity: (Q, I)
    per_id = np.full((len(p), len(ids)), -np.inf)
    col = np.searchsorted(ids, gy)
    for j in range(len(ids)):
        per_id[:, j] = sim[:, col == j].max(axis=1)
    mated = np.isin(py, ids)
    order = np.argsort(-per_id, axis=1, kind="stable")
    ranked_ids = ids[order]
    num_mated = int(mated.sum())
    if num_mated:
        hit = ranked_ids[mated] == py[mated, None]
        first = np.where(hit.any(axis=1), np.argmax(hit, axis=1), len(ids))
        cmc = np.array([np.mean(first < k) for k in range(1, max_rank + 1)])
    else:
        cmc = np.zeros(max_rank)
    top = per_id.max(axis=1)
    tpir = {}
    if num_mated and (~mated).any():
        nonmated_top = np.sort(top[~mated])[::-1]
        correct = ranked_ids[mated, 0] == py[mated]
        for fpir in fpirs:
            if not (0.0 < float(fpir) <= 1.0):
                raise ValueError(f"`fpirs` must hold rates in (0, 1]. Received: fpir={fpir!r}")
            allowed = int(np.floor(float(fpir) * len(nonmated_top) + 1e-9))
            # accept scores strictly above the (allowed+1)-th highest non-mated score
            thr = nonmated_top[allowed] if allowed < len(nonmated_top) else -np.inf
            tpir[float(fpir)] = float(np.mean(correct & (top[mated] > thr)))
    return IdentificationReport(float(cmc[0]), cmc, tpir, num_mated, int((~mated).sum()))
