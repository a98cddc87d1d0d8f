"""TFLite files: the standard TFLITE_METADATA buffer, integer-input variants on the pixel grid,
a fixed batch of 1, and the runtime versions a file needs (issue 14, TFLite side)."""

import json
import os
import pathlib
import subprocess

import keras
import numpy as np
import pytest

from keras_facemargin.export import tflite_metadata, to_tflite
from keras_facemargin.export._tflite_metadata_schema import metadata_schema_generated as schema
from keras_facemargin.export.tflite import convert, min_runtime, op_names
from keras_facemargin.runtime import Embedder
from keras_facemargin.runtime._tflite import read_metadata

from export_helpers import trained_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

#: the normalization the test model was trained with (export_helpers.trained_model), typed in
#: here, not read from the package
TRAIN_MEAN, TRAIN_STD = 127.5, 128.0
VARIANTS = {
    "float32": {},
    "float16": {"quantization": "float16"},
    "dynamic": {"quantization": "dynamic"},
    "int8": {"quantization": "int8"},
    "int8_uint8": {"quantization": "int8", "io_dtype": "uint8"},
    "int8_int8": {"quantization": "int8", "io_dtype": "int8"},
    "int8_uint8_b1": {"quantization": "int8", "io_dtype": "uint8", "batch_size": 1},
    "float32_b1": {"batch_size": 1},
}
THRESHOLDS = {None: 0.99999, "float16": 0.999, "dynamic": 0.99, "int8": 0.99}


@pytest.fixture(scope="module")
def trained():
    return trained_model()


@pytest.fixture(scope="module")
def files(trained, tmp_path_factory):
    model, images, _ = trained
    out = tmp_path_factory.mktemp("tflite_variants")
    calib, held = images[:100], images[100:200]
    reports = {}
    for name, kwargs in VARIANTS.items():
        extra = {"representative_data": calib} if kwargs.get("quantization") == "int8" else {}
        reports[name] = to_tflite(model, out / f"{name}.tflite", verification_data=held,
                                  **kwargs, **extra)
    return reports


