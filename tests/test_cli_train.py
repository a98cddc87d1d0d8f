"""``facemargin train`` on a tiny generated image folder (tiny backbone, 32x32)."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_facemargin.cli import main
from keras_facemargin.cli.train import ThroughputCallback


def _folder(root, people=4, per_person=8, size=32):
    rng = np.random.default_rng(0)
    for p in range(people):
        os.makedirs(root / f"id{p}")
        base = rng.integers(0, 255, (size, size, 3))
        for i in range(per_person):
            img = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype("uint8")
            (root / f"id{p}" / f"{i}.png").write_bytes(tf.io.encode_png(img).numpy())
    return root


def _args(data, ckpt, *extra):
    return ["train", "--data", str(data), "--backbone", "tiny", "--image-size", "32",
            "--embedding-size", "16", "--batch-size", "8", "--epochs", "2", "--lr", "0.05",
            "--checkpoint-dir", str(ckpt), "--verbose", "2", *extra]


@pytest.mark.parametrize("extra", [
    (), ("--jit-compile",),
    pytest.param(("--sample-rate", "0.5", "--head", "adaface", "--jit-compile"), marks=pytest.mark.slow),
    pytest.param(("--strategy", "mirrored", "--jit-compile"), marks=pytest.mark.slow)])
def test_train_folder_summary_and_checkpoint(tmp_path, capsys, extra):
    data = _folder(tmp_path / "faces", people=16 if "--sample-rate" in extra else 4)
    ckpt = tmp_path / "ckpt"
    assert main(_args(data, ckpt, *extra)) == 0
    out = capsys.readouterr().out
    assert "images_per_s" in out  # in the per-epoch log line
    row = [line for line in out.splitlines() if line.startswith("| 2 |")]
    assert row, out
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    assert np.isfinite(float(cells[1])) and float(cells[2]) > 0
    assert cells[4] == str(ckpt / "final.keras")
    model = keras.models.load_model(ckpt / "final.keras")
    assert model.count_params() > 0
    assert os.listdir(ckpt / "backup")  # per-epoch checkpoint kept


def test_final_model_loads_in_a_fresh_process(tmp_path):
    """A user's new Python session: `import keras_facemargin` is all load_model needs for the
    model `facemargin train` writes, its optimizer (RowSparseSGD in SkipNonFiniteSteps)
    included. (It failed while RowSparseSGD was registered only once the CLI imported it.)"""
    import subprocess
    import sys

    data, ckpt = _folder(tmp_path / "faces"), tmp_path / "ckpt"
    assert main(_args(data, ckpt, "--epochs", "1")) == 0
    child = ("import sys, keras_facemargin, keras; m = keras.models.load_model(sys.argv[1]); "
             "print(type(m.optimizer.inner_optimizer).__name__)")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", child, str(ckpt / "final.keras")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "RowSparseSGD"


def test_train_resumes_from_checkpoint(tmp_path, capsys):
    data, ckpt = _folder(tmp_path / "faces"), tmp_path / "ckpt"
    assert main(_args(data, ckpt)) == 0
    capsys.readouterr()
    # the same run again: both epochs are done, nothing is trained again
    assert main(_args(data, ckpt)) == 0
    out = capsys.readouterr().out
    assert "Epoch 1/2" not in out and "| 0 |" in out


@pytest.mark.parametrize("extra, needle", [
    (("--sample-rate", "1.5"), "--sample-rate must be in (0, 1]"),
    (("--sample-rate", "0.1"), "larger than the number of sampled classes"),
    (("--epochs", "0"), "--epochs must be >= 1"),
    (("--image-size", "30"), "--image-size must be a multiple of 16"),
])
def test_bad_arguments(tmp_path, capsys, extra, needle):
    data = _folder(tmp_path / "faces", people=2, per_person=4)
    assert main(_args(data, tmp_path / "c", *extra)) == 2
    assert needle in capsys.readouterr().err


def test_multiworker_without_tf_config(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    data = _folder(tmp_path / "faces", people=2, per_person=4)
    assert main(_args(data, tmp_path / "c", "--strategy", "multiworker")) == 2
    assert "TF_CONFIG" in capsys.readouterr().err


def test_throughput_callback_counts_images():
    cb = ThroughputCallback(batch_size=10)
    cb.on_epoch_begin(0)
    logs = {}
    cb.on_train_batch_end(0, logs)  # first batch: start of the clock
    assert "images_per_s" not in logs
    t0 = cb._start
    for b in range(1, 4):
        cb.on_train_batch_end(b, logs)
    import time
    assert 0 < logs["images_per_s"] <= 30 / (time.perf_counter() - t0) * 1e6
    assert cb._images == 30
    with pytest.raises(ValueError, match="batch_size"):
        ThroughputCallback(0)


def _two_workers(tmp_path, *extra):
    """`facemargin train --strategy multiworker` in two processes on localhost; both finish 2
    epochs. Returns the checkpoint folder."""
    import json

    from helpers import free_ports
    from procs import finish, start

    data, ckpt = _folder(tmp_path / "faces"), tmp_path / "ckpt"
    cluster = {"worker": [f"localhost:{p}" for p in free_ports(2)]}
    procs = []
    for i in range(2):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
        procs.append(start(["-m", "keras_facemargin.cli",
                            *_args(data, ckpt, "--strategy", "multiworker", *extra)], env=env))
    for result in finish(procs):
        assert "| 2 |" in result.out
    return ckpt


@pytest.mark.slow
def test_multiworker_two_processes_same_weights(tmp_path):
    """Two `facemargin train --strategy multiworker` processes on localhost finish with equal
    weights."""
    ckpt = _two_workers(tmp_path)
    w0 = keras.models.load_model(ckpt / "final_worker0.keras").get_weights()
    w1 = keras.models.load_model(ckpt / "final_worker1.keras").get_weights()
    for a, b in zip(w0, w1, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_multiworker_model_parallel_two_processes(tmp_path):
    """`facemargin train --strategy multiworker --model-parallel`: each of the two workers holds
    2 of the 4 class centres (the head's kernel is a per-replica shard); both write the same
    final model, which loads on one device as a full head with all 4 centres."""
    ckpt = _two_workers(tmp_path, "--model-parallel", "--head", "curricular")
    models = [keras.models.load_model(ckpt / f"final_worker{i}.keras") for i in range(2)]
    for model in models:
        assert model.head.model_parallel and model.head.shards == 1  # one device: full head
        assert tuple(model.head.kernel.shape) == (4, 16)
    w0, w1 = (m.get_weights() for m in models)
    for a, b in zip(w0, w1, strict=True):
        np.testing.assert_array_equal(a, b)
    centres = models[0].head.kernel.numpy()
    assert np.abs(centres[:2] - centres[2:]).max() > 1e-3  # the two shards are distinct


def test_model_parallel_needs_a_strategy(tmp_path, capsys):
    data = _folder(tmp_path / "faces")
    assert main(_args(data, tmp_path / "ckpt", "--model-parallel")) == 2
    assert "--model-parallel shards the class centres" in capsys.readouterr().err


# ------------------------------------------------ bad data never becomes a believable number
def test_one_identity_is_refused(tmp_path, capsys):
    """Before: final loss 0.0000, final.keras saved, exit 0."""
    data = _folder(tmp_path / "faces", people=1, per_person=8)
    assert main(_args(data, tmp_path / "c")) == 2
    err = capsys.readouterr().err
    assert "at least two identities" in err and "1 identity" in err
    assert not (tmp_path / "c" / "final.keras").exists()


def test_every_image_corrupt_is_refused_with_the_count(tmp_path, capsys):
    """Before: 0 epochs, NaN, final.keras saved, exit 0."""
    data = _folder(tmp_path / "faces", people=2, per_person=4)
    for f in data.rglob("*.png"):
        f.write_bytes(b"\x89PNG broken")
    assert main(_args(data, tmp_path / "c")) == 2
    err = capsys.readouterr().err
    assert "8 unreadable files (every one of 8" in err and "id0/0.png" in err
    assert not (tmp_path / "c" / "final.keras").exists()


def test_a_few_corrupt_images_are_skipped_and_counted(tmp_path, capsys):
    data = _folder(tmp_path / "faces")
    (data / "id1" / "3.png").write_bytes(b"\x89PNG broken")
    (data / "id2" / "5.png").write_bytes(b"")
    with pytest.warns(RuntimeWarning, match=r"id1/3\.png|id2/5\.png"):
        assert main(_args(data, tmp_path / "c", "--epochs", "1")) == 0
    out, err = capsys.readouterr()
    assert "skipped 2 unreadable image(s) of 32" in err
    row = [line for line in out.splitlines() if line.startswith("| 1 |")]
    assert row and np.isfinite(float(row[0].split("|")[2]))


@pytest.mark.parametrize("argv, needle", [
    (["train", "--data", "DATA", "--epochs", "ten"], "argument --epochs: invalid int value"),
    (["train", "--data", "DATA", "--head", "nope"], "argument --head: invalid choice"),
    (["eval", "--model", "MISSING.keras", "--bin", "MISSING.bin"], "missing.keras"),
    (["export", "MISSING.keras", "--tflite", "x.tflite"], "missing.keras"),
    (["train", "--data", "MISSING"], "--data does not exist"),
])
def test_user_errors_are_one_line_exit_2_no_traceback(tmp_path, capsys, argv, needle):
    """In this process (an exception escaping ``main`` would fail the test with its traceback);
    argparse's own errors end in SystemExit(2)."""
    data = _folder(tmp_path / "faces", people=2, per_person=4)
    argv = [a.replace("DATA", str(data)).replace("MISSING", str(tmp_path / "missing"))
            for a in argv]
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and needle in err, err


def test_a_user_error_in_a_real_process_is_one_line(tmp_path):
    """As a user runs it: stderr is exactly the one message (no traceback, no native logs)."""
    from procs import run

    proc = run(["-m", "keras_facemargin.cli", "train", "--data", tmp_path / "missing"],
               name="facemargin", check=False)
    assert proc.returncode == 2, proc.err[-3000:]
    assert proc.err.strip().splitlines() == [
        f"facemargin train: error: --data does not exist: {str(tmp_path / 'missing')!r}"]


def test_a_corrupt_model_file_is_one_line_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "model.keras"
    bad.write_bytes(b"PK\x03\x04 not a zip")
    code = main(["export", str(bad), "--tflite", str(tmp_path / "x.tflite")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
