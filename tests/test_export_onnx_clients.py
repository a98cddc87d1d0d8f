"""Issue 14, ONNX and runtime side: files that drop into insightface, every backbone through
to_onnx, refusal of what is not an embedding model, one preprocessing definition, a runtime
free of TensorFlow that says which runtime version a file needs."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_facemargin as kf
from keras_facemargin.export import to_onnx
from keras_facemargin.export.tflite import ConversionError
from keras_facemargin.preprocessing import ARCFACE_TORCH, KERAS_FACEMARGIN, get_normalization
from keras_facemargin.runtime import Embedder

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSIGHTFACE_PYTHON = os.environ.get("KFM_INSIGHTFACE_PYTHON",
                                    "/work/venvs/insightface/bin/python")


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def min_cosine(a, b):
    return float(np.min(np.sum(unit(a) * unit(b), axis=-1)))


def trained_like(model, seed=0, gamma=(0.5, 1.5)):
    """Distinct non-trivial BN / PReLU values, as training leaves them (``gamma``: the range
    of the BN scales; deep residual nets need smaller ones to keep activations finite)."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.PReLU)):
            layer.set_weights([rng.uniform(*gamma, w.shape).astype("float32")
                               if "gamma" in w.path
                               else rng.uniform(0.5, 1.5, w.shape).astype("float32")
                               if "variance" in w.path
                               else rng.uniform(0.1, 0.4, w.shape).astype("float32")
                               if "alpha" in w.path
                               else rng.normal(0, 0.1, w.shape).astype("float32")
                               for w in layer.weights])
    return model


