"""IResNet (insightface's improved ResNet for 112x112 faces): IResNet-18/34/50/100."""

from __future__ import annotations

import keras

from keras_facemargin._checks import check_int, check_number
from keras_facemargin.backbones._blocks import bn, check_input_shape, conv, prelu

INIT = "normal_0.1"  # insightface: nn.init.normal_(conv.weight, 0, 0.1)

DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}
WIDTHS = (64, 128, 256, 512)


def _block(x, planes: int, stride: int, name: str):
    """IBasicBlock: BN - Conv3x3 - BN - PReLU - Conv3x3(stride) - BN, plus the shortcut."""
    shortcut = x
    if stride != 1 or x.shape[-1] != planes:
        shortcut = conv(x, planes, 1, stride=stride, name=name + "_down_conv", initializer=INIT)
        shortcut = bn(shortcut, name=name + "_down_bn")
    out = bn(x, name=name + "_bn1")
    out = conv(out, planes, 3, padding=1, name=name + "_conv1", initializer=INIT)
    out = bn(out, name=name + "_bn2")
    out = prelu(out, name=name + "_prelu")
    out = conv(out, planes, 3, stride=stride, padding=1, name=name + "_conv2",
               initializer=INIT)
    out = bn(out, name=name + "_bn3")
    return keras.layers.Add(name=name + "_add")([out, shortcut])


def iresnet(depth: int = 50, input_shape=(112, 112, 3), embedding_size: int = 512,
            dropout: float = 0.0, name: str | None = None) -> keras.Model:
    """insightface's IResNet as a Keras functional model: face image in, embedding out.

    Architecture (``recognition/arcface_torch/backbones/iresnet.py``): Conv3x3(64) - BN - PReLU,
    four stages of IBasicBlocks (BN - Conv3x3 - BN - PReLU - Conv3x3 - BN + shortcut, the first
    block of each stage with stride 2 and a Conv1x1 + BN shortcut), widths 64/128/256/512, then
    BN - Flatten - Dropout - Dense(embedding_size) - BN (the last BN without a learned scale, as
    insightface freezes it at 1).

    Parameter counts (trainable, D = 512, 112x112): IResNet-18 24,025,088; -34 34,138,816;
    -50 43,590,336; -100 65,155,648 (equal to insightface's trainable parameters).

    Args:
        depth: 18, 34, 50 or 100. Defaults to `50`.
        input_shape: (H, W, 3), H and W divisible by 16. Defaults to `(112, 112, 3)`.
        embedding_size: size of the embedding. Defaults to `512`.
        dropout: dropout rate before the embedding layer, in [0, 1). Defaults to `0.0`.
        name: model name. Defaults to `"iresnet{depth}"`.

    Returns:
        A ``keras.Model`` mapping (B, H, W, 3) images (normalized as ``(x - 127.5) / 128``) to
        (B, embedding_size) embeddings.

    Example:

    >>> from keras_facemargin.backbones import iresnet
    >>> model = iresnet(18)
    >>> model.output_shape
    (None, 512)
    """
    if depth not in DEPTHS:
        raise ValueError(f"`depth` must be one of {sorted(DEPTHS)}. Received: depth={depth!r}")
    shape = check_input_shape(input_shape, "iresnet")
    embedding_size = check_int("embedding_size", embedding_size, low=1)
    dropout = check_number("dropout", dropout, low=0.0, high=1.0, high_inclusive=False)
    inputs = keras.Input(shape, name="image")
    x = conv(inputs, 64, 3, padding=1, name="stem_conv", initializer=INIT)
    x = bn(x, name="stem_bn")
    x = prelu(x, name="stem_prelu")
    for stage, (blocks, planes) in enumerate(zip(DEPTHS[depth], WIDTHS, strict=True), start=1):
        for index in range(blocks):
            x = _block(x, planes, 2 if index == 0 else 1, name=f"stage{stage}_block{index}")
    x = bn(x, name="head_bn")
    x = keras.layers.Flatten(name="head_flatten")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(embedding_size, name="head_fc")(x)
    x = bn(x, name="embedding", scale=False)
    return keras.Model(inputs, x, name=name or f"iresnet{depth}")


def iresnet18(**kwargs) -> keras.Model:
    """IResNet-18 (see :func:`iresnet`)."""
    return iresnet(18, **kwargs)


def iresnet34(**kwargs) -> keras.Model:
    """IResNet-34 (see :func:`iresnet`)."""
    return iresnet(34, **kwargs)


def iresnet50(**kwargs) -> keras.Model:
    """IResNet-50 (see :func:`iresnet`)."""
    return iresnet(50, **kwargs)


def iresnet100(**kwargs) -> keras.Model:
    """IResNet-100 (see :func:`iresnet`)."""
    return iresnet(100, **kwargs)
