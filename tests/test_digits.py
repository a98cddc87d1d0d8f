"""keras_facemargin.data.digit_faces: the bundled digits as face-sized RGB crops."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from keras_facemargin.data import digit_faces


@pytest.mark.parametrize("size", [32, 112])
def test_digit_faces_are_the_digits_in_blocks_colour_mapped(size):
    images, labels = digit_faces(size)
    d = load_digits()
    assert images.shape == (1797, size, size, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, d.target)
    # block means recover the 8x8 scan (0-16 mapped to 0-255) up to the +-4 noise and clipping
    k = size // 8
    blocks = images.reshape(1797, 8, k, 8, k, 3).astype(np.float64).mean(axis=(2, 4))
    want = d.images * (255.0 / 16.0)
    assert np.abs(blocks[..., 0] - want).max() < 4 * 12 / k + 1
    assert np.abs(blocks[..., 2] - (255.0 - want)).max() < 4 * 12 / k + 1
    assert np.abs(blocks[..., 1] - 0.8 * want).max() < 4 * 12 / k + 1


def test_digit_faces_seeded_noise_and_bad_size():
    a, _ = digit_faces(32, seed=0)
    np.testing.assert_array_equal(a, digit_faces(32, seed=0)[0])
    assert not np.array_equal(a, digit_faces(32, seed=1)[0])
    for size in (0, 12, 7.5, True):
        with pytest.raises(ValueError, match="`size` must be a positive multiple of 8"):
            digit_faces(size)
