"""A small face-like model trained on real (bundled) data, for the export and runtime tests."""

import keras
import numpy as np

import keras_facemargin as kf


def digit_images(count: int | None = None, seed: int = 0):
    """scikit-learn's digits as (N, 32, 32, 3) uint8 RGB images and labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.kron(d.images, np.ones((4, 4))) * (255.0 / 16.0)
    rng = np.random.default_rng(seed)
    rgb = np.stack([images, images * 0.8, 255.0 - images], axis=-1)
    rgb = np.clip(rgb + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)
    order = rng.permutation(len(rgb))[:count]
    return rgb[order], d.target[order]


def trained_model(epochs: int = 4, seed: int = 0):
    """Conv backbone (32x32x3 -> 32-d) + ArcFace head trained briefly on digits."""
    keras.utils.set_random_seed(seed)
    images, labels = digit_images()
    inputs = keras.Input((32, 32, 3), name="image")
    x = inputs
    for filters in (16, 32):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.PReLU(shared_axes=[1, 2])(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(32, name="embedding_fc")(x)
    embedding = keras.layers.BatchNormalization(name="embedding")(x)
    head = kf.ArcMarginLayer(10, margin=0.3, scale=16.0, name="head")
    model = keras.Model(inputs, head(embedding))
    model.compile(keras.optimizers.Adam(3e-3), loss=head.loss)
    model.fit((images[:1400].astype("float32") - 127.5) / 128.0, labels[:1400], epochs=epochs,
              batch_size=64, verbose=0)
    return model, images[1400:], labels[1400:]


def trained_digit_mobilefacenet():
    """MobileFaceNet (112x112 -> 512) trained 30 steps of 32 with ArcFace on the digits upscaled to
    112x112 (identities 0-6). Returns ``(model, images, calib, held)``: 64 calibration images
    from the training set and 64 disjoint held-out ones (half of unseen identities 7-9)."""
    from keras_facemargin.backbones import mobilefacenet
    from keras_facemargin.data import digit_faces

    keras.utils.set_random_seed(0)
    images, labels = digit_faces()
    rng = np.random.default_rng(0)
    seen = rng.permutation(np.flatnonzero(labels < 7))
    unseen = np.flatnonzero(labels >= 7)
    train, held = seen[:960], np.concatenate([seen[1000:1032], unseen[:32]])
    calib = rng.choice(train, 64, replace=False)
    backbone = mobilefacenet()
    head = kf.ArcMarginLayer(7, margin=0.5, scale=32.0, name="head")
    model = keras.Model(backbone.inputs, head(backbone.outputs[0]))
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), loss=head.loss)
    model.fit((images[train].astype(np.float32) - 127.5) / 128.0, labels[train], batch_size=32,
              epochs=1, verbose=0)
    return model, images, calib, held
