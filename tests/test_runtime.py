"""The TF-free runtime: Embedder on exported files, in a process where TF and Keras cannot load."""

import json
import subprocess
import sys

import numpy as np
import pytest

from keras_facemargin.export import to_onnx, to_tflite
from keras_facemargin.runtime import Embedder

from export_helpers import trained_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CHILD = r"""
import json, sys
sys.modules["tensorflow"] = None   # any import of them now raises ImportError
sys.modules["keras"] = None
import numpy as np
from keras_facemargin.runtime import Embedder, available_backends
args = json.load(open(sys.argv[1]))
images = np.load(args["images"])
out = {"backends": available_backends()}
for path in args["models"]:
    face = Embedder.open(path)
    e = face.embed(images)
    index, score = face.identify(images[:4], images[4:12], top_k=2)
    out[path] = {"embed": e.tolist(), "similarity": face.similarity(images[:6], images[6:12]).tolist(),
                 "verify": face.verify(images[:6], images[6:12], 0.5).tolist(),
                 "identify": [index.tolist(), score.tolist()], "flip": face.embed(images, flip=True).tolist(),
                 "tf_loaded": "tensorflow" in sys.modules and sys.modules["tensorflow"] is not None}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import keras

    model, images, _ = trained_model()
    out = tmp_path_factory.mktemp("runtime")
    paths = [str(out / "face.tflite"), str(out / "face.onnx"), str(out / "insightface.onnx")]
    to_tflite(model, paths[0], verification_data=images[:32])
    to_onnx(model, paths[1], verification_data=images[:32], layout="nhwc")
    to_onnx(model, paths[2], verification_data=images[:32])  # insightface: NCHW, raw output
    body = keras.Model(model.inputs, model.get_layer("embedding").output)
    return paths, images[32:48], body


def normalized(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_runtime_runs_without_tensorflow_or_keras(exported, tmp_path):
    paths, images, body = exported
    np.save(tmp_path / "images.npy", images)
    (tmp_path / "args.json").write_text(json.dumps({"images": str(tmp_path / "images.npy"),
                                                    "models": paths}))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "args.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"litert", "onnxruntime"} <= set(result["backends"])
    x = (images.astype(np.float32) - 127.5) / 128.0
    raw, raw_mirror = np.asarray(body(x)), np.asarray(body(x[:, :, ::-1]))
    want = normalized(raw)
    # host flip of a model that normalizes in-graph adds the two unit vectors; of a file with
    # a raw output (insightface's convention) the raw embeddings, as insightface does
    want_flip = {paths[0]: normalized(want + normalized(raw_mirror)),
                 paths[1]: normalized(want + normalized(raw_mirror)),
                 paths[2]: normalized(raw + raw_mirror)}
    sim = np.sum(want[:6] * want[6:12], axis=1)
    scores = want[:4] @ want[4:12].T
    for path in paths:
        got = result[path]
        assert not got["tf_loaded"]
        np.testing.assert_allclose(got["embed"], want, atol=1e-5)
        np.testing.assert_allclose(got["flip"], want_flip[path], atol=1e-5)
        np.testing.assert_allclose(got["similarity"], sim, atol=1e-5)
        assert got["verify"] == (sim >= 0.5).tolist()
        np.testing.assert_array_equal(got["identify"][0], np.argsort(-scores, axis=1)[:, :2])
        np.testing.assert_allclose(got["identify"][1], -np.sort(-scores, axis=1)[:, :2],
                                   atol=1e-5)


def test_runtime_bad_files(exported, tmp_path):
    paths, _, _ = exported
    with pytest.raises(FileNotFoundError, match="path"):
        Embedder.open(tmp_path / "missing.tflite")
    data = open(paths[0], "rb").read()
    (tmp_path / "cut.tflite").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="TFLite"):
        Embedder.open(tmp_path / "cut.tflite")
    (tmp_path / "empty.tflite").write_bytes(b"")
    with pytest.raises(ValueError, match="TFLite model: the file is empty"):
        Embedder.open(tmp_path / "empty.tflite")
    (tmp_path / "text.tflite").write_bytes(b"hello, not a model" * 10)
    with pytest.raises(ValueError, match="TFLite"):
        Embedder.open(tmp_path / "text.tflite")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01junk" * 50)
    with pytest.raises(ValueError, match="ONNX"):
        Embedder.open(tmp_path / "junk.onnx")
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match=".tflite or .onnx"):
        Embedder.open(tmp_path / "model.pt")


def test_runtime_bad_images(exported):
    paths, images, _ = exported
    face = Embedder.open(paths[0])
    with pytest.raises(ValueError, match=r"\(N, 32, 32, 3\)"):
        face.embed(np.zeros((2, 112, 112, 3), np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        face.embed(np.zeros((2, 32, 32, 3), np.int64))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        face.embed(images.astype(np.float32) / 255.0)  # [0, 1] floats: refused, not guessed
    np.testing.assert_allclose(face.embed(images.astype(np.float32)), face.embed(images),
                               atol=1e-6)  # 0-255 floats are pixels
    with pytest.raises(ValueError, match="threshold"):
        face.verify(images[:2], images[2:4], threshold=2.0)
    assert face.embed(images[0]).shape == (1, 32)  # one image is a batch of one


def test_runtime_model_without_metadata_and_bad_batch_size(tmp_path):
    """A .tflite written by the plain converter (no keras_facemargin entry): the runtime warns,
    reads D from the output tensor, normalizes pixels as (x - 127.5) / 128 and the output to
    unit length on the host, as the warning says (checked against Keras + numpy)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(6)(keras.layers.Flatten()(inputs)))
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    serve = tf.function(lambda x: model(x), input_signature=[tf.TensorSpec([None, 8, 8, 3])])
    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    data = tf.lite.TFLiteConverter.from_concrete_functions([frozen]).convert()
    (tmp_path / "plain.tflite").write_bytes(data)
    with pytest.warns(UserWarning, match="no 'keras_facemargin' metadata"):
        face = Embedder.open(tmp_path / "plain.tflite")
    assert face.embedding_size == 6
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3)).astype(np.uint8)
    want = normalized(np.asarray(model((images.astype(np.float32) - 127.5) / 128.0)))
    np.testing.assert_allclose(face.embed(images, batch_size=2), want, atol=1e-5)
    assert face.embed(images[:0]).shape == (0, 6)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            face.embed(images, batch_size=bad)


def test_metadata_reader_follows_external_buffers(exported, tmp_path):
    """Models over 2 GB keep buffers outside the flatbuffer: ``Buffer.offset/size`` point into
    the file. Written with TensorFlow's own flatbuffer schema (independent of the reader): the
    JSON appended after the flatbuffer, the metadata entry pointing at an offset/size buffer."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    from keras_facemargin.runtime._tflite import FlatbufferError, read_metadata

    paths, _, _ = exported
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(open(paths[0], "rb").read()))
    payload = json.dumps({"embedding_size": 32, "note": "external"}).encode()
    buffer = schema.BufferT()
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = "external_entry", len(model.buffers) - 1
    model.metadata.append(entry)
    # the flatbuffer's length is known once written with non-zero (hence stored) fields
    buffer.offset, buffer.size = 1, len(payload)
    buffer.offset = len(flatbuffer_utils.convert_object_to_bytearray(model))
    head = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    assert buffer.offset == len(head)
    data = head + payload
    entries = read_metadata(data)
    assert entries["external_entry"] == payload
    assert json.loads(entries["keras_facemargin"])["embedding_size"] == 32
    with pytest.raises(FlatbufferError, match="past the end"):
        read_metadata(data[:-5])
