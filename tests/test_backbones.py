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


@pytest.mark.parametrize("depth,layers", [(18, (2, 2, 2, 2)), (34, (3, 4, 6, 3)),
                                          (50, (3, 4, 14, 3)), (100, (3, 13, 30, 3))])
def test_iresnet_parameters_match_insightface(depth, layers):
    model = iresnet(depth)
    count = trainable(model)
    assert count == iresnet_formula(layers)
    assert abs(count - INSIGHTFACE[("iresnet", depth)]) <= 0.01 * INSIGHTFACE[("iresnet", depth)]
    assert model.output_shape == (None, 512)


@pytest.mark.parametrize("scale,dim", [(1, 512), (1, 128), (2, 512)])
def test_mobilefacenet_parameters_match_insightface(scale, dim):
    model = mobilefacenet(scale=scale, embedding_size=dim)
    reference = INSIGHTFACE[("mbf", scale, dim)]
    assert abs(trainable(model) - reference) <= 0.01 * reference
    assert model.output_shape == (None, dim)


def test_backbones_embed_a_batch_and_train_mode_differs_from_inference():
    model = mobilefacenet()
    images = np.random.default_rng(0).uniform(-1, 1, size=(2, 112, 112, 3)).astype("float32")
    out = model(images, training=False)
    assert out.shape == (2, 512) and np.all(np.isfinite(out))
    small = iresnet(18, input_shape=(64, 64, 3), embedding_size=32)
    assert small(images[:, :64, :64], training=False).shape == (2, 32)


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
