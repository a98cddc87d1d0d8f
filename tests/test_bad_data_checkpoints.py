"""AtomicBackupAndRestore never loses the user's files and never resumes from a bad checkpoint.

Before: ``AtomicBackupAndRestore("dir")`` deleted the whole folder at the end of training (the
user's ``best.keras`` and notes too); a weights file overwritten with plausible garbage or with
flipped bytes was resumed from silently; a ``state.json`` of ``null`` restarted at epoch 0 and
deleted the old checkpoint.
"""

import json
import os

import keras
import numpy as np
import pytest

from keras_facemargin.training.fault_tolerance import AtomicBackupAndRestore


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    return model


def _fit(model, folder, epochs, **kw):
    x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
    return model.fit(x, x[:, :2], batch_size=4, epochs=epochs, verbose=0, shuffle=False,
                     callbacks=[AtomicBackupAndRestore(str(folder), **kw)])


def test_refuses_to_adopt_a_non_empty_folder_it_did_not_create(tmp_path):
    (tmp_path / "best.keras").write_bytes(b"the user's model")
    (tmp_path / "notes.txt").write_text("notes")
    with pytest.raises(ValueError, match=r"not created by AtomicBackupAndRestore.*best\.keras"):
        _fit(_model(), tmp_path, 1)
    assert sorted(os.listdir(tmp_path)) == ["best.keras", "notes.txt"]


def test_deletes_only_its_own_files(tmp_path):
    folder = tmp_path / "backup"
    _fit(_model(), folder, 2, delete_checkpoint=False)
    (folder / "best.keras").write_bytes(b"saved by the user later")  # the user adds a file
    _fit(_model(), folder, 3)  # resumes, then deletes its checkpoints at the end
    assert os.listdir(folder) == ["best.keras"]
    assert (folder / "best.keras").read_bytes() == b"saved by the user later"


def test_an_empty_or_new_folder_is_removed_when_done(tmp_path):
    _fit(_model(), tmp_path / "new", 1)
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    _fit(_model(), tmp_path / "empty", 1)
    assert not (tmp_path / "empty").exists()


@pytest.mark.parametrize("damage", ["flip", "garbage"])
def test_a_damaged_checkpoint_is_refused_with_a_clear_error(tmp_path, damage):
    """A flipped byte in the weights, or another model's valid weights file in its place."""
    _fit(_model(), tmp_path, 2, delete_checkpoint=False)
    state = json.loads((tmp_path / "state.json").read_text())
    weights = tmp_path / state["weights"]
    if damage == "flip":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0x40
        weights.write_bytes(bytes(data))
    else:  # a plausible h5 weights file of the same model, other values
        other = _model()
        other.layers[0].kernel.assign(np.full((3, 2), 1e20, "float32"))
        other.save_weights(str(tmp_path / "other.weights.h5"))
        os.replace(tmp_path / "other.weights.h5", weights)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ValueError, match=state["weights"].replace(".", r"\.") + " fails its checksum"):
        _fit(_model(), tmp_path, 4, delete_checkpoint=False)
    assert sorted(os.listdir(tmp_path)) == before  # nothing deleted


@pytest.mark.parametrize("text", ["null", "[]", '{"epoch": "two"}', "{broken",
                                  '{"epoch": 2, "weights": "../../etc/passwd"}',
                                  '{"epoch": 0, "optimizer_shapes": [[3, "2"]]}',
                                  '{"epoch": 0, "centre_shards": 0}'])
def test_a_bad_state_json_is_a_clear_error_and_nothing_is_deleted(tmp_path, text):
    _fit(_model(), tmp_path, 2, delete_checkpoint=False)
    (tmp_path / "state.json").write_text(text)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ValueError, match=r"state\.json"):
        _fit(_model(), tmp_path, 4, delete_checkpoint=False)
    assert sorted(os.listdir(tmp_path)) == before


def test_an_intact_checkpoint_still_resumes(tmp_path):
    _fit(_model(), tmp_path, 2, delete_checkpoint=False)
    hist = _fit(_model(), tmp_path, 3, delete_checkpoint=False)
    assert hist.epoch == [2]  # resumed after the two committed epochs


def test_a_checkpoint_whose_optimizer_state_does_not_fit_is_refused(tmp_path):
    """Keras itself only warns and skips an optimizer state of another layout (here SGD with
    momentum: 2 more slots), so the run would resume with zero momentum; the callback refuses
    it before loading anything."""
    _fit(_model(), tmp_path, 2, delete_checkpoint=False)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["optimizer_shapes"] == [[], []]  # SGD without momentum: iteration, lr
    assert state["centre_shards"] == 1
    model = _model()
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    before = [w.copy() for w in model.get_weights()]
    files = sorted(os.listdir(tmp_path))
    with pytest.raises(ValueError, match=r"optimizer state holds 2 variables, this model's "
                                         r"optimizer 4 \(variable 2: none saved, \(3, 2\) here"):
        _fit(model, tmp_path, 4, delete_checkpoint=False)
    for got, want in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(got, want)  # nothing loaded
    assert sorted(os.listdir(tmp_path)) == files  # nothing deleted


def test_a_checkpoint_without_optimizer_shapes_still_resumes(tmp_path):
    """State files of earlier versions carry no optimizer layout: not checked."""
    _fit(_model(), tmp_path, 2, delete_checkpoint=False)
    state = json.loads((tmp_path / "state.json").read_text())
    del state["optimizer_shapes"], state["centre_shards"]
    (tmp_path / "state.json").write_text(json.dumps(state))
    assert _fit(_model(), tmp_path, 3, delete_checkpoint=False).epoch == [2]
