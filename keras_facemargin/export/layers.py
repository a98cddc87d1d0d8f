"""Small serializable layers that exported embedding models are built from."""

from __future__ import annotations

import keras
from keras import ops

from keras_facemargin._api import register
from keras_facemargin.layers.convolution import GroupedConv2D
from keras_facemargin.layers.normalization import L2Normalize

__all__ = ["GroupedConv2D", "HorizontalFlip", "L2Normalize"]


@register
class HorizontalFlip(keras.layers.Layer):
    """Mirror (B, H, W, C) images left-right (the flip test's second view).

    Example:

    >>> import numpy as np
    >>> HorizontalFlip()(np.arange(4, dtype="float32").reshape(1, 1, 4, 1))[0, 0, :, 0].numpy()
    array([3., 2., 1., 0.], dtype=float32)
    """

    def call(self, inputs):
        return ops.flip(inputs, axis=2)

    def compute_output_shape(self, input_shape):
        return input_shape