def keras_embeddings(model, pixels):
    body = keras.Model(model.inputs, model.get_layer("embedding").output)
    x = (pixels.astype(np.float32) - TRAIN_MEAN) / TRAIN_STD
    e = np.asarray(body(x, training=False), np.float64)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def min_cosine(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.min(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


def standard_metadata(path):
    entries = read_metadata(pathlib.Path(path).read_bytes())
    assert tflite_metadata.NAME == "TFLITE_METADATA" and "TFLITE_METADATA" in entries
    raw = bytes(entries["TFLITE_METADATA"])
    assert raw[4:8] == b"M001"  # the schema's file identifier
    assert schema.ModelMetadata.ModelMetadataBufferHasIdentifier(raw, 0)
    return schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAs(raw, 0))


def run_with_standard_metadata(path, pixels, meta):
    """Feed uint8 pixels from the standard metadata only: input value = (pixel - mean) / std,
    quantized with the input tensor's scale and zero point when the tensor is an integer;
    dequantize an integer output. One image a call."""
    from ai_edge_litert.interpreter import Interpreter

    tensor = meta.subgraphMetadata[0].inputTensorMetadata[0]
    (unit,) = tensor.processUnits
    mean = np.asarray(unit.options.mean, np.float64)
    std = np.asarray(unit.options.std, np.float64)
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    result = []
    for image in pixels:
        x = (image.astype(np.float64) - mean) / std
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            x = np.round(x / scale + zero)
        interpreter.set_tensor(inp["index"], x[None].astype(inp["dtype"]))
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])[0].astype(np.float64)
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y - zero) * scale
        result.append(y)
    return np.stack(result)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_standard_metadata_states_the_real_preprocessing(trained, files, name):
    """The TFLITE_METADATA buffer, parsed with the reader generated from the official schema:
    an RGB image input of the model's size, NormalizationOptions per channel, tensor metadata
    for the image and the embedding. The normalization must be the truth: a client that feeds
    pixels as the metadata says, knowing nothing else, gets Keras's embeddings (threshold of
    the quantization)."""
    model, images, _ = trained
    meta = standard_metadata(files[name].path)
    assert meta.minParserVersion == b"1.0.0" and meta.name and meta.description
    assert b"keras_facemargin" in meta.description and meta.version
    (subgraph,) = meta.subgraphMetadata
    (tensor_in,), (tensor_out,) = subgraph.inputTensorMetadata, subgraph.outputTensorMetadata
    assert tensor_in.name == b"image" and tensor_out.name == b"embedding"
    content = tensor_in.content
    assert content.contentPropertiesType == schema.ContentProperties.ImageProperties
    assert content.contentProperties.colorSpace == schema.ColorSpaceType.RGB
    size = content.contentProperties.defaultSize
    assert (size.height, size.width) == (32, 32)
    assert tensor_out.content.contentPropertiesType == schema.ContentProperties.FeatureProperties
    (unit,) = tensor_in.processUnits
    assert unit.optionsType == schema.ProcessUnitOptions.NormalizationOptions
    io_dtype = VARIANTS[name].get("io_dtype", "float32")
    # float input: the training normalization; integer input: the (dequantized) input value
    # is the pixel itself (the normalization runs inside the graph)
    want = {"float32": (TRAIN_MEAN, TRAIN_STD), "uint8": (0.0, 1.0), "int8": (0.0, 1.0)}
    mean, std = want[io_dtype]
    np.testing.assert_array_equal(unit.options.mean, [mean] * 3)
    np.testing.assert_array_equal(unit.options.std, [std] * 3)
    np.testing.assert_allclose(tensor_in.stats.min, [(0 - mean) / std] * 3, rtol=1e-6)
    np.testing.assert_allclose(tensor_in.stats.max, [(255 - mean) / std] * 3, rtol=1e-6)
    held = images[200:230]  # never used by the export
    got = run_with_standard_metadata(files[name].path, held, meta)
    threshold = THRESHOLDS[VARIANTS[name].get("quantization")]
    assert min_cosine(got, keras_embeddings(model, held)) >= threshold


