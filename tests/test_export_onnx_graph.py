"""The ops of our ONNX files, where they decide onnxruntime's speed against insightface's own
torch.onnx files (benchmarks/export.py): grouped convolutions are one ``Conv`` with
``group=G``, not a depthwise convolution and a ``ReduceSum``; PReLU is ONNX's ``PRelu``, not
five element-wise ops; a BN that cannot fold into a convolution is ONNX's
``BatchNormalization``, not a Mul and an Add."""

import keras
import numpy as np
import pytest

from keras_facemargin.export.onnx import batchnorm_ops, convert, prelu_ops, to_onnx


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


def test_prelu_becomes_one_prelu_op_with_any_slope(tmp_path):
    """Keras' PReLU per channel (shared over H and W, as every backbone here uses it) with
    slopes outside [0, 1] too (negative, > 1: the rewrite must be exact for any slope, unlike
    max(y, alpha * y)); the file against Keras' own PReLU through onnxruntime. (A PReLU with
    one slope per element keeps tf2onnx's transposes inside the pattern and stays as it is.)"""
    import onnx
    import onnxruntime as ort

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same")(inputs)
    x = keras.layers.PReLU(shared_axes=[1, 2])(x)
    x = keras.layers.Conv2D(4, 3, strides=2)(x)
    x = keras.layers.PReLU(shared_axes=[1, 2])(x)
    x = keras.layers.Dense(5, name="emb")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, x)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.PReLU):
            layer.set_weights([rng.uniform(-0.5, 1.5, w.shape) for w in layer.get_weights()])
    path = tmp_path / "p.onnx"
    to_onnx(model, path, embedding_layer="emb", convention="keras_facemargin",
            l2_normalize=False)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = _ops(proto)
    assert ops.count("PRelu") == 2 and "Neg" not in ops and "Relu" not in ops
    images = rng.normal(size=(3, 8, 8, 3)).astype("float32")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: images})[0]
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(model(images)), atol=1e-5)


def _prelu_graph(extra_output: bool):
    """Add(Relu(y), Mul(Relu(Neg(y)), k)) on y = x + 0, k = -alpha per channel."""
    from onnx import TensorProto, helper, numpy_helper

    alpha = np.array([0.25, -0.5, 1.5], np.float32).reshape(3, 1, 1)
    nodes = [helper.make_node("Add", ["x", "zero"], ["y"]),
             helper.make_node("Relu", ["y"], ["pos"]),
             helper.make_node("Neg", ["y"], ["neg"]),
             helper.make_node("Relu", ["neg"], ["neg_relu"]),
             helper.make_node("Mul", ["neg_relu", "k"], ["scaled"]),
             helper.make_node("Add", ["pos", "scaled"], ["out"])]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 2, 2])]
    if extra_output:
        outputs.append(helper.make_tensor_value_info("pos", TensorProto.FLOAT, [1, 3, 2, 2]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 2])],
        outputs, [numpy_helper.from_array(-alpha, "k"),
                  numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                             ir_version=8), alpha


def test_prelu_ops_on_a_hand_built_graph_matches_numpy():
    import onnxruntime as ort

    proto, alpha = _prelu_graph(extra_output=False)
    proto = prelu_ops(proto)
    assert _ops(proto) == ["Add", "PRelu"]
    x = np.random.default_rng(1).normal(size=(1, 3, 2, 2)).astype(np.float32)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    want = np.maximum(x, 0) + alpha * np.minimum(x, 0)
    np.testing.assert_allclose(session.run(None, {"x": x})[0], want, rtol=0, atol=1e-7)


@pytest.mark.parametrize("extra_output", [True])
def test_prelu_ops_leaves_a_pattern_whose_parts_are_used_elsewhere(extra_output):
    """Relu(y) is also a graph output: removing it would break the graph."""
    proto, _ = _prelu_graph(extra_output)
    before = _ops(proto)
    assert _ops(prelu_ops(proto)) == before


def test_bn_before_a_conv_becomes_batchnormalization_and_matches_keras(tmp_path):
    """IResNet's pattern: a BN feeding a padded conv (no conv before it to fold into), trained-
    like values; the insightface file (NCHW, 127.5 / 127.5 input mapped to the trained 127.5 /
    128 inside) against Keras on the same pixels."""
    import onnx
    import onnxruntime as ort

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.PReLU(shared_axes=[1, 2])(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5)(x)
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.Conv2D(5, 3)(x)
    x = keras.layers.Dense(7, name="emb")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, x)
    rng = np.random.default_rng(0)
    bn = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)][0]
    bn.set_weights([rng.uniform(0.5, 1.5, 4), rng.normal(0, 0.5, 4), rng.normal(0, 0.5, 4),
                    rng.uniform(0.5, 1.5, 4)])
    path = tmp_path / "bn.onnx"
    to_onnx(model, path, embedding_layer="emb")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert _ops(proto).count("BatchNormalization") == 1
    pixels = rng.integers(0, 256, (3, 6, 6, 3)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": ((pixels - 127.5) / 127.5).transpose(0, 3, 1, 2)})[0]
    want = keras.ops.convert_to_numpy(model((pixels - 127.5) / 128.0))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _affine_graph(channels: int, const_channels: int):
    from onnx import TensorProto, helper, numpy_helper

    shape = [1, const_channels, 1, 1]
    rng = np.random.default_rng(3)
    s, t = (rng.normal(size=shape).astype(np.float32) for _ in range(2))
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Add", ["m", "t"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, channels, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, channels, 3, 3])],
        [numpy_helper.from_array(s, "s"), numpy_helper.from_array(t, "t")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return model, s, t


def test_batchnorm_ops_is_exact_and_leaves_a_broadcast_scalar_alone():
    import onnxruntime as ort

    proto, s, t = _affine_graph(4, 4)
    proto = batchnorm_ops(proto)
    assert _ops(proto) == ["BatchNormalization"]
    x = np.random.default_rng(4).normal(size=(2, 4, 3, 3)).astype(np.float32)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x})[0], x * s + t, rtol=0, atol=1e-6)
    # a [1, 1, 1, 1] constant over 4 channels is a broadcast, not a BN over axis 1
    proto, _, _ = _affine_graph(4, 1)
    assert _ops(batchnorm_ops(proto)) == ["Mul", "Add"]
