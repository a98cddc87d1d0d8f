"""Export: strip_head, verified TFLite and ONNX files, metadata, atomic writes, bad input."""

import json
import os

import keras
import numpy as np
import pytest

import keras_facemargin as kf
from keras_facemargin.export import ExportVerificationError, strip_head, to_onnx, to_tflite
from keras_facemargin.export import verify as verify_module
from keras_facemargin.export.tflite import ConversionError, op_names
from keras_facemargin.runtime import Embedder

from export_helpers import trained_digit_mobilefacenet, trained_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def trained():
    return trained_model()


def normalized(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference_embeddings(model, images_uint8):
    """What the stripped model must compute: the head's input, L2-normalized (numpy)."""
    body = keras.Model(model.inputs, model.get_layer("embedding").output)
    x = (images_uint8.astype(np.float32) - 127.5) / 128.0
    return normalized(np.asarray(body(x, training=False)))


def min_cosine(a, b):
    return float(np.min(np.sum(normalized(a) * normalized(b), axis=1)))


# ------------------------------------------------------------------ strip_head
def test_strip_head_matches_the_head_input_and_flip_fusion(trained):
    model, images, _ = trained
    x = (images[:8].astype(np.float32) - 127.5) / 128.0
    emb = strip_head(model)
    np.testing.assert_allclose(emb.predict(x, verbose=0), reference_embeddings(model, images[:8]),
                               rtol=1e-5, atol=1e-6)
    fused = strip_head(model, flip_fusion=True).predict(x, verbose=0)
    body = strip_head(model, l2_normalize=False)
    want = normalized(np.asarray(body(x)) + np.asarray(body(x[:, :, ::-1])))
    np.testing.assert_allclose(fused, want, rtol=1e-5, atol=1e-6)


def test_strip_head_with_a_labels_input_and_by_name():
    inputs, labels = keras.Input((6,)), keras.Input((), dtype="int32")
    emb = keras.layers.Dense(4, name="emb")(inputs)
    head = kf.CosMarginLayer(3, name="cos")
    model = keras.Model([inputs, labels], head(emb, labels))
    stripped = strip_head(model, head_layer="cos", l2_normalize=False)
    x = np.random.default_rng(0).normal(size=(2, 6)).astype("float32")
    np.testing.assert_allclose(stripped(x), model.get_layer("emb")(x), rtol=1e-6)


def test_strip_head_rebuilds_mixed_precision_in_float32():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4), kf.ArcMarginLayer(3)])
    finally:
        keras.config.set_dtype_policy("float32")
    stripped = strip_head(model, l2_normalize=False)
    assert all(layer.dtype_policy.name == "float32" for layer in stripped.layers[1].layers)
    x = np.random.default_rng(0).normal(size=(2, 6)).astype("float32")
    w, b = model.layers[0].get_weights()
    np.testing.assert_allclose(stripped(x), x @ w + b, rtol=1e-5, atol=1e-6)


def test_float32_rebuild_keeps_layers_named_mixed():
    """Only dtype policies are rewritten: layers named ``mixed_*`` keep their names, and a
    functional graph wired through two of them still computes relu(x W1 + b1) W2 + b2."""
    keras.config.set_dtype_policy("mixed_float16")
    try:
        inputs = keras.Input((6,))
        x = keras.layers.Dense(5, activation="relu", name="mixed_a")(inputs)
        x = keras.layers.Dense(4, name="mixed_b")(x)
        model = keras.Model(inputs, kf.ArcMarginLayer(3, name="head")(x))
    finally:
        keras.config.set_dtype_policy("float32")
    stripped = strip_head(model, l2_normalize=False)
    body = stripped.layers[1]
    assert {"mixed_a", "mixed_b"} <= {layer.name for layer in body.layers}
    assert all(layer.dtype_policy.name == "float32" for layer in body.layers)
    x = np.random.default_rng(1).normal(size=(3, 6)).astype("float32")
    (w1, b1), (w2, b2) = (model.get_layer(n).get_weights() for n in ("mixed_a", "mixed_b"))
    want = np.maximum(x @ w1 + b1, 0.0) @ w2 + b2
    np.testing.assert_allclose(stripped(x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("build,match", [
    (lambda: keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)]), "no margin head"),
    (lambda: keras.Sequential([keras.Input((6,)), kf.ArcMarginLayer(6), kf.CosMarginLayer(3)]),
     "2 margin heads"),
])
def test_strip_head_needs_exactly_one_head(build, match):
    with pytest.raises(ValueError, match=match):
        strip_head(build())