@pytest.fixture(scope="module")
def face_model():
    """A small 112x112 -> 64 network with an ArcFace head (insightface routes 112x112 files),
    with trained-like BN and PReLU values, and 12 'crops' (uint8 RGB)."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((112, 112, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=4, use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.PReLU(shared_axes=[1, 2])(x)
    x = keras.layers.Conv2D(16, 3, strides=4, groups=2, use_bias=False)(x)  # grouped
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(64, name="fc")(x)
    embedding = keras.layers.BatchNormalization(name="embedding")(x)
    model = keras.Model(inputs, kf.ArcMarginLayer(5, name="head")(embedding))
    trained_like(model)
    crops = np.random.default_rng(0).integers(0, 256, (12, 112, 112, 3)).astype(np.uint8)
    body = keras.Model(model.inputs, embedding)
    return model, body, crops


def arcface_get_feat(session, bgr_crops):
    """insightface's ArcFaceONNX.get_feat re-derived in NumPy: cv2.dnn.blobFromImages(imgs,
    1 / 127.5, size, (127.5,) * 3, swapRB=True) is BGR -> RGB, (x - 127.5) / 127.5, NCHW."""
    rgb = np.stack([crop[:, :, ::-1] for crop in bgr_crops]).astype(np.float32)
    blob = ((rgb - 127.5) / 127.5).transpose(0, 3, 1, 2)
    return session.run(None, {session.get_inputs()[0].name: blob})[0]


@pytest.fixture(scope="module")
def onnx_pair(face_model, tmp_path_factory):
    model, _, crops = face_model
    out = tmp_path_factory.mktemp("onnx_clients")
    return {"insightface": to_onnx(model, out / "insightface.onnx", verification_data=crops),
            "keras_facemargin": to_onnx(model, out / "nhwc.onnx", layout="nhwc",
                                        verification_data=crops)}


# ------------------------------------------------------------------ insightface format
def test_insightface_file_has_what_the_router_and_arcfaceonnx_read(face_model, onnx_pair):
    """The properties insightface's ModelRouter / ArcFaceONNX read (model_zoo.py,
    arcface_onnx.py): fewer than 5 outputs and exactly one (ArcFaceONNX asserts it); input
    [batch, 3, 112, 112] (the router tests shape[2] == shape[3] == 112, ArcFaceONNX takes
    input_size = shape[2:4][::-1]); no node named Sub*/_minus* and Mul*/_mul* among the first 8
    (else it feeds raw pixels). Then get_feat, re-derived, gives the Keras embeddings although
    the model was trained with (x - 127.5) / 128: the exporter put the map into the graph."""
    import onnx
    import onnxruntime as ort

    _, body, crops = face_model
    path = onnx_pair["insightface"].path
    proto = onnx.load(path)
    assert len(proto.graph.output) == 1
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 112, 112]
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim
    assert out_dims[0].dim_param == "batch" and out_dims[1].dim_value == 64
    # the 127.5/127.5 -> 127.5/128 map is folded into the first convolution's weights
    graph_input = proto.graph.input[0].name
    assert not [n.op_type for n in proto.graph.node if graph_input in n.input
                and n.op_type != "Conv"]
    names = [node.name for node in proto.graph.node[:8]]
    assert not (any(n.startswith(("Sub", "_minus")) for n in names)
                and any(n.startswith(("Mul", "_mul")) for n in names)), names
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["keras_facemargin"])
    assert (meta["layout"], meta["mean"], meta["std"]) == ("NCHW", 127.5, 127.5)
    assert meta["trained_normalization"] == {"name": "keras_facemargin", "mean": 127.5,
                                             "std": 128.0}
    assert meta["convention"] == "insightface" and meta["l2_normalized"]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = arcface_get_feat(session, [c[:, :, ::-1] for c in crops])
    want = np.asarray(body((crops.astype(np.float32) - 127.5) / 128.0, training=False))
    assert min_cosine(got, want) >= 0.99999
    # raw embedding out, as insightface's models (FaceAnalysis normalizes it afterwards)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
    # the NHWC file: the router would read (112, 3) as the input size (the failure)
    nhwc = onnx.load(onnx_pair["keras_facemargin"].path).graph.input[0]
    assert [d.dim_value for d in nhwc.type.tensor_type.shape.dim[1:]] == [112, 112, 3]


def test_both_layouts_give_the_keras_embeddings_in_the_runtime(face_model, onnx_pair):
    _, body, crops = face_model
    want = unit(body((crops.astype(np.float32) - 127.5) / 128.0, training=False))
    for report in onnx_pair.values():
        face = Embedder.open(report.path)
        np.testing.assert_allclose(face.embed(crops), want, atol=2e-6)
        np.testing.assert_allclose(face.embed(crops.astype(np.float32)), want, atol=2e-6)


@pytest.mark.skipif(not os.path.exists(INSIGHTFACE_PYTHON),
                    reason=f"no insightface environment at {INSIGHTFACE_PYTHON} (see "
                           "benchmarks/insightface_check.py)")
def test_insightface_package_routes_the_file_and_get_feat_matches_keras(face_model, onnx_pair,
                                                                        tmp_path):
    """insightface's own code, in its own environment: model_zoo.get_model returns an
    ArcFaceONNX with mean = std = 127.5, and get_feat on BGR crops gives Keras's embeddings;
    the NHWC file is not routed (the issue's `model not recognized`)."""
    _, body, crops = face_model
    want = np.asarray(body((crops.astype(np.float32) - 127.5) / 128.0, training=False))
    np.save(tmp_path / "crops.npy", crops)
    np.save(tmp_path / "want.npy", want)
    proc = subprocess.run(
        [INSIGHTFACE_PYTHON, os.path.join(ROOT, "benchmarks", "insightface_check.py"),
         "--model", onnx_pair["insightface"].path, "--images", str(tmp_path / "crops.npy"),
         "--want", str(tmp_path / "want.npy"), "--other", onnx_pair["keras_facemargin"].path],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0 and result["ok"], (result, proc.stderr[-2000:])
    assert result["routed_to"] == "ArcFaceONNX" and result["output_shape"] == [12, 64]
    assert result["min_cosine"] >= 0.99999
    assert result["other_routed_to"] is None


def test_convention_arguments_are_checked(face_model, tmp_path):
    model, _, _ = face_model
    with pytest.raises(ValueError, match="layout"):
        to_onnx(model, tmp_path / "a.onnx", layout="chw")
    with pytest.raises(ValueError, match="disagree"):
        to_onnx(model, tmp_path / "a.onnx", layout="nhwc", convention="insightface")
    with pytest.raises(ValueError, match="convention"):
        to_onnx(model, tmp_path / "a.onnx", convention="mxnet")
    assert not (tmp_path / "a.onnx").exists()


def test_arcface_torch_model_exports_without_a_rescaling(tmp_path):
    """A model trained on arcface_torch's (x - 127.5) / 127.5 needs no map in the graph: the
    file's first nodes go from the transpose straight into the network."""
    import onnx

    keras.utils.set_random_seed(0)
    inputs = keras.Input((112, 112, 3))
    x = keras.layers.Conv2D(4, 8, strides=8)(inputs)
    x = keras.layers.Dense(8, name="emb")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, x)
    crops = np.random.default_rng(1).integers(0, 256, (4, 112, 112, 3)).astype(np.uint8)
    report = to_onnx(model, tmp_path / "t.onnx", embedding_layer="emb",
                     normalization="arcface_torch", verification_data=crops)
    proto = onnx.load(report.path)
    assert not any("arcface_torch_to_trained" in n.name for n in proto.graph.node)
    meta = json.loads(proto.metadata_props[0].value)
    assert meta["trained_normalization"]["name"] == "arcface_torch"
    want = unit(model((crops.astype(np.float32) - 127.5) / 127.5))
    np.testing.assert_allclose(Embedder.open(report.path).embed(crops), want, atol=2e-6)


# ------------------------------------------------------------------ every backbone
def _backbone_parity(backbone, tmp_path, gamma=(0.5, 1.5), **kwargs):
    import onnxruntime as ort

    trained_like(backbone, gamma=gamma)
    shape = tuple(backbone.inputs[0].shape[1:])
    crops = np.random.default_rng(2).integers(0, 256, (6, *shape)).astype(np.uint8)
    report = to_onnx(backbone, tmp_path / f"{backbone.name}.onnx", embedding_layer="embedding",
                     verification_data=crops, **kwargs)
    want = np.asarray(backbone((crops.astype(np.float32) - 127.5) / 128.0, training=False))
    session = ort.InferenceSession(report.path, providers=["CPUExecutionProvider"])
    got = arcface_get_feat(session, [c[:, :, ::-1] for c in crops])
    return min_cosine(got, want)


@pytest.mark.parametrize("scale", [1, 2])
def test_mobilefacenet_through_onnx(scale, tmp_path):
    """scale=2 is insightface's mbf: its grouped 3x3 convolution (64 groups of 2 channels) went
    through a nested XLA function that tf2onnx could not convert (a raw onnx ValidationError);
    it is now a depthwise convolution and a sum."""
    from keras_facemargin.backbones import mobilefacenet

    assert _backbone_parity(mobilefacenet((64, 64, 3), embedding_size=128, scale=scale),
                            tmp_path) >= 0.99999


def test_iresnet18_through_onnx(tmp_path):
    from keras_facemargin.backbones import iresnet18

    assert _backbone_parity(iresnet18(input_shape=(32, 32, 3), embedding_size=64), tmp_path,
                            gamma=(0.1, 0.5)) >= 0.99999


@pytest.mark.slow
def test_iresnet50_through_onnx():
    """IResNet-50 (all 24 residual blocks, 64x64 input, 128-d) through to_onnx, in a subprocess:
    the conversion peaks near 8 GB, which a test worker must not keep (two workers and this
    conversion in one worker ran a 24 GB machine out of memory)."""
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "scripts", "iresnet50_onnx.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, script, "64"], capture_output=True, text=True,
                          env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert float(done.stdout.strip().splitlines()[-1]) >= 0.99999


def test_grouped_convolution_rewrite_matches_conv2d():
    """GroupedConv2D against Keras' own grouped Conv2D (an independent implementation), with
    strides, 'same' padding and a bias; and its config round trip."""
    from keras_facemargin.export.layers import GroupedConv2D

    x = np.random.default_rng(0).normal(size=(2, 9, 9, 6)).astype("float32")
    conv = keras.layers.Conv2D(9, 3, strides=2, padding="same", groups=3,
                               bias_initializer="random_normal")
    want = np.asarray(conv(x))
    layer = GroupedConv2D(9, (3, 3), groups=3, strides=(2, 2), padding="same", use_bias=True)
    layer.build(x.shape)
    layer.set_weights(conv.get_weights())
    np.testing.assert_allclose(np.asarray(layer(x)), want, atol=1e-5)
    clone = GroupedConv2D.from_config(layer.get_config())
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(clone(x)), want, atol=1e-5)
    with pytest.raises(ValueError, match="groups"):
        GroupedConv2D(5, (3, 3), groups=2)


