"""MXNet RecordIO (insightface's ``train.rec`` + ``train.idx``) read and written without MXNet.

File format (dmlc-core ``recordio``, as MS1MV2, Glint360K and WebFace ship it):

* each record: ``uint32 magic 0xced7230a``, ``uint32 lrec`` with ``cflag = lrec >> 29`` and
  ``length = lrec & (2**29 - 1)``, then ``length`` bytes padded with zeros to a multiple of 4.
  ``cflag`` 0 is a whole record; a payload that contains the magic number at a 4-byte-aligned
  offset is split there into parts with ``cflag`` 1 (first), 2 (middle), 3 (last) and the magic
  re-inserted between the parts on reading.
* the payload starts with an ``IRHeader``: ``struct "<IfQQ"`` = (flag, label, id, id2), 24
  bytes. When ``flag > 0`` the label is instead the ``flag`` float32 values that follow the
  header. The rest of the payload is the encoded image (JPEG).
* the ``.idx`` file holds one ``key<TAB>byte offset`` line per record.
* insightface's record 0 has ``flag == 2`` and label ``(a, b)``: images are keys ``1 .. a-1``
  and keys ``a .. b-1`` are one record per identity whose label is its (first, end) image key.

Pure Python: no TensorFlow here (the tf.data pipeline is in :mod:`keras_facemargin.data.pipeline`).
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LEN_MASK = (1 << 29) - 1
_HEADER = struct.Struct("<IfQQ")


@dataclass(frozen=True)
class IRHeader:
    """The image-record header of MXNet's ``recordio.pack``.

    Args:
        flag: 0 for a scalar label, else the number of float labels that follow the header.
        label: the label(s), a tuple of floats (one value when ``flag == 0``).
        id: record id.
        id2: second id (unused by insightface).

    Returns:
        A frozen record.

    Example:

    >>> from keras_facemargin.data.recordio import IRHeader
    >>> IRHeader(0, (3.0,), 1, 0).label
    (3.0,)
    """

    flag: int
    label: tuple
    id: int = 0
    id2: int = 0


def pack(header: IRHeader, payload: bytes) -> bytes:
    """Serialize an image record (``IRHeader`` + extra labels + payload), as ``mx.recordio.pack``.

    Args:
        header: the header; with ``flag > 0`` its ``label`` tuple is written after the header.
        payload: the encoded image.

    Returns:
        The record bytes.

    Example:

    >>> from keras_facemargin.data.recordio import IRHeader, pack, unpack
    >>> unpack(pack(IRHeader(0, (7.0,), 1), b"jpeg"))[0].label
    (7.0,)
    """
    if header.flag > 0:
        if len(header.label) != header.flag:
            raise ValueError(f"`header.label` must hold `flag`={header.flag} values. "
                             f"Received: {len(header.label)} values")
        head = _HEADER.pack(header.flag, 0.0, header.id, header.id2)
        head += struct.pack(f"<{header.flag}f", *header.label)
    else:
        head = _HEADER.pack(0, float(header.label[0]), header.id, header.id2)
    return head + bytes(payload)


def unpack(record: bytes) -> tuple[IRHeader, bytes]:
    """Parse an image record into ``(IRHeader, payload)`` (the inverse of :func:`pack`).

    Args:
        record: bytes of one record as returned by :meth:`RecordIOReader.read`.

    Returns:
        ``(header, payload)``.

    Example:

    >>> from keras_facemargin.data.recordio import IRHeader, pack, unpack
    >>> unpack(pack(IRHeader(2, (1.0, 5.0)), b""))[0].label
    (1.0, 5.0)
    """
    if len(record) < _HEADER.size:
        raise ValueError(f"`record` is too short for an IRHeader ({_HEADER.size} bytes). "
                         f"Received: {len(record)} bytes")
    flag, label, rid, rid2 = _HEADER.unpack_from(record)
    offset = _HEADER.size
    if flag > 0:
        end = offset + 4 * flag
        if end > len(record):
            raise ValueError(f"`record` header announces {flag} labels but holds "
                             f"{(len(record) - offset) // 4}")
        labels = struct.unpack_from(f"<{flag}f", record, offset)
        return IRHeader(flag, tuple(labels), rid, rid2), record[end:]
    return IRHeader(0, (label,), rid, rid2), record[offset:]


def _integer(value: float, what: str) -> int:
    """``value`` as an int; a fraction, NaN or Inf is refused (``what`` names file and record)."""
    if not math.isfinite(value) or value != int(value):
        raise ValueError(f"{what}: a label must be a whole number. Received: label={value!r}")
    return int(value)


def _split(payload: bytes) -> list[bytes]:
    """Split at 4-aligned occurrences of the magic (dmlc-core's writer)."""
    parts, start = [], 0
    for i in range(0, len(payload) - 3, 4):
        if payload[i:i + 4] == _MAGIC_BYTES:
            parts.append(payload[start:i])
            start = i + 4
    parts.append(payload[start:])
    return parts


def _frame(payload: bytes) -> bytes:
    parts = _split(payload)
    out = bytearray()
    for n, part in enumerate(parts):
        if len(parts) == 1:
            cflag = 0
        else:
            cflag = 1 if n == 0 else (3 if n == len(parts) - 1 else 2)
        out += _MAGIC_BYTES + struct.pack("<I", (cflag << 29) | len(part)) + part
        out += b"\0" * (-len(part) % 4)
    return bytes(out)


def write_recordio(rec_path: str | os.PathLike, idx_path: str | os.PathLike,
                   records: Iterable[tuple[int, bytes]]) -> int:
    """Write ``(key, record bytes)`` pairs to a ``.rec`` and its ``.idx``, atomically.

    Both files are written to temporary names in their folders and renamed at the end, so an
    interrupted write leaves no half-written dataset.

    Args:
        rec_path: path of the ``.rec`` file.
        idx_path: path of the ``.idx`` file.
        records: ``(key, bytes)``; use :func:`pack` for image records.

    Returns:
        The number of records written.

    Example:

    >>> import tempfile, os
    >>> from keras_facemargin.data.recordio import IRHeader, pack, write_recordio
    >>> d = tempfile.mkdtemp()
    >>> write_recordio(os.path.join(d, "t.rec"), os.path.join(d, "t.idx"),
    ...                [(1, pack(IRHeader(0, (0.0,), 1), b"jpeg"))])
    1
    """
    rec_path, idx_path = os.fspath(rec_path), os.fspath(idx_path)
    tmps = []
    try:
        for path in (rec_path, idx_path):
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                                       prefix=f".{os.path.basename(path)}.")
            os.close(fd)
            tmps.append(tmp)
        count = 0
        with open(tmps[0], "wb") as rec, open(tmps[1], "w") as idx:
            for key, data in records:
                idx.write(f"{int(key)}\t{rec.tell()}\n")
                rec.write(_frame(bytes(data)))
                count += 1
        os.replace(tmps[0], rec_path)
        os.replace(tmps[1], idx_path)
        return count
    finally:
        for tmp in tmps:
            if os.path.exists(tmp):
                os.unlink(tmp)


