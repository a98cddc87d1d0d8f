"""MobileFaceNet (Chen et al., 2018) as insightface builds it."""

from __future__ import annotations

import keras

from keras_facemargin._checks import check_int
from keras_facemargin.backbones._blocks import bn, check_input_shape, conv, initializers, prelu


def _conv_block(x, filters, kernel, stride, padding, groups, name, activation=True):
    x = conv(x, filters, kernel, stride=stride, padding=padding, groups=groups, name=name + "_conv")
    x = bn(x, name=name + "_bn")
    return prelu(x, name=name + "_prelu") if activation else x


def _depthwise(x, out_channels, expand, stride, residual, name):
    """1x1 expand (ConvBlock) - 3x3 depthwise (ConvBlock) - 1x1 project (linear), + shortcut."""
    y = _conv_block(x, expand, 1, 1, 0, 1, name + "_expand")
    y = _conv_block(y, expand, 3, stride, 1, expand, name + "_dw")
    y = _conv_block(y, out_channels, 1, 1, 0, 1, name + "_project", activation=False)
    return keras.layers.Add(name=name + "_add")([x, y]) if residual else y


def mobilefacenet(input_shape=(112, 112, 3), embedding_size: int = 512, scale: int = 1,
                  blocks=(1, 4, 6, 2), name: str = "mobilefacenet") -> keras.Model:
    """MobileFaceNet as insightface's ``recognition/arcface_torch/backbones/mobilefacenet.py``.

    Conv3x3/2 (64 s) - [Conv3x3 grouped | residual bottlenecks] - bottleneck/2 - residual x
    blocks[1] - bottleneck/2 (128 s) - residual x blocks[2] - bottleneck/2 - residual x
    blocks[3] - Conv1x1(512) - GDC (7x7 depthwise, linear) - Dense(embedding_size, no bias) - BN.
    Bottlenecks expand to 128/256/512 channels as insightface does, whatever ``scale``.

    ``scale=1`` is the paper's width (1,200,512 parameters at D = 512; 1,003,136 at D = 128, the
    paper's "0.99M"); ``scale=2`` is insightface's ``mbf`` (2,059,520). Both equal the parameter
    counts of insightface's module with the same arguments.

    Args:
        input_shape: (H, W, 3), H and W divisible by 16. Defaults to `(112, 112, 3)`.
        embedding_size: embedding size. Defaults to `512`.
        scale: width multiplier, 1 or 2. Defaults to `1`.
        blocks: residual blocks per stage. Defaults to `(1, 4, 6, 2)`.
        name: model name. Defaults to `"mobilefacenet"`.

    Returns:
        A ``keras.Model`` mapping (B, H, W, 3) images to (B, embedding_size) embeddings.

    Example:

    >>> from keras_facemargin.backbones import mobilefacenet
    >>> mobilefacenet().output_shape
    (None, 512)
    """
    shape = check_input_shape(input_shape, "mobilefacenet")
    embedding_size = check_int("embedding_size", embedding_size, low=1)
    if scale not in (1, 2):
        raise ValueError(f"`scale` must be 1 or 2. Received: scale={scale!r}")
    if len(blocks) != 4 or any(not isinstance(b, int) or b < 1 for b in blocks):
        raise ValueError(f"`blocks` must be 4 positive ints. Received: blocks={blocks!r}")
    c64, c128 = 64 * scale, 128 * scale
    inputs = keras.Input(shape, name="image")
    x = _conv_block(inputs, c64, 3, 2, 1, 1, "stem")
    if blocks[0] == 1:
        x = _conv_block(x, c64, 3, 1, 1, 64, "stem_dw")
    else:
        for i in range(blocks[0]):
            x = _depthwise(x, c64, 128, 1, True, f"stage0_block{i}")
    stages = [(c64, 128, blocks[1], 128), (c128, 256, blocks[2], 256), (c128, 512, blocks[3], 256)]
    for s, (out, down_expand, count, expand) in enumerate(stages, start=1):
        x = _depthwise(x, out, down_expand, 2, False, f"stage{s}_down")
        for i in range(count):
            x = _depthwise(x, out, expand, 1, True, f"stage{s}_block{i}")
    x = _conv_block(x, 512, 1, 1, 0, 1, "conv_sep")
    gdc = (shape[0] // 16, shape[1] // 16)
    x = keras.layers.DepthwiseConv2D(gdc, use_bias=False, name="gdc_dw",
                                     depthwise_initializer=initializers("he_fan_out"))(x)
    x = bn(x, name="gdc_bn")
    x = keras.layers.Flatten(name="gdc_flatten")(x)
    x = keras.layers.Dense(embedding_size, use_bias=False, name="gdc_fc",
                           kernel_initializer=initializers("he_fan_out"))(x)
    x = bn(x, name="embedding")
    return keras.Model(inputs, x, name=name)
