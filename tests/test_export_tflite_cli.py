"""`facemargin export --io-dtype ... --batch-size 1`: the TFLite device variants from the CLI."""

import json
import pathlib
import subprocess
import sys

import pytest

from keras_facemargin.runtime._tflite import read_metadata

from export_helpers import trained_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    import tensorflow as tf

    model, images, _ = trained_model(epochs=2)
    out = tmp_path_factory.mktemp("cli_tflite")
    model.save(out / "model.keras")
    calib = out / "calib"
    calib.mkdir()
    for i, image in enumerate(images[:60]):
        (calib / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    return out


def facemargin(*args):
    return subprocess.run([sys.executable, "-m", "keras_facemargin.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_export_cli_writes_a_uint8_batch_1_file(saved):
    from ai_edge_litert.interpreter import Interpreter

    path = saved / "edge.tflite"
    proc = facemargin("export", saved / "model.keras", "--tflite", path, "--quantize", "int8",
                      "--calibration", saved / "calib", "--io-dtype", "uint8", "--batch-size", 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = [line for line in proc.stdout.splitlines() if line.startswith("| tflite")]
    assert float(row.split("|")[4]) >= 0.99
    interpreter = Interpreter(model_path=str(path))
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"].__name__ == "uint8" and out["dtype"].__name__ == "uint8"
    assert list(inp["shape_signature"]) == [1, 32, 32, 3]
    assert inp["quantization"] == (1.0, 0)
    meta = json.loads(read_metadata(pathlib.Path(path).read_bytes())["keras_facemargin"])
    assert meta["input_type"] == "uint8" and meta["batch_size"] == 1


@pytest.mark.slow
def test_export_cli_refuses_bad_device_flags(saved):
    """Each bad combination exits 2 naming the flag, before loading the model (writes
    nothing)."""
    path = saved / "bad.tflite"
    for args, message in [(["--io-dtype", "uint8"], "needs --quantize int8"),
                          (["--quantize", "float16", "--io-dtype", "int8"],
                           "needs --quantize int8"),
                          (["--int8-io", "--io-dtype", "uint8", "--quantize", "int8"],
                           "--int8-io"),
                          (["--batch-size", "4"], "--batch-size")]:
        proc = facemargin("export", saved / "model.keras", "--tflite", path, *args)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr[-2000:])
    assert not path.exists()
