"""MediaPipe Tasks' ImageEmbedder runs the TFLite files we write and gives Keras's embeddings.

mediapipe pins its own numpy / protobuf, so it runs in a separate environment
(``python -m venv /work/venvs/mediapipe && /work/venvs/mediapipe/bin/pip install mediapipe``),
through ``tests/scripts/mediapipe_check.py`` in a subprocess. ``FACEMARGIN_MEDIAPIPE_PYTHON``
points at that environment's python (default ``/work/venvs/mediapipe/bin/python``); without it
the test is skipped, saying so.
"""

import json
import os
import pathlib
import subprocess

import keras
import numpy as np
import pytest

from keras_facemargin.export import to_tflite

from export_helpers import trained_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SCRIPT = pathlib.Path(__file__).resolve().parent / "scripts" / "mediapipe_check.py"
PYTHON = os.environ.get("FACEMARGIN_MEDIAPIPE_PYTHON", "/work/venvs/mediapipe/bin/python")
#: file -> (to_tflite arguments, min cosine to Keras that MediaPipe's embeddings must reach)
FILES = {
    "float32": ({}, 0.9999),
    "float16": ({"quantization": "float16"}, 0.999),
    "dynamic": ({"quantization": "dynamic"}, 0.99),
    "int8": ({"quantization": "int8"}, 0.99),
    "int8_uint8": ({"quantization": "int8", "io_dtype": "uint8"}, 0.99),
    "int8_uint8_b1": ({"quantization": "int8", "io_dtype": "uint8", "batch_size": 1}, 0.99),
}


@pytest.fixture(scope="module")
def mediapipe_python():
    if not os.path.exists(PYTHON):
        pytest.skip(f"no mediapipe environment at {PYTHON}: create it with `python -m venv "
                    "/work/venvs/mediapipe && /work/venvs/mediapipe/bin/pip install mediapipe` "
                    "or set FACEMARGIN_MEDIAPIPE_PYTHON")
    return PYTHON


def run_check(python, models, images_path, out, tmp_path):
    env = dict(os.environ, GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("PYTHONPATH", None)  # nothing of this repository in the mediapipe environment
    proc = subprocess.run([python, str(SCRIPT), "--images", str(images_path), "--out",
                           str(out), *map(str, models)], capture_output=True, text=True,
                          timeout=600, env=env, cwd=tmp_path)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, {line["model"]: line for line in lines}


def test_mediapipe_image_embedder_matches_keras(mediapipe_python, tmp_path):
    """fp32, fp16, dynamic, int8 (float input) and int8 with uint8 input/output (dynamic batch
    and batch 1) through ImageEmbedder with default options (no L2 normalization, no
    quantization of the result); images of the model's size, uint8 RGB. Compared, by cosine,
    with the Keras embedding model on images never used by the export. MediaPipe refuses a
    float input without NormalizationOptions in TFLITE_METADATA, so the float files only run
    because the metadata is there and right."""
    model, images, _ = trained_model()
    calib, verify, held = images[:100], images[100:160], images[200:240]
    paths = []
    for name, (kwargs, _) in FILES.items():
        extra = {"representative_data": calib} if kwargs.get("quantization") == "int8" else {}
        report = to_tflite(model, tmp_path / f"{name}.tflite", verification_data=verify,
                           **kwargs, **extra)
        paths.append(report.path)
    images_path = tmp_path / "held.npy"
    np.save(images_path, held)
    proc, lines = run_check(mediapipe_python, paths, images_path, tmp_path / "mp.npz", tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = np.load(tmp_path / "mp.npz")
    body = keras.Model(model.inputs, model.get_layer("embedding").output)
    want = np.asarray(body((held.astype(np.float32) - 127.5) / 128.0, training=False),
                      np.float64)
    for i, (name, (_, threshold)) in enumerate(FILES.items()):
        emb = got[f"embedding_{i}"].astype(np.float64)
        assert emb.shape == want.shape, (name, emb.shape)
        cos = np.sum(emb * want, 1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(want, axis=1)
        assert cos.min() >= threshold, (name, cos.min(), lines[paths[i]])


def test_mediapipe_refuses_int8_input_as_documented(mediapipe_python, tmp_path):
    """int8 input/output (io_dtype="int8") is for NPU / NNAPI delegates; MediaPipe accepts only
    uint8 or float32 image tensors (docs/export.md says to use io_dtype="uint8" there). If a
    MediaPipe release starts accepting it, this test fails and the docs need updating."""
    model, images, _ = trained_model(epochs=1)
    report = to_tflite(model, tmp_path / "int8_int8.tflite", "int8", images[:60],
                       io_dtype="int8", verification_data=images[60:80])
    images_path = tmp_path / "held.npy"
    np.save(images_path, images[80:82])
    proc, lines = run_check(mediapipe_python, [report.path], images_path, tmp_path / "mp.npz",
                            tmp_path)
    assert proc.returncode == 1
    assert "uint8/float32, got INT8" in lines[report.path]["error"]
