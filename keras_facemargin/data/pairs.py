"""LFW-style verification pairs over labelled images (NumPy only).

:func:`lfw_like_pairs` draws the pairs the library's 10-fold protocol
(:func:`keras_facemargin.evaluation.kfold_accuracy`, :func:`~keras_facemargin.evaluation.val_at_far`)
expects: contiguous folds, each half same-identity and half different-identity pairs, as in
LFW's ``pairs.txt``. The open-set benchmark (:mod:`keras_facemargin.data.glyphs`) and the digits
examples (``examples/train_digits.py``, ``examples/compare_losses.py``) draw their pairs with it.

Reference: Huang et al., "Labeled Faces in the Wild", 2007 (View 2: 10 folds of 300 + 300 pairs).
"""

from __future__ import annotations

import numpy as np


def lfw_like_pairs(labels: np.ndarray, num_pairs: int, seed: int = 0,
                   n_folds: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """LFW-style pairs over labelled images: ``n_folds`` blocks of half positive, half negative.

    Args:
        labels: (N,) identity of each image; at least 2 identities, one of them with 2 images.
        num_pairs: pairs, a multiple of ``2 * n_folds`` (LFW: 6000).
        seed: seed of the draw. Defaults to `0`.
        n_folds: blocks. Defaults to `10`.

    Returns:
        ``(index (num_pairs, 2) into the images, issame (num_pairs,))``: fold k is rows
        ``k * num_pairs // n_folds`` onwards, its first half positive pairs (two different
        images of one identity drawn uniformly among those with 2 images or more), its second
        half negative pairs (two identities drawn uniformly, one image of each). Pairs are
        drawn independently, so one can repeat; the draw depends only on ``labels`` and
        ``seed``.

    Example:

    >>> import numpy as np
    >>> from keras_facemargin.data import lfw_like_pairs
    >>> idx, same = lfw_like_pairs(np.repeat(np.arange(5), 3), 20)
    >>> same[:4].tolist()
    [True, False, True, False]
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"`labels` must be 1-D (one identity per image). Received: labels with "
                         f"shape {labels.shape}")
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 1:
        raise ValueError(f"`n_folds` must be a positive integer. Received: n_folds={n_folds!r}")
    if isinstance(num_pairs, bool) or not isinstance(num_pairs, (int, np.integer)) \
            or num_pairs < 2 * n_folds or num_pairs % (2 * n_folds):
        raise ValueError(f"`num_pairs` must be a positive multiple of {2 * n_folds}. Received: "
                         f"num_pairs={num_pairs!r}")
    ids, counts = np.unique(labels, return_counts=True)
    multi = ids[counts >= 2]
    if len(multi) < 1 or len(ids) < 2:
        raise ValueError("`labels` must hold at least 2 identities, one with 2 images. Received: "
                         f"{len(ids)} identities")
    rng = np.random.default_rng(seed)
    by_id = {i: np.flatnonzero(labels == i) for i in ids}
    half = num_pairs // (2 * n_folds)
    index, same = [], []
    for _ in range(n_folds):
        for _ in range(half):
            imgs = by_id[rng.choice(multi)]
            index.append(rng.choice(imgs, 2, replace=False))
            same.append(True)
        for _ in range(half):
            a, b = rng.choice(ids, 2, replace=False)
            index.append([rng.choice(by_id[a]), rng.choice(by_id[b])])
            same.append(False)
    return np.asarray(index, np.int64), np.asarray(same, bool)