def test_converter_failures_are_the_package_error(face_model, tmp_path, monkeypatch):
    """A converter or checker failure comes out as ConversionError saying what to do, never a
    raw tf2onnx / onnx exception."""
    import onnx
    import tf2onnx

    model, _, _ = face_model

    def broken(*args, **kwargs):
        raise onnx.checker.ValidationError("Field 'type' of 'attr' is required but missing.")

    monkeypatch.setattr(tf2onnx.convert, "from_function", broken)
    with pytest.raises(ConversionError, match="ONNX conversion .*opset") as err:
        to_onnx(model, tmp_path / "x.onnx")
    assert "ValidationError" in str(err.value) and not (tmp_path / "x.onnx").exists()
    monkeypatch.undo()
    monkeypatch.setattr(onnx.checker, "check_model", broken)
    with pytest.raises(ConversionError, match="ONNX model check"):
        to_onnx(model, tmp_path / "x.onnx")


# ------------------------------------------------------------------ not an embedding model
def test_model_without_head_needs_an_embedding_layer(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Dense(8, name="emb")(keras.layers.Flatten()(inputs))
    classifier = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(x))
    with pytest.raises(ValueError, match="no margin head.*embedding_layer"):
        to_onnx(classifier, tmp_path / "c.onnx")
    with pytest.raises(ValueError, match="softmax"):
        to_onnx(classifier, tmp_path / "c.onnx", strip=False)
    with pytest.raises(ValueError, match="embedding_layer"):
        to_onnx(classifier, tmp_path / "c.onnx", embedding_layer="nope")
    assert not (tmp_path / "c.onnx").exists()
    report = to_onnx(classifier, tmp_path / "c.onnx", embedding_layer="emb")
    face = Embedder.open(report.path)
    assert face.embedding_size == 8
    crops = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    want = unit(keras.Model(inputs, x)((crops.astype(np.float32) - 127.5) / 128.0))
    np.testing.assert_allclose(face.embed(crops), want, atol=2e-6)


