"""`facemargin export` and `facemargin eval` on exported files."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from export_helpers import trained_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    import tensorflow as tf

    model, images, labels = trained_model()
    out = tmp_path_factory.mktemp("cli")
    model.save(out / "model.keras")
    calib = out / "calib" / "person"
    calib.mkdir(parents=True)
    for i, image in enumerate(images[:40]):
        (calib / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    (calib / "broken.jpg").write_bytes(b"not an image")
    return out, images, labels


def facemargin(*args):
    """The command in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "keras_facemargin.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def cli(capsys, *args):
    """The same command in this process (no interpreter start, no second TensorFlow import):
    ``(exit status, stdout, stderr)``."""
    from keras_facemargin.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_export_cli_writes_verified_files_and_prints_the_table(saved):
    out, _, _ = saved
    proc = facemargin("export", out / "model.keras", "--tflite", out / "face.tflite", "--onnx",
                      out / "face.onnx", "--quantize", "int8", "--calibration", out / "calib")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| tflite")
            or line.startswith("| onnx")]
    assert len(rows) == 2
    for row in rows:
        cosine = float(row.split("|")[4])
        assert cosine >= 0.99
    assert "skipped 1 unreadable" in proc.stderr
    assert (out / "face.tflite").exists() and (out / "face.onnx").exists()


def test_export_cli_bad_input_exits_non_zero_and_writes_nothing(saved, capsys):
    out, _, _ = saved
    assert cli(capsys, "export", out / "model.keras")[0] == 2
    assert cli(capsys, "export", out / "missing.keras", "--tflite", out / "x.tflite")[0] == 2
    code, _, err = cli(capsys, "export", out / "model.keras", "--tflite", out / "x.tflite",
                       "--quantize", "int8")
    assert code == 2 and "calibration" in err
    assert not (out / "x.tflite").exists()


def test_eval_cli_runs_on_a_tflite_model(saved, tmp_path, capsys):
    """facemargin eval --model face.tflite on a .bin pair set (insightface format)."""
    import tensorflow as tf

    out, images, labels = saved
    code, _, err = cli(capsys, "export", out / "model.keras", "--tflite", tmp_path / "f.tflite")
    assert code == 0, err[-2000:]
    rng = np.random.default_rng(0)
    pairs, issame = [], []
    for _ in range(60):
        i, j = rng.integers(0, len(images), 2)
        pairs += [tf.io.encode_png(images[i]).numpy(), tf.io.encode_png(images[j]).numpy()]
        issame.append(bool(labels[i] == labels[j]))
    with open(tmp_path / "set.bin", "wb") as f:
        pickle.dump((pairs, issame), f)
    code, got_out, err = cli(capsys, "eval", "--model", tmp_path / "f.tflite", "--bin",
                             tmp_path / "set.bin", "--folds", "5", "--no-flip")
    assert code == 0, err[-3000:]
    assert "| set |" in got_out and os.path.exists(tmp_path / "f.tflite")
    # the same evaluation through Keras on the .keras model: a float32 export (cosine >=
    # 0.99999) must give the same AUC and, up to ties at a fold threshold, the same accuracy.
    # Without the flip test: with it, eval adds the exported model's unit-length outputs but
    # the .keras model's raw embeddings (insightface's way), a slightly different score;
    # export with flip_fusion=True to ship insightface's flip test.
    code, want_out, err = cli(capsys, "eval", "--model", out / "model.keras", "--bin",
                              tmp_path / "set.bin", "--folds", "5", "--no-flip")
    assert code == 0, err[-3000:]

    def row(text):  # the first data row, after the |---| separator
        lines = text.splitlines()
        line = lines[next(i for i, x in enumerate(lines) if x.startswith("|---")) + 1]
        return [float(v) for v in line.strip().strip("|").split("|")[1:]]

    got, want = row(got_out), row(want_out)
    assert got[0] == want[0] == 60  # pairs
    assert abs(got[1] - want[1]) <= 1.7  # accuracy (%, 2 decimals): at most one pair of 60
    assert abs(got[3] - want[3]) <= 1e-3  # AUC


def test_export_cli_failed_verification_exits_1_and_writes_nothing(saved, tmp_path, monkeypatch,
                                                                   capsys):
    """A verification that cannot pass (threshold above 1) exits 1 with nothing written;
    --force writes the file, warns, and still exits 1 (the check failed)."""
    from keras_facemargin.cli import main
    from keras_facemargin.export import verify as verify_module

    out, _, _ = saved
    monkeypatch.setitem(verify_module.THRESHOLDS, "float16", 1.0000001)
    target = tmp_path / "face.tflite"
    args = ["export", str(out / "model.keras"), "--tflite", str(target), "--quantize", "float16"]
    assert main(args) == 1
    assert "nothing written" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
    with pytest.warns(UserWarning, match="written anyway"):
        assert main([*args, "--force"]) == 1
    assert target.exists() and "| tflite | float16 |" in capsys.readouterr().out


def test_eval_embeds_a_functional_keras_model_up_to_the_head_input(saved):
    """facemargin eval on a functional .keras model embeds with the head's input (32-d), not
    the head's cosine output (10 classes): the same vectors as the embedding layer."""
    import keras

    from keras_facemargin.cli.eval import load_embedder

    out, images, _ = saved
    embed, size = load_embedder(str(out / "model.keras"))
    assert size == (32, 32)
    model = keras.models.load_model(out / "model.keras", compile=False)
    body = keras.Model(model.inputs, model.get_layer("embedding").output)
    want = np.asarray(body((images[:16].astype(np.float32) - 127.5) / 128.0, training=False))
    np.testing.assert_allclose(embed(images[:16]), want, rtol=1e-4, atol=1e-5)
