"""insightface RecordIO (.rec + .idx) without MXNet: byte format, header record, bad input."""

import struct
import warnings

import numpy as np
import pytest

from keras_facemargin.data import IRHeader, RecordIOReader, pack, unpack, write_recordio

from data_helpers import face_jpeg, identity_of

MAGIC = 0xCED7230A


def _raw_record(payload: bytes, cflag: int = 0) -> bytes:
    """dmlc-core framing written by hand from the format description (independent of the writer)."""
    return (struct.pack("<II", MAGIC, (cflag << 29) | len(payload)) + payload
            + b"\0" * (-len(payload) % 4))


def _image_payload(label: float, jpeg: bytes, rid: int) -> bytes:
    return struct.pack("<IfQQ", 0, label, rid, 0) + jpeg


def _write_dataset(tmp_path, images_per_id=(3, 2, 4), corrupt=()):
    """insightface layout: record 0 header, images 1..N, identity records N+1..N+C."""
    records, ranges, key = [], [], 1
    for ident, n in enumerate(images_per_id):
        start = key
        for _ in range(n):
            jpeg = b"\xff\xd8 not a jpeg" if key in corrupt else face_jpeg(ident)
            records.append((key, pack(IRHeader(0, (float(ident),), key), jpeg)))
            key += 1
        ranges.append((start, key))
    first = key
    head = [(0, pack(IRHeader(2, (float(first), float(first + len(ranges)))), b""))]
    ids = [(first + i, pack(IRHeader(2, (float(s), float(e))), b"")) for i, (s, e) in enumerate(ranges)]
    rec, idx = tmp_path / "train.rec", tmp_path / "train.idx"
    write_recordio(rec, idx, head + records + ids)
    return rec, idx


def test_writer_matches_hand_built_bytes(tmp_path):
    payloads = [_image_payload(3.0, b"abcde", 1), _image_payload(1.0, b"xyz", 2)]
    write_recordio(tmp_path / "a.rec", tmp_path / "a.idx", [(1, payloads[0]), (2, payloads[1])])
    expected = _raw_record(payloads[0]) + _raw_record(payloads[1])
    assert (tmp_path / "a.rec").read_bytes() == expected
    assert (tmp_path / "a.idx").read_text() == f"1\t0\n2\t{len(_raw_record(payloads[0]))}\n"


def test_reader_joins_split_records(tmp_path):
    """A payload holding the magic at a 4-aligned offset is stored in parts (cflag 1, 2, 3)
    with the magic removed; the reader re-inserts it."""
    magic = struct.pack("<I", MAGIC)
    payload = _image_payload(5.0, b"ABCD" + magic + b"EFGH" + magic + b"IJ", 7)
    cut1 = payload.index(magic)
    cut2 = payload.index(magic, cut1 + 4)
    raw = (_raw_record(payload[:cut1], 1) + _raw_record(payload[cut1 + 4:cut2], 2)
           + _raw_record(payload[cut2 + 4:], 3))
    (tmp_path / "s.rec").write_bytes(raw)
    (tmp_path / "s.idx").write_text("7\t0\n")
    reader = RecordIOReader(tmp_path / "s.rec")
    assert reader.read(7) == payload
    header, body = reader.read_image(7)
    assert header.label == (5.0,) and body == b"ABCD" + magic + b"EFGH" + magic + b"IJ"
    # and our writer splits the same way
    write_recordio(tmp_path / "w.rec", tmp_path / "w.idx", [(7, payload)])
    assert (tmp_path / "w.rec").read_bytes() == raw


def test_header_record_and_labels(tmp_path):
    rec, idx = _write_dataset(tmp_path)
    reader = RecordIOReader(rec, idx)
    assert reader.num_classes == 3
    assert reader.image_keys == list(range(1, 10))
    assert reader.labels() == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert [reader.label(k) for k in reader.image_keys] == reader.labels()
    header, jpeg = reader.read_image(4)
    assert header.flag == 0 and header.id == 4 and jpeg[:2] == b"\xff\xd8"


def test_pack_unpack_vector_label():
    h, body = unpack(pack(IRHeader(3, (1.0, 2.0, 3.0), 9), b"img"))
    assert h.flag == 3 and h.label == (1.0, 2.0, 3.0) and body == b"img"
    with pytest.raises(ValueError, match="flag"):
        pack(IRHeader(2, (1.0,)), b"")


def test_rec_idx_disagreement(tmp_path):
    rec, idx = _write_dataset(tmp_path)
    lines = idx.read_text().splitlines()
    (tmp_path / "far.idx").write_text("\n".join(lines + [f"99\t{rec.stat().st_size + 64}"]))
    with pytest.raises(ValueError, match="disagree"):
        RecordIOReader(rec, tmp_path / "far.idx")
    key, pos = lines[3].split("\t")
    (tmp_path / "shift.idx").write_text("\n".join(lines[:3] + [f"{key}\t{int(pos) + 8}"] + lines[4:]))
    with pytest.raises(ValueError, match="disagree"):
        RecordIOReader(rec, tmp_path / "shift.idx")
    (tmp_path / "short.idx").write_text("\n".join(lines[:5]))  # header announces keys it lacks
    with pytest.raises(ValueError, match="disagree"):
        RecordIOReader(rec, tmp_path / "short.idx")


def test_missing_and_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="rec_path"):
        RecordIOReader(tmp_path / "none.rec")
    (tmp_path / "e.rec").write_bytes(b"")
    (tmp_path / "e.idx").write_text("")
    with pytest.raises(ValueError, match="empty"):
        RecordIOReader(tmp_path / "e.rec")
    (tmp_path / "g.idx").write_text("garbage\n")
    with pytest.raises(ValueError, match="idx_path"):
        RecordIOReader(tmp_path / "e.rec", tmp_path / "g.idx")


def test_recordio_dataset_labels_and_skips(tmp_path):
    from keras_facemargin.data import recordio_dataset

    rec, idx = _write_dataset(tmp_path, corrupt=(2, 8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = recordio_dataset(rec, batch_size=4, image_size=(16, 16), training=False)
        batches = list(data.dataset.as_numpy_iterator())
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert data.num_classes == 3 and int(data.skipped) == 2
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 2]  # keys 2 and 8 skipped
    assert [identity_of(im) for im in images] == labels.tolist()
    assert images.dtype == np.float32 and images.shape[1:] == (16, 16, 3)
    assert sum("skipped undecodable" in str(w.message) for w in caught) == 2