# ------------------------------------------------------------------ runtime input checks
def test_embed_requires_the_input_range_it_was_built_for(face_model, onnx_pair):
    """The issue's case: floats in [0, 1] were taken as normalized (cosine 0.96 to the right
    embeddings, silently); now refused. 0-255 floats are pixels; normalized input needs
    `normalized=True` and must lie in the normalized range."""
    _, _, crops = face_model
    face = Embedder.open(onnx_pair["keras_facemargin"].path)
    want = face.embed(crops[:2])
    with pytest.raises(ValueError, match=r"\[0, 1\].*multiply by 255"):
        face.embed(crops[:2].astype(np.float32) / 255.0)
    with pytest.raises(ValueError, match="0-255 pixel values.*normalized=True"):
        face.embed(crops[:2].astype(np.float32) - 127.5)
    norm = get_normalization((face.metadata.mean, face.metadata.std))
    np.testing.assert_allclose(face.embed(norm.apply(crops[:2]), normalized=True), want,
                               atol=1e-6)
    with pytest.raises(ValueError, match="normalized `images` must lie within"):
        face.embed(crops[:2].astype(np.float32), normalized=True)
    with pytest.raises(ValueError, match="uint8"):
        face.embed(crops[:2], normalized=True)


def test_wrong_rank_or_channels_is_a_clear_error_everywhere(face_model, onnx_pair):
    """verify() with two 2-D grayscale images used to return one boolean per pixel row."""
    _, _, crops = face_model
    face = Embedder.open(onnx_pair["insightface"].path)
    gray = crops[0, :, :, 0]
    with pytest.raises(ValueError, match="grayscale"):
        face.verify(gray, gray, threshold=0.5)
    with pytest.raises(ValueError, match="grayscale"):
        face.similarity(crops[:1], gray)
    with pytest.raises(ValueError, match="grayscale or RGBA"):
        face.embed(np.concatenate([crops[:2], crops[:2, :, :, :1]], axis=-1))
    with pytest.raises(ValueError, match="channels-first"):
        face.embed(crops[:2].transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match=r"RGB images \(N, 112, 112, 3\) or float embeddings"):
        face.identify(np.zeros((2, 5), np.float32), crops[:2])
    assert face.verify(crops[:2], crops[:2], threshold=0.99).tolist() == [True, True]