@pytest.mark.parametrize("name", ["float32", "int8_uint8"])
def test_metadata_changes_no_output_and_the_package_entry_stays(trained, files, name):
    """LiteRT gives bit-identical outputs for the written file and the converter's own output
    (no metadata added), and Embedder still reads the package's JSON entry."""
    from ai_edge_litert.interpreter import Interpreter

    from keras_facemargin.export import strip_head
    from keras_facemargin.export.tflite import PIXEL_RANGE, _pixel_model

    model, images, _ = trained
    kwargs = VARIANTS[name]
    net = strip_head(model, l2_normalize=kwargs.get("quantization") != "int8")
    if name == "float32":
        plain = convert(net)
        x = (images[200:208].astype(np.float32) - TRAIN_MEAN) / TRAIN_STD
    else:  # the same calibration images (all 100: verification_data is given) and recipe
        pixels = images[:100].astype(np.float32)
        plain = convert(_pixel_model(net, TRAIN_MEAN, TRAIN_STD), "int8", pixels,
                        io_dtype="uint8", input_range=PIXEL_RANGE)
        x = images[200:208]
    outputs = []
    for content in (plain, pathlib.Path(files[name].path).read_bytes()):
        interpreter = Interpreter(model_content=content)
        inp = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(inp["index"], list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert "TFLITE_METADATA" not in read_metadata(plain)
    embedder = Embedder.open(files[name].path)
    assert embedder.metadata.embedding_size == 32 and embedder.metadata.input_shape == (32, 32, 3)
    stored = json.loads(read_metadata(pathlib.Path(files[name].path).read_bytes())
                        ["keras_facemargin"])
    assert stored["quantization"] == kwargs.get("quantization")


@pytest.mark.parametrize("name,dtype,zero_point", [("int8_uint8", np.uint8, 0),
                                                   ("int8_int8", np.int8, -128),
                                                   ("int8_uint8_b1", np.uint8, 0)])
def test_integer_input_holds_the_pixels_exactly(trained, files, name, dtype, zero_point):
    """uint8 input: scale 1, zero point 0, so the tensor value of pixel p is p itself; int8:
    p - 128 with zero point -128. Every grey level 0..255 is a grid point (the old int8_io
    input, scale 1/128 zero point -1 in the normalized domain, put 127.5 between two levels).
    Fed raw pixels with no host normalization, the file matches Keras (>= 0.99)."""
    from ai_edge_litert.interpreter import Interpreter

    model, images, _ = trained
    interpreter = Interpreter(model_path=files[name].path)
    inp = interpreter.get_input_details()[0]
    scale, zero = inp["quantization"]
    assert inp["dtype"] == dtype and scale == 1.0 and zero == zero_point
    levels = np.arange(256)
    np.testing.assert_array_equal((np.round(levels / scale + zero) - zero) * scale, levels)
    out = interpreter.get_output_details()[0]
    assert out["dtype"] == dtype  # integer output too (Edge TPU, NNAPI)
    meta = json.loads(read_metadata(pathlib.Path(files[name].path).read_bytes())
                      ["keras_facemargin"])
    assert (meta["mean"], meta["std"]) == (0.0, 1.0)
    assert meta["normalization_in_graph"] == {"mean": TRAIN_MEAN, "std": TRAIN_STD}
    assert meta["input_type"] == np.dtype(dtype).name
    held = images[200:230]
    interpreter.allocate_tensors()
    got = []
    for image in held:
        interpreter.set_tensor(inp["index"], (image.astype(np.int32) + zero).astype(dtype)[None])
        interpreter.invoke()
        got.append((interpreter.get_tensor(out["index"])[0].astype(np.float64)
                    - out["quantization"][1]) * out["quantization"][0])
    assert min_cosine(np.stack(got), keras_embeddings(model, held)) >= 0.99
    # and through the runtime, from uint8 pixels
    assert min_cosine(Embedder.open(files[name].path).embed(held, batch_size=1),
                      keras_embeddings(model, held)) >= 0.99


@pytest.mark.parametrize("name", ["int8_uint8_b1", "float32_b1"])
def test_batch_size_1_fixes_the_input_shape(files, name):
    from ai_edge_litert.interpreter import Interpreter

    inp = Interpreter(model_path=files[name].path).get_input_details()[0]
    assert list(inp["shape_signature"]) == [1, 32, 32, 3] and list(inp["shape"]) == [1, 32, 32, 3]
    # no shape arithmetic left for a dynamic batch (what fixed-shape compilers choke on)
    assert not {"SHAPE", "PACK", "STRIDED_SLICE"} & set(op_names(
        pathlib.Path(files[name].path).read_bytes()))
    dynamic = Interpreter(model_path=files[name.replace("_b1", "")].path).get_input_details()[0]
    assert list(dynamic["shape_signature"]) == [-1, 32, 32, 3]


def op_versions(path):
    from tensorflow.lite.python import schema_py_generated as fb
    from tensorflow.lite.tools import flatbuffer_utils

    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(pathlib.Path(path).read_bytes()))
    return {(names[max(c.builtinCode, c.deprecatedBuiltinCode)], c.version)
            for c in model.operatorCodes}