def test_strip_head_refuses_a_non_flat_head_input_and_unknown_names():
    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, keras.layers.Dense(3, name="dense")(inputs))
    with pytest.raises(ValueError, match="flat"):
        strip_head(model, head_layer="dense")
    with pytest.raises(ValueError, match="names no layer"):
        strip_head(model, head_layer="missing")


# ------------------------------------------------------------------ TFLite
@pytest.fixture(scope="module")
def tflite_files(trained, tmp_path_factory):
    model, images, _ = trained
    out = tmp_path_factory.mktemp("tflite")
    calib, held = images[:100], images[100:200]
    reports = {}
    for name, kwargs in [("float32", {}), ("float16", {"quantization": "float16"}),
                         ("dynamic", {"quantization": "dynamic"}),
                         ("int8", {"quantization": "int8", "representative_data": calib}),
                         ("int8_io", {"quantization": "int8", "representative_data": calib,
                                      "int8_io": True})]:
        reports[name] = to_tflite(model, out / f"{name}.tflite", verification_data=held,
                                  **kwargs)
    return reports


@pytest.mark.parametrize("name,threshold", [("float32", 0.99999), ("float16", 0.999),
                                            ("dynamic", 0.99), ("int8", 0.99),
                                            ("int8_io", 0.99)])
def test_tflite_exports_are_verified_builtin_only_and_dynamic_batch(trained, tflite_files,
                                                                    name, threshold):
    model, images, _ = trained
    report = tflite_files[name]
    assert report.passed and os.path.getsize(report.path) == report.size_bytes
    data = open(report.path, "rb").read()
    ops = op_names(data)
    assert all(op.isupper() and not op.startswith("FLEX") for op in ops), ops
    from ai_edge_litert.interpreter import Interpreter

    interpreter_ops = {d["op_name"] for d in Interpreter(model_path=report.path)
                       ._get_ops_details()}
    assert not any("Flex" in op or "CUSTOM" in op for op in interpreter_ops), interpreter_ops
    embedder = Embedder.open(report.path)
    held = images[200:240]  # never used by the export
    want = reference_embeddings(model, held)
    for batch in (1, 7, 40):
        assert min_cosine(embedder.embed(held, batch_size=batch), want) >= threshold