# ------------------------------------------------------------------ runtime versions
def test_open_with_a_runtime_too_old_says_so(onnx_pair, monkeypatch):
    import onnxruntime

    path = onnx_pair["insightface"].path
    face = Embedder.open(path)
    assert face.metadata.min_runtime == {"onnxruntime": "1.12"}  # opset 17, IR 8
    monkeypatch.setattr(onnxruntime, "__version__", "1.11.1")
    with pytest.raises(RuntimeError, match=r"needs onnxruntime >= 1\.12; installed: "
                                           r"onnxruntime 1\.11\.1"):
        Embedder.open(path)
    monkeypatch.setattr(onnxruntime, "__version__", "1.12.0")
    Embedder.open(path)


def test_onnx_header_reader_agrees_with_onnx(onnx_pair):
    """The runtime reads IR version, opsets and metadata without onnx: compared with onnx."""
    import onnx

    from keras_facemargin.runtime._onnx import min_onnxruntime, read_file_header

    for report in onnx_pair.values():
        proto = onnx.load(report.path)
        header = read_file_header(report.path)
        assert header["ir_version"] == proto.ir_version == 8
        assert header["opsets"] == {o.domain: o.version for o in proto.opset_import}
        assert header["metadata"] == {p.key: p.value for p in proto.metadata_props}
    assert min_onnxruntime(13, 7) == "1.10" and min_onnxruntime(18, 8) == "1.14"
    assert min_onnxruntime(30, 12) is None


# ------------------------------------------------------------------ one preprocessing
def test_preprocessing_conventions_closed_form():
    """(x - 127.5) / 128 maps 0 and 255 to -+255/256; (x - 127.5) / 127.5 to -+1."""
    pixels = np.array([0, 127.5, 255], np.float32)
    np.testing.assert_array_equal(KERAS_FACEMARGIN.apply(pixels), [-255 / 256, 0, 255 / 256])
    np.testing.assert_array_equal(ARCFACE_TORCH.apply(pixels), [-1, 0, 1])
    np.testing.assert_allclose(ARCFACE_TORCH.invert(ARCFACE_TORCH.apply(pixels)), pixels)
    assert get_normalization(None) is KERAS_FACEMARGIN
    assert get_normalization((127.5, 127.5)) is ARCFACE_TORCH
    assert get_normalization((0, 1)).name == "custom"
    for bad in ("mxnet", (1, 0), "x"):
        with pytest.raises(ValueError, match="normalization|std"):
            get_normalization(bad)


def test_data_pipeline_uses_the_named_normalization():
    from keras_facemargin.data import standardize

    pixels = np.array([0, 255], np.uint8)
    assert standardize(pixels).tolist() == [-255 / 256, 255 / 256]
    assert standardize(pixels, "arcface_torch").tolist() == [-1.0, 1.0]


