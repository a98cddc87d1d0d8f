"""Grouped 2-D convolution without a grouped convolution op (fast on CPU, exportable)."""

from __future__ import annotations

import keras
from keras import ops

from keras_facemargin._api import register

__all__ = ["GroupedConv2D"]


@register
class GroupedConv2D(keras.layers.Layer):
    """A grouped 2-D convolution written as a depthwise convolution and a sum.

    Holds the kernel of ``keras.layers.Conv2D(filters, kernel_size, groups=G)`` with the same
    shape, ``(kh, kw, C_in / G, filters)``, and computes the same output without a grouped
    convolution op. Keras runs ``Conv2D(groups > 1)`` on TensorFlow's CPU through a nested XLA
    function: tf2onnx cannot convert it, and its backward pass is slow (MobileFaceNet
    ``scale=2``, insightface's ``mbf``: 14 s for one such layer at batch 4 against 0.06 s in
    this form, ``benchmarks/train_throughput.py --grouped-conv``). The backbones build their
    grouped convolutions with this layer.

    Formula:

        y[c * M + m] = depthwise(x[c], D[:, :, c, m]),   M = filters / G, c = g * g_in + j
        D[:, :, g * g_in + j, m] = K[:, :, j, g * M + m]
        out[g * M + m] = sum_j y[(g * g_in + j) * M + m]  (+ bias)

    Args:
        filters: output channels.
        kernel_size: (kh, kw).
        groups: G.
        strides: (sh, sw). Defaults to `(1, 1)`.
        padding: ``"valid"`` or ``"same"``. Defaults to `"valid"`.
        dilation_rate: (dh, dw). Defaults to `(1, 1)`.
        use_bias: add a bias. Defaults to `False`.
        kernel_initializer: as ``Conv2D``'s (the kernel has ``Conv2D``'s shape, so the fans
            are the same). Defaults to `"glorot_uniform"`.

    Example:

    >>> import numpy as np
    >>> conv = keras.layers.Conv2D(4, 3, groups=2, use_bias=False)
    >>> x = np.random.default_rng(0).normal(size=(1, 5, 5, 4)).astype("float32")
    >>> ref = conv(x)
    >>> same = GroupedConv2D(4, (3, 3), groups=2)
    >>> same.build(x.shape); same.set_weights(conv.get_weights())
    >>> bool(np.allclose(same(x), ref, atol=1e-5))
    True
    """

    def __init__(self, filters: int, kernel_size, groups: int, strides=(1, 1),
                 padding: str = "valid", dilation_rate=(1, 1), use_bias: bool = False,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if groups < 1 or filters % groups:
            raise ValueError(f"`filters` must be a multiple of `groups`. Received: "
                             f"filters={filters}, groups={groups}")
        if padding not in ("valid", "same"):
            raise ValueError(f"`padding` must be 'valid' or 'same'. Received: padding={padding!r}")
        self.filters, self.groups, self.padding = int(filters), int(groups), padding
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.strides = tuple(int(s) for s in strides)
        self.dilation_rate = tuple(int(d) for d in dilation_rate)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        if channels % self.groups:
            raise ValueError(f"the input channels must be a multiple of `groups`. Received: "
                             f"channels={channels}, groups={self.groups}")
        self.kernel = self.add_weight(name="kernel", shape=(
            *self.kernel_size, channels // self.groups, self.filters),
            initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.filters,),
                                    initializer="zeros") if self.use_bias else None

    def call(self, inputs):
        kh, kw, g_in, _ = self.kernel.shape
        groups, per_group = self.groups, self.filters // self.groups
        depthwise = ops.reshape(self.kernel, (kh, kw, g_in, groups, per_group))
        depthwise = ops.reshape(ops.transpose(depthwise, (0, 1, 3, 2, 4)),
                                (kh, kw, groups * g_in, per_group))
        y = ops.depthwise_conv(inputs, depthwise, strides=self.strides, padding=self.padding,
                               dilation_rate=self.dilation_rate)
        height, width = ops.shape(y)[1], ops.shape(y)[2]
        y = ops.reshape(y, (-1, height, width, groups, g_in, per_group))
        y = ops.reshape(ops.sum(y, axis=4), (-1, height, width, self.filters))
        return y + self.bias if self.bias is not None else y

    def compute_output_shape(self, input_shape):
        conv = keras.layers.Conv2D(self.filters, self.kernel_size, strides=self.strides,
                                   padding=self.padding, dilation_rate=self.dilation_rate)
        return conv.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "groups": self.groups,
                "strides": self.strides, "padding": self.padding,
                "dilation_rate": self.dilation_rate, "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}
