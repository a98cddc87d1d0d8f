"""Backbones: parameter counts against insightface's modules, shapes, bad input."""

import keras
import numpy as np
import pytest

from keras_facemargin.backbones import iresnet, mobilefacenet

# Trainable parameters of insightface's PyTorch modules (recognition/arcface_torch/backbones,
# commit 7fadd42), counted by instantiating them with torch 2.13 CPU:
# sum(p.numel() for p in model.parameters() if p.requires_grad). IResNet's last BN weight is
# frozen there (requires_grad=False), as our last BN has no learned scale.
INSIGHTFACE = {
    ("iresnet", 18): 24_025_088, ("iresnet", 34): 34_138_816, ("iresnet", 50): 43_590_336,
    ("iresnet", 100): 65_155_648,
    ("mbf", 1, 512): 1_200_512, ("mbf", 1, 128): 1_003_136, ("mbf", 2, 512): 2_059_520,
}


def trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def iresnet_formula(layers, d=512):
    """PyTorch parameter rules over the IResNet definition (conv k*k*in*out, BN 2c, PReLU c)."""
    total = 3 * 3 * 3 * 64 + 2 * 64 + 64  # stem conv, bn, prelu
    inplanes = 64
    for planes, blocks in zip((64, 128, 256, 512), layers, strict=True):
        for i in range(blocks):
            total += 2 * inplanes + 9 * inplanes * planes + 2 * planes + planes
            total += 9 * planes * planes + 2 * planes
            if i == 0:
                total += inplanes * planes + 2 * planes  # downsample conv1x1 + bn
            inplanes = planes
    total += 2 * 512 + 512 * 49 * d + d + d  # bn2, fc (with bias), features bias only
    return total


@pytest.mark.parametrize("depth,layers", [
    (18, (2, 2, 2, 2)), (34, (3, 4, 6, 3)),
    # 44M / 65M weights to build: the same formula as 18/34, with more blocks
    pytest.param(50, (3, 4, 14, 3), marks=pytest.mark.slow),
    pytest.param(100, (3, 13, 30, 3), marks=pytest.mark.slow)])
def test_iresnet_parameters_match_insightface(depth, layers):
    model = iresnet(depth)
    count = trainable(model)
    assert count == iresnet_formula(layers)
    assert abs(count - INSIGHTFACE[("iresnet", depth)]) <= 0.01 * INSIGHTFACE[("iresnet", depth)]
    assert model.output_shape == (None, 512)


def mobilefacenet_formula(d=512, blocks=(1, 4, 6, 2), s=1):
    """PyTorch parameter rules over insightface's MobileFaceNet definition.

    ConvBlock = Conv (k*k*in/groups*out, no bias) + BatchNorm2d (2 out) + PReLU (out);
    LinearBlock = Conv + BatchNorm2d; DepthWise(in, out, groups=g) = ConvBlock 1x1 in->g,
    ConvBlock 3x3 g->g (groups g), LinearBlock 1x1 g->out; GDC = LinearBlock 7x7 depthwise on
    512 channels, Linear 512->d without bias, BatchNorm1d(d).
    """
    def conv_block(i, o, k, g=1):
        return k * k * (i // g) * o + 2 * o + o

    def linear_block(i, o, k, g=1):
        return k * k * (i // g) * o + 2 * o

    def depthwise(i, o, g):
        return conv_block(i, g, 1) + conv_block(g, g, 3, g) + linear_block(g, o, 1)

    total = conv_block(3, 64 * s, 3)
    if blocks[0] == 1:
        total += conv_block(64 * s, 64 * s, 3, 64)
    else:
        total += blocks[0] * depthwise(64 * s, 64 * s, 128)
    total += depthwise(64 * s, 64 * s, 128) + blocks[1] * depthwise(64 * s, 64 * s, 128)
    total += depthwise(64 * s, 128 * s, 256) + blocks[2] * depthwise(128 * s, 128 * s, 256)
    total += depthwise(128 * s, 128 * s, 512) + blocks[3] * depthwise(128 * s, 128 * s, 256)
    total += conv_block(128 * s, 512, 1)
    total += linear_block(512, 512, 7, 512) + 512 * d + 2 * d
    return total


@pytest.mark.parametrize("scale,dim", [(1, 512), (1, 128), (2, 512)])
def test_mobilefacenet_parameters_match_insightface(scale, dim):
    model = mobilefacenet(scale=scale, embedding_size=dim)
    reference = INSIGHTFACE[("mbf", scale, dim)]
    assert trainable(model) == mobilefacenet_formula(dim, s=scale)
    assert abs(trainable(model) - reference) <= 0.01 * reference
    assert model.output_shape == (None, dim)


def test_backbones_embed_a_batch():
    model = mobilefacenet()
    images = np.random.default_rng(0).uniform(-1, 1, size=(2, 112, 112, 3)).astype("float32")
    out = model(images, training=False)
    assert out.shape == (2, 512) and np.all(np.isfinite(out))
    small = iresnet(18, input_shape=(64, 64, 3), embedding_size=32)
    assert small(images[:, :64, :64], training=False).shape == (2, 32)


def test_mobilefacenet_with_residual_first_stage_matches_formula():
    model = mobilefacenet(embedding_size=64, scale=2, blocks=(2, 1, 1, 1))
    assert trainable(model) == mobilefacenet_formula(64, blocks=(2, 1, 1, 1), s=2)


@pytest.mark.parametrize("make,match", [
    (lambda: iresnet(42), "depth"),
    (lambda: iresnet(18, input_shape=(112, 112)), "input_shape"),
    (lambda: iresnet(18, input_shape=(100, 100, 3)), "divisible by 16"),
    (lambda: iresnet(18, dropout=1.0), "dropout"),
    (lambda: mobilefacenet(scale=3), "scale"),
    (lambda: mobilefacenet(embedding_size=0), "embedding_size"),
    (lambda: mobilefacenet(blocks=(1, 2)), "blocks"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_backbone_with_head_saves_and_loads(tmp_path):
    import keras_facemargin as kf

    backbone = mobilefacenet(input_shape=(32, 32, 3), embedding_size=16)
    model = keras.Sequential([backbone, kf.ArcMarginLayer(5)])
    x = np.random.default_rng(1).uniform(-1, 1, size=(3, 32, 32, 3)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
