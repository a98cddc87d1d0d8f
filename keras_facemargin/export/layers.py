"""Small serializable layers that exported embedding models are built from."""

from __future__ import annotations

import keras
from keras import ops

from keras_facemargin._api import register
from keras_facemargin.ops.cosine import l2_normalize


@register
class L2Normalize(keras.layers.Layer):
    """``x / ||x||`` along the last axis (zero vectors stay zero).

    Example:

    >>> import numpy as np
    >>> L2Normalize()(np.array([[3.0, 4.0]], "float32")).numpy().tolist()
    [[0.6000000238418579, 0.800000011920929]]
    """

    def call(self, inputs):
        return l2_normalize(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


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
