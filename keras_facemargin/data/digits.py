"""Real images that ship with scikit-learn, shaped like face crops, for demos and benchmarks.

No face data set can be downloaded in tests or CI; scikit-learn's bundled digits (1,797 8x8
scans of 10 "identities") are real images that need no download.
"""

from __future__ import annotations

import numpy as np


def digit_faces(size: int = 112, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The digits as RGB "faces": each pixel a block, colour-mapped, seeded noise.

    Args:
        size: height and width of the images, a multiple of 8. Defaults to `112`
            (insightface's crop size).
        seed: seed of the +-4 grey-level Gaussian noise. Defaults to `0`.

    Returns:
        ``(images, labels)``: uint8 ``(1797, size, size, 3)`` and int32 ``(1797,)`` (0-9), in
        scikit-learn's order.

    Raises:
        ValueError: ``size`` is not a positive multiple of 8.
        ImportError: scikit-learn is not installed (``pip install keras_facemargin[examples]``).

    Example:

    >>> images, labels = digit_faces(32)
    >>> images.shape, images.dtype.name, int(labels.max())
    ((1797, 32, 32, 3), 'uint8', 9)
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8 \
            or size % 8:
        raise ValueError(f"`size` must be a positive multiple of 8. Received: size={size!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("digit_faces needs scikit-learn: pip install "
                          "'keras_facemargin[examples]'") from err
    d = load_digits()
    images = np.kron(d.images, np.ones((size // 8, size // 8), np.float32)) * (255.0 / 16.0)
    rng = np.random.default_rng(seed)
    rgb = np.stack([images, images * 0.8, 255.0 - images], axis=-1)
    rgb = np.clip(rgb + rng.normal(0, 4, rgb.shape).astype(np.float32), 0, 255)
    return rgb.astype(np.uint8), d.target.astype(np.int32)