# ------------------------------------------------------------------ TensorFlow-free runtime
IMPORT_CHILD = r"""
import json, sys, time
start = time.perf_counter()
import keras_facemargin.runtime
from keras_facemargin.runtime import Embedder
import keras_facemargin.preprocessing
elapsed = time.perf_counter() - start
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras",
                                                             "tf2onnx", "jax", "torch"))
print(json.dumps({"seconds": elapsed, "heavy": heavy}))
"""


def test_runtime_import_loads_no_tensorflow_or_keras_even_when_installed():
    """In a fresh process on this machine (TensorFlow and Keras installed): importing the
    runtime loads neither, and takes well under a second (measured 0.06-0.2 s on 2 cores)."""
    import importlib.util

    assert importlib.util.find_spec("tensorflow") and importlib.util.find_spec("keras")
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-c", IMPORT_CHILD], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["seconds"] < 1.0, result


LOAD_CHILD = r"""
import sys
import keras_facemargin
assert "keras" not in sys.modules
import keras
model = keras.models.load_model(sys.argv[1])
print(type(model.layers[-1]).__name__)
"""


def test_package_import_still_registers_classes_for_load_model(tmp_path):
    """`import keras_facemargin` then `import keras`: load_model finds the heads (the import
    hook registers them once Keras is loaded)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, kf.ArcMarginLayer(3)(keras.layers.Dense(4)(inputs)))
    model.save(tmp_path / "m.keras")
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", LOAD_CHILD, str(tmp_path / "m.keras")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "ArcMarginLayer"


def test_tflite_file_needing_a_newer_tflite_runtime_says_so(tmp_path, monkeypatch):
    """The issue's tflite-runtime 2.14 case: a dynamic-range file (FULLY_CONNECTED v12) needs
    2.17, which the converter writes in the file's `min_runtime_version` entry; Embedder.open
    with tflite-runtime 2.14 now refuses it by name. (LiteRT runs it; the tflite-runtime
    backend is simulated by handing LiteRT's interpreter in under its name.)"""
    import ai_edge_litert.interpreter as litert

    from keras_facemargin.export import to_tflite
    from keras_facemargin.runtime import _tflite

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Dense(16, name="emb")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, x)
    dynamic = to_tflite(model, tmp_path / "d.tflite", "dynamic", embedding_layer="emb").path
    plain = to_tflite(model, tmp_path / "f.tflite", embedding_layer="emb").path
    monkeypatch.setattr(_tflite, "interpreter_module", lambda: ("tflite_runtime", litert))
    monkeypatch.setattr(_tflite, "runtime_version", lambda name: "2.14.0")
    with pytest.raises(RuntimeError, match=r"needs tflite-runtime >= 2\.17(\.0)?; installed: "
                                           r"tflite-runtime 2\.14\.0"):
        Embedder.open(dynamic)
    assert Embedder.open(plain).backend == "tflite_runtime"  # float32: 1.8.0 is enough


def test_evaluation_uses_the_named_normalization():
    """embed_images / VerificationCallback standardize uint8 pixels with the model's
    normalization: through an identity network, 0 and 255 come out as -+1 (arcface_torch)
    and -+255/256 (default)."""
    from keras_facemargin.evaluation import VerificationCallback, embed_images

    net = keras.Sequential([keras.Input((1, 2, 1)), keras.layers.Flatten()])
    pixels = np.array([[[[0], [255]]]], np.uint8)
    assert embed_images(net, pixels)[0].tolist() == [[-255 / 256, 255 / 256]]
    assert embed_images(net, pixels, normalization="arcface_torch")[0].tolist() == [[-1, 1]]
    pairs = {"set": (np.zeros((2, 1, 2, 1), np.uint8), np.array([True]))}
    callback = VerificationCallback(pairs, net, normalization="arcface_torch", verbose=0)
    assert callback.get_config()["normalization"] == [127.5, 127.5]
