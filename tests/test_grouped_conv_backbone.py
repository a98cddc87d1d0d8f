"""MobileFaceNet's grouped convolutions are GroupedConv2D (depthwise + sum), not Keras'
Conv2D(groups > 1), which TensorFlow runs on CPU through a nested XLA function (slow backward
pass, not convertible by tf2onnx). Same function, same gradients, same weights layout."""

import keras
import numpy as np
import tensorflow as tf

from keras_facemargin.backbones import mobilefacenet
from keras_facemargin.layers.convolution import GroupedConv2D


def _layers(model):
    return [layer for layer in model._flatten_layers(include_self=False)]


def test_mbf_has_no_keras_grouped_conv2d():
    model = mobilefacenet(input_shape=(112, 112, 3), scale=2)
    layers = _layers(model)
    assert not any(isinstance(layer, keras.layers.Conv2D) and layer.groups > 1 for layer in layers)
    grouped = [layer for layer in layers if isinstance(layer, GroupedConv2D)]
    assert grouped and {layer.groups for layer in grouped} == {64}
    # insightface's mbf parameter count (trainable), unchanged by the rewrite
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 2_059_520


def test_grouped_conv2d_equals_keras_grouped_conv_values_and_gradients():
    """mbf's layer (128 -> 128 channels, 3x3, 64 groups, stride 1 and 2) against Keras'
    own Conv2D(groups=64) with the same kernel: outputs and both gradients."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 9, 9, 128)).astype("float32"))
    for stride in (1, 2):
        ref = keras.layers.Conv2D(128, 3, strides=stride, groups=64, use_bias=False)
        ours = GroupedConv2D(128, (3, 3), 64, strides=(stride, stride))
        ref.build(x.shape)
        ours.build(x.shape)
        assert tuple(ours.kernel.shape) == tuple(ref.kernel.shape)
        ours.kernel.assign(ref.kernel)
        upstream = tf.constant(rng.normal(size=ref.compute_output_shape(x.shape)[1:]),
                               tf.float32)
        grads = []
        for layer in (ref, ours):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
                loss = tf.reduce_sum(y * upstream)
            grads.append((y, *tape.gradient(loss, [x, layer.kernel])))
        for a, b in zip(grads[0], grads[1], strict=True):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-4)


def test_mbf_saves_and_loads_with_the_grouped_layer(tmp_path):
    model = mobilefacenet(input_shape=(32, 32, 3), scale=2)
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    path = str(tmp_path / "mbf.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert any(isinstance(layer, GroupedConv2D) for layer in _layers(loaded))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
