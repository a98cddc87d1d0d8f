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
