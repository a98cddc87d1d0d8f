"""``L2Normalize``: the unit-length embedding layer (core: task models and export build on it)."""

from __future__ import annotations

import keras

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
