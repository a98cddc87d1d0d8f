"""Bad data files never become believable numbers: each error names the file (and the record).

Rows of issue 15's table, each checked against what ``main`` did before: hidden folders became
identity 0; a RecordIO label of 1.7 became 1; a 40-byte ``.rec`` header claiming 2e9 images
allocated until memory ran out; a binary ``.idx`` raised a ``UnicodeDecodeError`` and a NaN label
``cannot convert float NaN to integer``, neither naming the file; skipped images were named
``#17``, not by their file.
"""

import struct

import numpy as np
import pytest

from keras_facemargin.data import IRHeader, RecordIOReader, pack, write_recordio
from keras_facemargin.data.pipeline import image_folder_dataset, recordio_dataset

from data_helpers import face_jpeg, identity_of


def _folder(root, people=("a", "b", "c"), per_person=2):
    for ident, person in enumerate(people):
        (root / person).mkdir(parents=True)
        for i in range(per_person):
            (root / person / f"{i}.jpg").write_bytes(face_jpeg(ident))
    return root


def test_hidden_entries_are_not_identities(tmp_path):
    root = _folder(tmp_path / "faces")
    (root / ".ipynb_checkpoints").mkdir()
    (root / ".ipynb_checkpoints" / "x.jpg").write_bytes(face_jpeg(4))
    (root / ".cache").mkdir()
    (root / ".cache" / "y.jpg").write_bytes(face_jpeg(5))
    (root / "a" / "._0.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata
    data = image_folder_dataset(root, batch_size=6, image_size=(16, 16), training=False)
    assert data.num_classes == 3 and data.num_images == 6
    images, labels = next(iter(data.dataset))
    # label i is the i-th real person: identity_of reads the colour face_jpeg drew for it
    want = [identity_of(np.asarray(im)) for im in images]
    assert list(np.asarray(labels)) == want == [0, 0, 1, 1, 2, 2]
    assert int(data.skipped) == 0


def test_a_skipped_image_is_named_by_its_file(tmp_path):
    root = _folder(tmp_path / "faces")
    (root / "b" / "1.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    data = image_folder_dataset(root, batch_size=5, image_size=(16, 16), training=False)
    with pytest.warns(RuntimeWarning, match=r"faces/b/1\.jpg"):
        batches = list(data.dataset)
    assert sum(len(y) for _, y in batches) == 5
    assert data.skipped.distinct == 1
    assert data.unreadable()[:2] == (1, 6) and "b/1.jpg" in data.unreadable()[2]


def _rec(tmp_path, labels, header=None, name="train"):
    records = [(k + 1, pack(IRHeader(0, (float(v),), k + 1), face_jpeg(k % 4)))
               for k, v in enumerate(labels)]
    if header is not None:
        records = [(0, pack(IRHeader(2, header), b""))] + records
    rec, idx = tmp_path / f"{name}.rec", tmp_path / f"{name}.idx"
    write_recordio(rec, idx, records)
    return rec, idx


@pytest.mark.parametrize("bad", [1.7, float("nan"), float("inf")])
def test_a_fractional_or_nan_recordio_label_is_refused_with_the_record(tmp_path, bad):
    rec, _ = _rec(tmp_path, [0.0, 1.0, bad, 1.0])
    with pytest.raises(ValueError, match=r"train\.rec record 3.*whole number"):
        RecordIOReader(rec).labels()
    with pytest.raises(ValueError, match=r"train\.rec record 3"):
        recordio_dataset(rec, batch_size=2, image_size=(16, 16))


def test_a_fractional_identity_range_is_refused(tmp_path):
    jpeg = face_jpeg(0)
    records = [(0, pack(IRHeader(2, (3.0, 4.0)), b"")),
               (1, pack(IRHeader(0, (0.0,), 1), jpeg)), (2, pack(IRHeader(0, (0.0,), 2), jpeg)),
               (3, pack(IRHeader(2, (1.0, 2.5)), b""))]
    write_recordio(tmp_path / "t.rec", tmp_path / "t.idx", records)
    with pytest.raises(ValueError, match=r"t\.rec record 3 \(identity 0\).*whole number"):
        RecordIOReader(tmp_path / "t.rec").labels()


def test_a_header_claiming_2e9_images_is_refused_before_allocating(tmp_path):
    """40 bytes: one header record announcing images 1..2e9; the .idx lists it alone."""
    payload = struct.pack("<IfQQ", 2, 0.0, 0, 0) + struct.pack("<2f", 2e9, 2e9 + 2)
    raw = struct.pack("<II", 0xCED7230A, len(payload)) + payload
    assert len(raw) == 40
    (tmp_path / "big.rec").write_bytes(raw)
    (tmp_path / "big.idx").write_text("0\t0\n")
    with pytest.raises(ValueError, match=r"big\.rec record 0 \(header\) announces 1999999999 "
                                         r"images.*\.idx lists 1 records.*40 bytes"):
        RecordIOReader(tmp_path / "big.rec")


def test_a_binary_idx_names_its_file_and_line(tmp_path):
    rec, idx = _rec(tmp_path, [0.0, 1.0])
    idx.write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(ValueError, match=r"line 1.*train\.idx"):
        RecordIOReader(rec)


def test_a_truncated_record_names_file_and_record(tmp_path):
    rec, _ = _rec(tmp_path, [0.0, 1.0, 1.0])
    rec.write_bytes(rec.read_bytes()[:-6])  # the last record loses its tail
    with pytest.raises(ValueError, match=r"record 3 in .*train\.rec"):
        RecordIOReader(rec).read_image(3)
    with pytest.raises(ValueError, match=r"record 3 in .*train\.rec"):
        recordio_dataset(rec, batch_size=1, image_size=(16, 16))  # reading the labels


def test_an_undecodable_recordio_image_is_skipped_and_named_by_file_and_record(tmp_path):
    records = [(k, pack(IRHeader(0, (float(k % 2),), k),
                        b"\xff\xd8 not a jpeg" if k == 2 else face_jpeg(k % 2)))
               for k in (1, 2, 3, 4)]
    write_recordio(tmp_path / "train.rec", tmp_path / "train.idx", records)
    data = recordio_dataset(tmp_path / "train.rec", batch_size=1, image_size=(16, 16),
                            training=False)
    bad, tried, first = data.unreadable()
    assert (bad, tried) == (1, 4) and "train.rec record 2" in first
    with pytest.warns(RuntimeWarning, match=r"train\.rec record 2"):
        assert len(list(data.dataset)) == 3


@pytest.mark.parametrize("content, match", [
    (b"\xff\xfe\x00\x01 binary\n", r"not a text file.*pairs\.txt"),
    (b"Ann_A\t1\tx2\n", r"pair 1: the image number must be a whole number.*'x2'.*pairs\.txt"),
])
def test_pairs_txt_errors_name_the_file_and_pair(tmp_path, content, match):
    """Before: UnicodeDecodeError / "invalid literal for int()" without the file."""
    from keras_facemargin.data import load_pairs_txt

    (tmp_path / "pairs.txt").write_bytes(content)
    (tmp_path / "img").mkdir()
    with pytest.raises(ValueError, match=match):
        load_pairs_txt(tmp_path / "pairs.txt", tmp_path / "img")