class RecordIOReader:
    """Random access to an insightface ``train.rec`` through its ``train.idx``.

    Args:
        rec_path: the ``.rec`` file.
        idx_path: the ``.idx`` file. Defaults to `rec_path` with the suffix ``.idx``.

    Returns:
        A reader; ``image_keys`` lists the image records, ``label(key)`` / ``read_image(key)``
        give an image's identity and encoded bytes.

    Example:

    >>> from keras_facemargin.data.recordio import RecordIOReader
    >>> reader = RecordIOReader("faces_emore/train.rec")  # doctest: +SKIP
    >>> header, jpeg = reader.read_image(reader.image_keys[0])  # doctest: +SKIP
    """

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None):
        self.rec_path = os.fspath(rec_path)
        self.idx_path = (os.path.splitext(self.rec_path)[0] + ".idx" if idx_path is None
                         else os.fspath(idx_path))
        for name, path in (("rec_path", self.rec_path), ("idx_path", self.idx_path)):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"`{name}` must be an existing file. Received: {name}={path!r}")
        self._size = os.path.getsize(self.rec_path)
        self._offsets = self._read_idx()
        if not self._offsets:
            raise ValueError(f"The RecordIO index is empty: no records. Received: "
                             f"idx_path={self.idx_path!r}")
        self._file = None
        self._check_offsets()
        self.identity_ranges: dict[int, tuple[int, int]] | None = None
        header, _ = self._header_record()
        if header is not None:
            what = f"{self.rec_path} record 0 (header)"
            first_id = _integer(header.label[0], what)
            end_id = _integer(header.label[1], what)
            # sizes checked against the files before anything is allocated: every announced
            # record needs an .idx line and at least 8 bytes of the .rec
            announced = end_id - 1
            if announced > len(self._offsets) or 8 * announced > self._size:
                raise ValueError(
                    f"{what} announces {first_id - 1} images and {end_id - first_id} identities "
                    f"({announced} records), but the .idx lists {len(self._offsets)} records "
                    f"and the .rec holds {self._size} bytes (each record needs at least 8). The "
                    f"header is corrupt or the files are truncated: rec_path={self.rec_path!r}, "
                    f"idx_path={self.idx_path!r}")
            keys = list(range(1, first_id))
            missing = [k for k in range(1, end_id) if k not in self._offsets]
            if missing:
                raise ValueError(f"The .rec header (record 0) announces images 1..{first_id - 1} "
                                 f"and identities {first_id}..{end_id - 1}, but the .idx lacks "
                                 f"{len(missing)} of these keys (first: {missing[0]}). The .rec "
                                 f"and .idx disagree: rec_path={self.rec_path!r}, "
                                 f"idx_path={self.idx_path!r}")
            self.image_keys = keys
            self.num_classes: int | None = end_id - first_id
            self._identity_keys = range(first_id, end_id)
        else:
            self.image_keys = sorted(self._offsets)
            self.num_classes = None
            self._identity_keys = range(0)
        if not self.image_keys:
            raise ValueError(f"The RecordIO dataset holds no image. Received: rec_path={self.rec_path!r}")

    def _read_idx(self) -> dict[int, int]:
        offsets = {}
        with open(self.idx_path, encoding="ascii", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                fields = line.split()
                try:
                    key, pos = int(fields[0]), int(fields[1])
                except (IndexError, ValueError):
                    raise ValueError(f"`idx_path` line {n} must be 'key<TAB>offset'. "
                                     f"Received: {line.strip()!r} in {self.idx_path!r}") from None
                offsets[key] = pos
        return offsets

    def _check_offsets(self) -> None:
        bad = [(k, p) for k, p in self._offsets.items() if p < 0 or p + 8 > self._size or p % 4]
        if bad:
            raise ValueError(f"The .rec and .idx disagree: {len(bad)} offsets of the .idx fall "
                             f"outside the {self._size}-byte .rec or off the 4-byte grid "
                             f"(first: key {bad[0][0]} at {bad[0][1]}). Received: "
                             f"rec_path={self.rec_path!r}, idx_path={self.idx_path!r}")
        keys = sorted(self._offsets)
        probe = keys if len(keys) <= 100_000 else keys[:: len(keys) // 1000] + keys[-1:]
        with open(self.rec_path, "rb") as f:
            for key in probe:
                f.seek(self._offsets[key])
                if f.read(4) != _MAGIC_BYTES:
                    raise ValueError(
                        f"The .rec and .idx disagree: key {key} points at byte "
                        f"{self._offsets[key]}, which is not the start of a record (no magic "
                        f"0x{MAGIC:08x}). Received: rec_path={self.rec_path!r}, "
                        f"idx_path={self.idx_path!r}")

    def _header_record(self):
        if 0 not in self._offsets:
            return None, None
        header, payload = unpack(self.read(0))
        if header.flag >= 2 and header.label[0] >= 1 and header.label[1] >= header.label[0]:
            return header, payload
        return None, None

    def __len__(self) -> int:
        return len(self.image_keys)

    def __getstate__(self):  # picklable for tf.data / multiprocessing: reopen lazily
        state = dict(self.__dict__)
        state["_file"] = None
        return state

    def close(self) -> None:
        """Close the underlying file (it reopens on the next read)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def read(self, key: int) -> bytes:
        """The bytes of record ``key`` (parts of a split record joined, padding removed).

        Raises ``KeyError`` for a key absent from the ``.idx`` and ``ValueError`` when the bytes
        at the indexed offset are not a record.
        """
        if key not in self._offsets:
            raise KeyError(f"`key` must be a key of {self.idx_path!r}. Received: key={key!r}")
        if self._file is None:
            self._file = open(self.rec_path, "rb")
        f = self._file
        f.seek(self._offsets[key])
        out = bytearray()
        while True:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"Truncated record {key} in {self.rec_path!r}")
            magic, lrec = struct.unpack("<II", head)
            if magic != MAGIC:
                raise ValueError(f"The .rec and .idx disagree: no record magic for key {key} at "
                                 f"byte {f.tell() - 8} of {self.rec_path!r}")
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            data = f.read(length)
            if len(data) < length:
                raise ValueError(f"Truncated record {key} in {self.rec_path!r}")
            f.read(-length % 4)
            if cflag in (2, 3):
                out += _MAGIC_BYTES
            out += data
            if cflag in (0, 3):
                return bytes(out)

    def read_image(self, key: int) -> tuple[IRHeader, bytes]:
        """``(IRHeader, encoded image)`` of image record ``key``."""
        try:
            return unpack(self.read(key))
        except ValueError as err:
            if self.rec_path in str(err):
                raise
            raise ValueError(f"{self.rec_path} record {key}: {err}") from None

    def label(self, key: int) -> int:
        """The integer identity of image record ``key`` (first label value).

        Raises ``ValueError`` naming the file and record when the label is not a whole number.
        """
        return _integer(self.read_image(key)[0].label[0], f"{self.rec_path} record {key}")

    def labels(self) -> list[int]:
        """The identity of every image record, in ``image_keys`` order.

        With insightface's header, read from the identity records (one read per identity);
        otherwise from each image's header.
        """
        if self._identity_keys:
            out = {}
            for ident, key in enumerate(self._identity_keys):
                label = self.read_image(key)[0].label
                what = f"{self.rec_path} record {key} (identity {ident})"
                if len(label) < 2:
                    raise ValueError(f"{what}: an identity record holds (first, end) image "
                                     f"keys. Received: label={label!r}")
                start, end = (_integer(v, what) for v in label[:2])
                if not 1 <= start <= end <= len(self.image_keys) + 1:
                    raise ValueError(f"{what}: image keys [{start}, {end}) lie outside the "
                                     f"images 1..{len(self.image_keys)}")
                for image_key in range(start, end):
                    out[image_key] = ident
            if len(out) == len(self.image_keys):
                return [out[k] for k in self.image_keys]
        return [self.label(k) for k in self.image_keys]


def identity_records(first_key: int, ranges: Sequence[tuple[int, int]]) -> list[tuple[int, bytes]]:
    """insightface's header record 0 and identity records for a dataset with image keys 1..N.

    Args:
        first_key: the first identity key, N + 1.
        ranges: for each identity, ``(first image key, end image key)``.

    Returns:
        ``[(0, header record), (first_key, identity 0), ...]`` ready for :func:`write_recordio`.

    Example:

    >>> from keras_facemargin.data.recordio import identity_records
    >>> [k for k, _ in identity_records(3, [(1, 2), (2, 3)])]
    [0, 3, 4]
    """
    out = [(0, pack(IRHeader(2, (float(first_key), float(first_key + len(ranges)))), b""))]
    for n, (start, end) in enumerate(ranges):
        out.append((first_key + n, pack(IRHeader(2, (float(start), float(end))), b"")))
    return out
