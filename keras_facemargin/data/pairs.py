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
                   n_folds: int = 10, repeats: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """LFW-style pairs over labelled images: ``n_folds`` blocks of half positive, half negative.

    Args:
        labels: (N,) identity of each image; at least 2 identities, one of them with 2 images.
        num_pairs: pairs, a multiple of ``2 * n_folds`` (LFW: 6000).
        seed: seed of the draw. Defaults to `0`.
        n_folds: blocks. Defaults to `10`.
        repeats: whether a pair of images may be drawn twice (in either order). With `False`
            a repeated draw is drawn again, as LFW's ``pairs.txt`` holds each pair once; on few
            identities (e.g. 3) repeats are common, and a repeated impostor pair is a tie of
            distances that :func:`keras_facemargin.evaluation.val_at_far` has to adjust.
            Defaults to `True` (independent draws).

    Returns:
        ``(index (num_pairs, 2) into the images, issame (num_pairs,))``: fold k is rows
        ``k * num_pairs // n_folds`` onwards, its first half positive pairs (two different
        images of one identity drawn uniformly among those with 2 images or more), its second
        half negative pairs (two identities drawn uniformly, one image of each). The draw
        depends only on the arguments.

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
    half = num_pairs // (2 * n_folds)
    if not repeats:
        n_pos = int(np.sum(counts * (counts - 1) // 2))
        n_neg = int((counts.sum() ** 2 - np.sum(counts ** 2)) // 2)
        most = 2 * (min(n_pos, n_neg) // 2)
        if num_pairs > most:
            raise ValueError(
                f"`num_pairs` must be at most {most} with repeats=False: each half (positive, "
                f"negative) may take at most half of its distinct pairs ({n_pos} positive, "
                f"{n_neg} negative here). Received: num_pairs={num_pairs}")
    rng = np.random.default_rng(seed)
    by_id = {i: np.flatnonzero(labels == i) for i in ids}
    seen: set[tuple[int, int]] = set()

    def draw(positive: bool) -> list[int]:
        while True:
            if positive:
                pair = rng.choice(by_id[rng.choice(multi)], 2, replace=False)
            else:
                a, b = rng.choice(ids, 2, replace=False)
                pair = [rng.choice(by_id[a]), rng.choice(by_id[b])]
            key = (int(min(pair)), int(max(pair)))
            if repeats or key not in seen:
                seen.add(key)
                return [int(pair[0]), int(pair[1])]

    index, same = [], []
    for _ in range(n_folds):
        for positive in (True, False):
            for _ in range(half):
                index.append(draw(positive))
                same.append(positive)
    return np.asarray(index, np.int64), np.asarray(same, bool)
