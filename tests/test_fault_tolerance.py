"""SIGKILL mid-epoch, restart, resume: no epoch lost or repeated, same weights as no crash."""

import json
import os
import pathlib
import signal
import time

import numpy as np
import pytest

from procs import TIMEOUT, describe, finish, run, start

SCRIPT = pathlib.Path(__file__).parent / "scripts" / "fault_tolerance_fit.py"
SHARDED = pathlib.Path(__file__).parent / "scripts" / "sharded_backup_fit.py"


@pytest.mark.slow
def test_kill_and_resume_equals_an_uninterrupted_run(tmp_path):
    run([SCRIPT, tmp_path / "b0", tmp_path / "log0", tmp_path / "w0.json"],
        name="uninterrupted run")
    marker = tmp_path / "stalled"
    args = [SCRIPT, tmp_path / "b1", tmp_path / "log1", tmp_path / "w1.json"]
    proc = start([*args, "2", "3", marker])
    deadline = time.time() + TIMEOUT
    while not marker.exists():
        if proc.poll() is not None:
            finish([proc], ["run to be killed"])  # fails with its exit code and stderr
        if time.time() > deadline:
            finish([proc], ["run to be killed"], timeout=0)  # fails: hung before batch 3
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)  # in the middle of epoch 2 (0-based)
    (killed,) = finish([proc], ["killed run"], timeout=60, check=False)
    assert killed.returncode == -signal.SIGKILL, describe([killed])
    state = json.loads((tmp_path / "b1" / "state.json").read_text())
    assert state["epoch"] == 2  # epochs 0 and 1 committed
    run(args, name="resumed run")
    epochs = [int(line.split()[0]) for line in (tmp_path / "log1").read_text().splitlines()]
    assert epochs == [0, 1, 2, 3, 4]  # none lost, none repeated
    reference = [line.split()[1] for line in (tmp_path / "log0").read_text().splitlines()]
    losses = [line.split()[1] for line in (tmp_path / "log1").read_text().splitlines()]
    np.testing.assert_allclose(np.float64(losses), np.float64(reference), rtol=1e-5)
    for got, want in zip(json.loads((tmp_path / "w1.json").read_text()),
                         json.loads((tmp_path / "w0.json").read_text()), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    leftovers = sorted(p.name for p in (tmp_path / "b1").iterdir())
    # old checkpoints removed; the marker says the folder is the callback's
    assert leftovers == [".facemargin-backup", "ckpt-000005.weights.h5", "state.json"]


def _sharded_run(*args) -> dict:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    proc = run([SHARDED, *args], name=f"sharded_backup_fit.py {' '.join(map(str, args))}",
               env=env)
    return json.loads(proc.out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """``scripts/sharded_backup_fit.py``: MirroredStrategy over 2 logical CPUs, AdaFace with
    sharded centres, SGD (momentum, weight decay, a decaying learning rate)."""
    out = tmp_path_factory.mktemp("sharded_backup")
    return out, _sharded_run(out)


@pytest.mark.slow
def test_sharded_centres_resume_exactly_like_an_uninterrupted_run(sharded):
    """A fit stopped after the first step of epoch 2 (epochs 0, 1 committed), resumed by a
    fresh model with other initial weights: epochs 2 and 3 only, with the losses, all C centres,
    their momentum, AdaFace's state, the backbone and the optimizer's slots and step count of
    the run that was never interrupted."""
    _, r = sharded
    assert r["replicas"] == 2 and r["shard_rows"] == 6 and r["interrupted"]
    assert r["committed_epochs"] == 2 and r["epochs_run"] == [2, 3]
    assert r["velocity_norm"] > 0.01  # the centres' momentum matters
    assert min(r["fresh_differs"].values()) > 0.1  # the fresh model had to take it all back
    assert set(r["resumed"]) == {"centres", "velocity", "state", "backbone", "optimizer"}
    assert r["loss_err"] <= 1e-6
    assert max(r["resumed"].values()) <= 1e-6, r["resumed"]
    assert r["backup_removed"]


@pytest.mark.slow
def test_sharded_backup_resumes_over_another_number_of_replicas(sharded):
    """The 2-replica backup resumed over 4 replicas (3 centres each, another process): the
    centres and their momentum are re-sharded; the same numbers up to summation order."""
    out, _ = sharded
    r = _sharded_run(out, "four")
    assert r["replicas"] == 4 and r["shard_rows"] == 3
    assert r["loss_err"] <= 1e-5
    assert max(r["resumed"].values()) <= 1e-6, r["resumed"]


@pytest.mark.slow
def test_sharded_and_one_device_backups_do_not_resume_each_other(sharded):
    """On one device the same head is a full head whose centre momentum is an optimizer slot:
    Keras would skip the whole optimizer state with a warning and the run would go on with
    zero momentum and step 0. Refused both ways, naming why; nothing loaded or deleted."""
    _, r = sharded
    one, two = r["to_one_device"], r["to_two_replicas"]
    assert one["shards"] == 1 and two["shards"] == 2
    for case in (one, two):
        assert case["error"] is not None and "cannot resume this model as it was" in case["error"]
        assert "Nothing was loaded or deleted" in case["error"]
        assert case["unchanged"]
    assert "holds the class centres sharded over 2 replicas" in one["error"]
    assert "this model holds them whole" in one["error"]
    assert "holds the class centres whole" in two["error"]
    assert "this model holds them sharded over 2 replicas" in two["error"]
    assert one["files_kept"]


@pytest.mark.parametrize("when", ["weights", "state"])
def test_a_crash_while_saving_leaves_the_previous_checkpoint_usable(tmp_path, monkeypatch, when):
    """Simulate a kill inside _save_model: before the commit, the old state still loads."""
    import keras

    from keras_facemargin.training.fault_tolerance import AtomicBackupAndRestore

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    cb = AtomicBackupAndRestore(str(tmp_path), delete_checkpoint=False)
    cb.set_model(model)
    cb._current_epoch = 1
    cb._save_model()
    saved = [w.copy() for w in model.get_weights()]
    model.layers[0].kernel.assign(model.layers[0].kernel + 1.0)
    cb._current_epoch = 2

    class Crash(Exception):
        pass

    def crash(*a, **k):
        raise Crash

    if when == "weights":
        monkeypatch.setattr(model, "save_weights", crash)
    else:
        monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(Crash):
        cb._save_model()
    monkeypatch.undo()
    fresh = AtomicBackupAndRestore(str(tmp_path), delete_checkpoint=False)
    fresh.set_model(model)
    fresh._load_model()
    assert model._initial_epoch == 1
    for got, want in zip(model.get_weights(), saved, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("save_freq", [3, "batch", None])
def test_mid_epoch_checkpoints_are_refused_with_the_reason(tmp_path, save_freq):
    from keras_facemargin.training.fault_tolerance import AtomicBackupAndRestore

    with pytest.raises(ValueError, match="save_freq.*'epoch'.*first batch"):
        AtomicBackupAndRestore(str(tmp_path), save_freq=save_freq)
