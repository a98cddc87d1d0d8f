"""Grouped convolutions reach the ONNX file as one ``Conv`` with ``group=G`` (as insightface's
own ``mbf`` file has them), not as a depthwise convolution and a ``ReduceSum``."""

import keras
import numpy as np

from keras_facemargin.export.onnx import convert


def _ops(proto):
    return [node.op_type for node in proto.graph.node]


def _groups(proto):
    return [attr.i for node in proto.graph.node if node.op_type == "Conv"
            for attr in node.attribute if attr.name == "group"]


def test_grouped_conv2d_is_one_onnx_conv_and_matches_keras():
    """Keras' own grouped ``Conv2D`` (stride 2, 'same' padding, a bias: its XLA path is the
    independent reference) against onnxruntime on the converted graph."""
    import onnxruntime as ort

    inputs = keras.Input((9, 9, 6))
    conv = keras.layers.Conv2D(9, 3, strides=2, padding="same", groups=3,
                               bias_initializer="random_normal")
    model = keras.Model(inputs, conv(inputs))
    proto = convert(model)
    assert "ReduceSum" not in _ops(proto)
    assert _groups(proto) == [3]
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 6)).astype("float32")
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(model(x)), atol=1e-5)


def test_insightface_mbf_has_its_grouped_conv_in_the_file():
    """MobileFaceNet scale=2 (insightface's mbf): its 3x3 convolution of 64 groups of 2
    channels is one Conv(group=64), as in insightface's torch.onnx file; the other 48 Conv
    nodes are dense (group 1) or depthwise (group = channels)."""
    from keras_facemargin.backbones import mobilefacenet

    proto = convert(mobilefacenet((64, 64, 3), embedding_size=32, scale=2))
    assert "ReduceSum" not in _ops(proto)
    assert _groups(proto).count(64) == 1
    assert _ops(proto).count("Conv") == 49
