"""Layer blocks shared by the face backbones (PyTorch-equivalent padding, BN and PReLU)."""

from __future__ import annotations

import keras

from keras_facemargin.layers.convolution import GroupedConv2D

# PyTorch BatchNorm defaults as insightface uses them: eps 1e-5, running-average momentum 0.1
# (Keras' momentum is the weight of the old value: 0.9).
BN = {"epsilon": 1e-5, "momentum": 0.9}


def conv(x, filters: int, kernel: int, stride: int = 1, padding: int = 0, groups: int = 1,
         name: str | None = None, initializer="he_fan_out"):
    """Bias-free convolution with explicit symmetric zero padding (PyTorch's ``padding=p``).

    ``groups == channels == filters`` becomes a ``DepthwiseConv2D`` (a builtin TFLite op);
    other ``groups > 1`` a :class:`~keras_facemargin.layers.convolution.GroupedConv2D` (the
    kernel of a grouped ``Conv2D``, computed as a depthwise convolution and a sum).
    """
    if padding:
        x = keras.layers.ZeroPadding2D(padding, name=None if name is None else name + "_pad")(x)
    channels = x.shape[-1]
    init = initializers(initializer)
    if groups > 1 and groups == channels == filters:
        return keras.layers.DepthwiseConv2D(kernel, strides=stride, use_bias=False,
                                            depthwise_initializer=init, name=name)(x)
    if groups > 1:  # not Keras' grouped Conv2D: on a TensorFlow CPU it runs through XLA
        return GroupedConv2D(filters, (kernel, kernel), groups, strides=(stride, stride),
                             kernel_initializer=init, name=name)(x)
    return keras.layers.Conv2D(filters, kernel, strides=stride, use_bias=False,
                               kernel_initializer=init, name=name)(x)


def initializers(kind):
    """insightface's initializations: ``"he_fan_out"`` (MobileFaceNet: kaiming normal,
    fan_out) or ``"normal_0.1"`` (IResNet: N(0, 0.1)); anything else is a Keras initializer."""
    if kind == "he_fan_out":
        return keras.initializers.VarianceScaling(2.0, mode="fan_out",
                                                  distribution="untruncated_normal")
    if kind == "normal_0.1":
        return keras.initializers.RandomNormal(stddev=0.1)
    return keras.initializers.get(kind)


def bn(x, name: str | None = None, scale: bool = True):
    return keras.layers.BatchNormalization(scale=scale, name=name, **BN)(x)


def prelu(x, name: str | None = None):
    """Per-channel PReLU (PyTorch's ``nn.PReLU(channels)``), alpha initialised to 0.25."""
    shared = [1, 2] if len(x.shape) == 4 else None
    return keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25),
                              shared_axes=shared, name=name)(x)


def check_input_shape(input_shape, name: str) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[-1] != 3 or any(not isinstance(d, int) or d < 32
                                                 for d in shape[:2]):
        raise ValueError(
            f"`input_shape` of {name} must be (height, width, 3) with height, width >= 32 "
            f"(insightface uses (112, 112, 3)). Received: input_shape={input_shape!r}"
        )
    if shape[0] % 16 or shape[1] % 16:
        raise ValueError(
            f"`input_shape` of {name} must have height and width divisible by 16 (four "
            f"stride-2 stages). Received: input_shape={input_shape!r}"
        )
    return shape
