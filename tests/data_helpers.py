"""Tiny face-data fixtures for the data tests: solid-colour JPEGs that encode their identity."""

import numpy as np
import tensorflow as tf


def color_of(identity: int) -> int:
    """Grey level of the images of ``identity`` (far apart so JPEG noise cannot confuse them)."""
    return 30 + 40 * identity


def face_jpeg(identity: int, size: int = 16, half: bool = False) -> bytes:
    """A solid image of grey ``color_of(identity)``; with ``half`` the left half is black
    (so a horizontal flip is visible)."""
    img = np.full((size, size, 3), color_of(identity), np.uint8)
    if half:
        img[:, : size // 2] = 0
    return tf.io.encode_jpeg(img, quality=95).numpy()


def identity_of(image: np.ndarray) -> int:
    """Invert ``color_of`` from a standardized image ((x - 127.5) / 128)."""
    grey = float(np.max(image)) * 128.0 + 127.5
    return int(round((grey - 30) / 40))
