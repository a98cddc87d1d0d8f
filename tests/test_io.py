"""keras_facemargin._io.atomic_path: the one atomic-write helper (plots, checkpoints, CLI, examples)."""
import os
import stat

import pytest

from keras_facemargin._io import atomic_path


def test_replaces_the_target_with_the_usual_mode(tmp_path):
    target = tmp_path / "out.png"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and tmp.endswith(".png")
        with open(tmp, "w") as f:
            f.write("new")
        assert target.read_text() == "old"  # untouched until the block succeeds
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o666 & ~umask
    assert sorted(os.listdir(tmp_path)) == ["out.png"]


def test_an_error_leaves_the_target_and_no_temporary_file(tmp_path):
    target = tmp_path / "model.keras"
    target.write_text("user's model")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("writer failed")
    assert target.read_text() == "user's model"
    assert sorted(os.listdir(tmp_path)) == ["model.keras"]