def test_min_runtime_is_recorded_and_follows_the_op_versions(files):
    """Every file records {"litert", "tflite_runtime"} versions. The dynamic-range file uses
    FULLY_CONNECTED version 12 (per-channel int8 weights with float activations), which
    TensorFlow Lite runtimes before 2.17 lack: it must say tflite_runtime 2.17; files without
    it stay loadable by older runtimes (< 2.17)."""
    for name, report in files.items():
        stored = json.loads(read_metadata(pathlib.Path(report.path).read_bytes())
                            ["keras_facemargin"])
        needs = stored["min_runtime"]
        assert set(needs) == {"litert", "tflite_runtime"}, name
        assert needs == min_runtime(pathlib.Path(report.path).read_bytes())
        major_minor = tuple(int(p) for p in needs["tflite_runtime"].split("."))
        fc = [v for op, v in op_versions(report.path) if op == "FULLY_CONNECTED"]
        if max(fc, default=0) >= 12:
            assert major_minor >= (2, 17), (name, needs)
        else:
            assert major_minor < (2, 17), (name, needs)
        assert stored["batch_size"] == VARIANTS[name].get("batch_size")
    dynamic = json.loads(read_metadata(pathlib.Path(files["dynamic"].path).read_bytes())
                         ["keras_facemargin"])
    assert dynamic["min_runtime"]["tflite_runtime"] == "2.17"


LOAD = """
import json, sys
import numpy as np
try:
    from tflite_runtime.interpreter import Interpreter
    import tflite_runtime as rt
except ImportError:
    from ai_edge_litert.interpreter import Interpreter
    import ai_edge_litert as rt
out = {"version": getattr(rt, "__version__", "?")}
for path in sys.argv[1:]:
    try:
        it = Interpreter(model_path=path)
        it.allocate_tensors()
        it.invoke()
        out[path] = "ok"
    except Exception as err:
        out[path] = str(err).splitlines()[0][:200]
print(json.dumps(out))
"""


@pytest.mark.parametrize("env_var,default,key", [
    ("FACEMARGIN_TFLITE_RUNTIME_PYTHON", "/work/venvs/tflite_runtime/bin/python",
     "tflite_runtime"),
    ("FACEMARGIN_OLD_LITERT_PYTHON", "/work/venvs/litert_old/bin/python", "litert")])
def test_old_runtimes_load_exactly_the_files_recorded_for_them(files, env_var, default, key):
    """The recorded minimum, checked against a real old runtime in its own environment
    (tflite-runtime 2.14: `pip install tflite-runtime==2.14.0 "numpy<2"`; ai-edge-litert
    1.0.1: `pip install ai-edge-litert==1.0.1 "numpy<2"`): a file loads there iff its
    min_runtime is at most that version."""
    python = os.environ.get(env_var, default)
    if not os.path.exists(python):
        pytest.skip(f"no old-runtime environment at {python} (set {env_var})")
    paths = [report.path for report in files.values()]
    proc = subprocess.run([python, "-c", LOAD, *paths], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    version = tuple(int(p) for p in result["version"].split(".")[:2])
    loaded = []
    for path in paths:
        needs = json.loads(read_metadata(pathlib.Path(path).read_bytes())
                           ["keras_facemargin"])["min_runtime"][key]
        ok = tuple(int(p) for p in needs.split(".")) <= version
        assert (result[path] == "ok") == ok, (path, needs, result[path])
        loaded.append(ok)
    if key == "tflite_runtime":  # the case: 2.14 refuses the dynamic-range file
        assert not all(loaded) and any(loaded)


def test_bad_io_dtype_and_batch_size_are_named(trained, tmp_path):
    model, images, _ = trained
    with pytest.raises(ValueError, match="io_dtype"):
        to_tflite(model, tmp_path / "a.tflite", io_dtype="uint8")  # float32 weights
    with pytest.raises(ValueError, match="io_dtype"):
        to_tflite(model, tmp_path / "a.tflite", "int8", images[:20], io_dtype="int16")
    with pytest.raises(ValueError, match="batch_size"):
        to_tflite(model, tmp_path / "a.tflite", batch_size=4)
    with pytest.raises(ValueError, match="int8_io"):
        to_tflite(model, tmp_path / "a.tflite", "int8", images[:20], int8_io=True,
                  io_dtype="uint8")
    assert not list(tmp_path.iterdir())