def trained_like(model, seed=0):
    """Give every BatchNormalization and PReLU distinct non-trivial values, as training does
    (at init they are constant: the converter then shares identical constants in the float32
    file, which flatters neither file size)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.PReLU)):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32")
                               if "variance" in w.path or "gamma" in w.path
                               else rng.uniform(0.1, 0.4, w.shape).astype("float32")
                               if "alpha" in w.path
                               else rng.normal(0, 0.1, w.shape).astype("float32")
                               for w in layer.weights])
    return model


@pytest.mark.slow
@pytest.mark.parametrize("scale", [1, 2])
def test_int8_mobilefacenet_is_at_most_0_3_of_float32_size(tmp_path, scale):
    """MobileFaceNet at the paper's width (scale=1, 1.2M parameters) and insightface's mbf
    (scale=2): the int8 file is <= 0.3x the float32 file (sizes of the files written; size only:
    an untrained network is chaotic, its int8 accuracy is tested on trained models). Without
    shared zero-point vectors the paper-width file measures 0.319x."""
    from keras_facemargin.backbones import mobilefacenet

    model = trained_like(mobilefacenet(scale=scale))
    images = np.random.default_rng(0).integers(0, 256, (8, 112, 112, 3)).astype(np.uint8)
    to_tflite(model, tmp_path / "f.tflite", verify=False, embedding_layer="embedding")
    to_tflite(model, tmp_path / "i.tflite", quantization="int8", representative_data=images,
              verify=False, embedding_layer="embedding")
    ratio = os.path.getsize(tmp_path / "i.tflite") / os.path.getsize(tmp_path / "f.tflite")
    assert ratio <= 0.30, ratio


def test_shared_vectors_change_no_value(trained, tmp_path):
    """The file is written with each distinct numeric vector once (zero points): the same
    tensors, quantization parameters and outputs as TensorFlow's own serialization, fewer
    bytes."""
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.tools import flatbuffer_utils

    from keras_facemargin.export.tflite import convert, serialize

    model, images, _ = trained
    net = strip_head(model)
    calib = (images[:32].astype(np.float32) - 127.5) / 128.0
    data = convert(net, "int8", calib)
    plain = bytes(flatbuffer_utils.convert_object_to_bytearray(
        flatbuffer_utils.read_model_from_bytearray(bytearray(data))))
    shared = serialize(flatbuffer_utils.read_model_from_bytearray(bytearray(data)))
    assert len(shared) < len(plain)
    x = calib[:5]
    outs, details = [], []
    for name, blob in (("plain", plain), ("shared", shared)):
        (tmp_path / name).write_bytes(blob)
        interp = Interpreter(str(tmp_path / name))
        interp.resize_tensor_input(0, x.shape)
        interp.allocate_tensors()
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
        outs.append(interp.get_tensor(interp.get_output_details()[0]["index"]))
        details.append([(t["name"], t["dtype"], t["quantization_parameters"]["scales"].tolist(),
                         t["quantization_parameters"]["zero_points"].tolist())
                        for t in interp.get_tensor_details()])
    assert details[0] == details[1]
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.slow
def test_int8_trained_mobilefacenet_reaches_0_99_on_held_out_images(tmp_path):
    """The issue's int8 target on a trained backbone: paper-width MobileFaceNet (112x112x3 ->
    512) trained 30 steps of 32 with ArcFace on the digits upscaled to 112x112 (identities
    0-6), calibrated on 64 training images, verified on 64 disjoint held-out images (half of
    unseen identities 7-9), exported to int8 TFLite and int8 ONNX. TFLite: seeds 0-3 measured
    0.9944-0.9974 (about 40 s on 2 cores)."""
    model, images, calib, held = trained_digit_mobilefacenet()
    report = to_tflite(model, tmp_path / "mfn_int8.tflite", "int8", images[calib],
                       verification_data=images[held], force=True)
    assert not set(calib) & set(held) and report.samples == 64
    assert report.min_cosine >= 0.99, report.min_cosine
    assert report.passed and os.path.exists(report.path)
    # the same through onnxruntime's static int8 (7-bit weights, pre-processed, float L2 norm)
    report = to_onnx(model, tmp_path / "mfn_int8.onnx", quantization="int8",
                     calibration_data=images[calib], verification_data=images[held], force=True)
    assert report.samples == 64 and report.min_cosine >= 0.99, report.min_cosine
    assert report.passed and os.path.exists(report.path)


def test_tflite_metadata_round_trip(trained, tflite_files):
    model, _, _ = trained
    meta = Embedder.open(tflite_files["int8_io"].path).metadata
    assert meta.embedding_size == 32 and meta.input_shape == (32, 32, 3)
    # integer input: the normalization runs in the graph, the input holds the pixels
    assert (meta.mean, meta.std, meta.channel_order) == (0.0, 1.0, "RGB")
    assert Embedder.open(tflite_files["int8"].path).metadata.mean == 127.5
    assert meta.l2_normalized and meta.normalize_on_host and not meta.flip_fused
    assert meta.input_type == "int8" and meta.quantization == "int8"
    assert meta.training_head["class_name"] == "ArcMarginLayer"
    assert meta.training_head["num_classes"] == 10 and meta.package_version == kf.__version__
    from tensorflow.lite.tools import flatbuffer_utils

    fb = flatbuffer_utils.read_model_from_bytearray(
        bytearray(open(tflite_files["float32"].path, "rb").read()))
    names = [m.name.decode() if isinstance(m.name, bytes) else m.name for m in fb.metadata]
    assert "keras_facemargin" in names and "CONVERSION_METADATA" in names
    entry = fb.metadata[names.index("keras_facemargin")]
    stored = json.loads(bytes(fb.buffers[entry.buffer].data).decode())
    assert stored["l2_normalized"] is True and stored["quantization"] is None


def test_failed_verification_writes_nothing_unless_forced(trained, tmp_path, monkeypatch):
    model, images, _ = trained
    monkeypatch.setitem(verify_module.THRESHOLDS, "float16", 1.0000001)
    target = tmp_path / "face.tflite"
    with pytest.raises(ExportVerificationError, match="nothing written"):
        to_tflite(model, target, quantization="float16", verification_data=images[:8])
    assert not target.exists() and os.listdir(tmp_path) == []
    with pytest.warns(UserWarning, match="written anyway"):
        report = to_tflite(model, target, quantization="float16", verification_data=images[:8],
                           force=True)
    assert target.exists() and not report.passed


def test_unconvertible_layer_is_named(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Dense(4)(keras.layers.Flatten()(inputs))
    x = keras.layers.Lambda(lambda t: t * keras.ops.sign(keras.ops.det(
        keras.ops.reshape(t, (-1, 2, 2))))[:, None], name="determinant")(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
    with pytest.raises((ConversionError, ValueError)) as err:
        to_tflite(model, tmp_path / "never_written.tflite", strip=False)
    assert "MatrixDeterminant" in str(err.value) and "determinant" in str(err.value)
    assert not os.listdir(tmp_path)  # nothing written, no temporary file left


def test_int8_needs_calibration_and_bad_quantization_is_named(trained, tmp_path):
    model, _, _ = trained
    with pytest.raises(ValueError, match="representative_data"):
        to_tflite(model, tmp_path / "a.tflite", quantization="int8")
    with pytest.raises(ValueError, match="quantization"):
        to_tflite(model, tmp_path / "a.tflite", quantization="int4")
    with pytest.raises(ValueError, match="opset"):
        to_onnx(model, tmp_path / "a.onnx", opset=19)


def test_int8_without_verification_data_verifies_on_held_out_calibration_faces(trained,
                                                                               tmp_path):
    """int8 exports given only calibration faces verify on a quarter of them held out of the
    calibration (random noise, the old default, measured min cosine 0.98 and refused these
    sound models); an independent check on faces never seen by the export confirms them."""
    model, images, _ = trained
    calib, unseen = images[:100], images[200:240]
    for report in (to_tflite(model, tmp_path / "a.tflite", "int8", calib),
                   to_onnx(model, tmp_path / "a.onnx", quantization="int8",
                           calibration_data=calib)):
        assert report.passed and report.samples == 25
        got = Embedder.open(report.path).embed(unseen)
        assert min_cosine(got, reference_embeddings(model, unseen)) >= 0.99
    with pytest.raises(ValueError, match="at least 2 calibration images"):
        to_tflite(model, tmp_path / "b.tflite", "int8", calib[:1])
    assert not (tmp_path / "b.tflite").exists()


# ------------------------------------------------------------------ ONNX
@pytest.fixture(scope="module")
def onnx_files(trained, tmp_path_factory):
    model, images, _ = trained
    out = tmp_path_factory.mktemp("onnx")
    return {"float32": to_onnx(model, out / "face.onnx", verification_data=images[100:200],
                               flip_fusion=True, layout="nhwc"),
            "int8": to_onnx(model, out / "face8.onnx", quantization="int8", layout="nhwc",
                            calibration_data=images[:100], verification_data=images[100:200])}


def test_onnx_export_checked_dynamic_batch_and_metadata(trained, onnx_files):
    import onnx
    import onnxruntime as ort

    model, images, _ = trained
    report = onnx_files["float32"]
    proto = onnx.load(report.path)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["keras_facemargin"])
    assert meta["flip_fused"] is True and meta["embedding_size"] == 32
    session = ort.InferenceSession(report.path, providers=["CPUExecutionProvider"])
    held = images[200:240]
    x = (held.astype(np.float32) - 127.5) / 128.0
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    body = keras.Model(model.inputs, model.get_layer("embedding").output)
    want = normalized(np.asarray(body(x)) + np.asarray(body(x[:, :, ::-1])))
    assert min_cosine(got, want) >= 0.99999
    assert min_cosine(Embedder.open(onnx_files["int8"].path).embed(held),
                      reference_embeddings(model, held)) >= 0.99


def test_onnx_int8_uses_7bit_weights_and_uint8_activations(onnx_files):
    """Default int8 ONNX: per-channel weights in [-64, 64] (7 bits: onnxruntime's uint8 x int8
    kernels on x86 CPUs without VNNI add products in int16 and saturate with 8-bit weights),
    uint8 activations, and a float L2 normalization at the end."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(onnx_files["int8"].path)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert "keras_facemargin" in {p.key for p in proto.metadata_props}
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    weights, activation_zero_points = [], []
    for node in proto.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        if node.input[0] in inits:  # a quantized constant: a weight (int8) or a bias (int32)
            if inits[node.input[0]].dtype == np.int8:
                weights.append(inits[node.input[0]])
        else:
            activation_zero_points.append(inits[node.input[2]])
    assert len(weights) >= 4 and activation_zero_points
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) >= 60  # per channel
    assert all(z.dtype == np.uint8 for z in activation_zero_points)
    # the final L2 normalization stays float: the output comes from its Mul, not from a
    # DequantizeLinear (a unit vector in 8 bits over [-1, 1] loses several percent of cosine)
    producer = {out: node for node in proto.graph.node for out in node.output}
    last = producer[proto.graph.output[0].name]
    assert last.op_type == "Mul" and "l2_normalize" in last.name
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] in last.output
                   for n in proto.graph.node)
