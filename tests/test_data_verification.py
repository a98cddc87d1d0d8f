"""Verification sets: insightface .bin (safe pickle), LFW pairs.txt, decoding with skips."""

import os
import pickle
import warnings

import numpy as np
import pytest

from keras_facemargin.data import decode_pairs, load_bin, load_pairs_txt

from data_helpers import face_jpeg, identity_of


def _bin(tmp_path, obj, protocol=2, name="lfw.bin"):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_load_bin_round_trip(tmp_path, protocol):
    images = [face_jpeg(i % 3) for i in range(6)]
    pairs = load_bin(_bin(tmp_path, (images, [True, False, True]), protocol))
    assert pairs.name == "lfw" and len(pairs) == 3
    assert pairs.images == images and pairs.issame == [True, False, True]


def test_load_bin_numpy_bools(tmp_path):
    images = [face_jpeg(0)] * 4
    pairs = load_bin(_bin(tmp_path, (images, np.array([True, False])), 4))
    assert pairs.issame == [True, False]
    pairs = load_bin(_bin(tmp_path, (images, [np.bool_(False), np.bool_(True)]), 2))
    assert pairs.issame == [False, True]


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_pickle_with_code_is_refused_and_not_executed(tmp_path):
    target = str(tmp_path / "pwned")
    path = _bin(tmp_path, ([_Evil(target), b"x"], [True]))
    with pytest.raises(ValueError, match="Refus"):
        load_bin(path)
    assert not os.path.exists(target)
    with pytest.raises(ValueError, match="Refus"):
        load_bin(_bin(tmp_path, ([b"a", b"b"], np.array([1.0])), 2))


@pytest.mark.parametrize("obj,match", [
    (([b"a", b"b", b"c"], [True]), "2 images per pair"),
    (([b"a", b"b"], [1.0]), "booleans"),
    (([b"a", "b"], [True]), "bytes"),
    (({"a": 1}, [True]), "two lists"),
    ([b"a"], "pair"),
])
def test_bad_bin_contents(tmp_path, obj, match):
    with pytest.raises(ValueError, match=match):
        load_bin(_bin(tmp_path, obj))


def test_bin_missing_empty_truncated(tmp_path):
    with pytest.raises(FileNotFoundError, match="path"):
        load_bin(tmp_path / "none.bin")
    (tmp_path / "e.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_bin(tmp_path / "e.bin")
    data = pickle.dumps(([b"a", b"b"], [True]))
    (tmp_path / "t.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="t.bin"):
        load_bin(tmp_path / "t.bin")


def test_decode_pairs_skips_pairs_with_corrupt_images(tmp_path):
    images = [face_jpeg(0), face_jpeg(1), b"broken", face_jpeg(2), face_jpeg(3), face_jpeg(3)]
    pairs = load_bin(_bin(tmp_path, (images, [False, False, True])))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x, issame = decode_pairs(pairs, image_size=(16, 16))
    assert x.shape == (4, 16, 16, 3) and x.dtype == np.uint8
    assert issame.tolist() == [False, True]
    assert [identity_of((im - 127.5) / 128) for im in x] == [0, 1, 3, 3]
    assert any("1 of 3 pairs skipped" in str(w.message) for w in caught)
    bad = load_bin(_bin(tmp_path, ([b"x", b"y"], [True])))
    with pytest.raises(ValueError, match="no pair"), pytest.warns(RuntimeWarning, match="1 of 1"):
        decode_pairs(bad, image_size=(16, 16))


def test_decode_resizes_to_112(tmp_path):
    pairs = load_bin(_bin(tmp_path, ([face_jpeg(1, size=20), face_jpeg(2, size=40)], [False])))
    x, _ = decode_pairs(pairs)
    assert x.shape == (2, 112, 112, 3)
    assert [identity_of((im - 127.5) / 128) for im in x] == [1, 2]


def test_pairs_txt(tmp_path):
    root = tmp_path / "lfw"
    for name, ident in (("Ann_A", 0), ("Bob_B", 1)):
        (root / name).mkdir(parents=True)
        for k in (1, 2):
            (root / name / f"{name}_{k:04d}.jpg").write_bytes(face_jpeg(ident))
    txt = tmp_path / "pairs.txt"
    txt.write_text("1\t3\nAnn_A\t1\t2\nAnn_A\t1\tBob_B\t2\nBob_B\t1\t9\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pairs = load_pairs_txt(txt, root)
    assert pairs.issame == [True, False]  # Bob_B_0009 is missing: skipped
    assert any("1 of 3 pairs" in str(w.message) for w in caught)
    x, _ = decode_pairs(pairs, (16, 16))
    assert [identity_of((im - 127.5) / 128) for im in x] == [0, 0, 0, 1]
    txt.write_text("Ann_A\t1\n")
    with pytest.raises(ValueError, match="3 .same. or 4"):
        load_pairs_txt(txt, root)
