"""Read the metadata list of a ``.tflite`` flatbuffer in pure Python (no TensorFlow).

The TFLite ``Model`` table (schema.fbs) holds ``buffers: [Buffer]`` (field 4) and
``metadata: [Metadata]`` (field 6); a ``Metadata`` is ``{name: string, buffer: uint}`` and a
``Buffer`` holds ``data: [ubyte]`` (field 0), or, for models stored with external buffers,
``offset: ulong`` (field 1) and ``size: ulong`` (field 2) relative to the file start.
"""

from __future__ import annotations

import struct

IDENTIFIER = b"TFL3"
MODEL_BUFFERS, MODEL_METADATA = 4, 6


class FlatbufferError(ValueError):
    """The bytes are not a well-formed TFLite flatbuffer."""


class _Reader:
    def __init__(self, data: bytes):
        self.data = data

    def _unpack(self, fmt: str, pos: int):
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self.data):
            raise FlatbufferError(f"offset {pos} out of range (file has {len(self.data)} bytes)")
        return struct.unpack_from(fmt, self.data, pos)[0]

    def u32(self, pos: int) -> int:
        return self._unpack("<I", pos)

    def field(self, table: int, index: int) -> int | None:
        """Absolute position of field ``index`` of the table at ``table``, or None if absent."""
        vtable = table - self._unpack("<i", table)
        vtable_size = self._unpack("<H", vtable)
        slot = 4 + 2 * index
        if slot + 2 > vtable_size:
            return None
        offset = self._unpack("<H", vtable + slot)
        return table + offset if offset else None

    def indirect(self, pos: int) -> int:
        return pos + self.u32(pos)

    def vector(self, pos: int) -> tuple[int, int]:
        """(start of the elements, length) of the vector referenced at ``pos``."""
        start = self.indirect(pos)
        return start + 4, self.u32(start)

    def tables(self, pos: int) -> list[int]:
        start, length = self.vector(pos)
        return [self.indirect(start + 4 * i) for i in range(length)]

    def bytes(self, pos: int) -> bytes:
        start, length = self.vector(pos)
        if start + length > len(self.data):
            raise FlatbufferError("a byte vector runs past the end of the file")
        return self.data[start:start + length]


def read_metadata(data: bytes) -> dict[str, bytes]:
    """All ``{name: bytes}`` entries of a TFLite model's metadata list (``data``: the file's
    bytes, or any buffer that slices to bytes, such as an ``mmap``).

    Raises:
        FlatbufferError: not a TFLite flatbuffer (identifier) or truncated.
    """
    if len(data) < 8 or data[4:8] != IDENTIFIER:
        raise FlatbufferError("not a TFLite model (no 'TFL3' file identifier)")
    reader = _Reader(data)
    model = reader.indirect(0)
    buffers_field = reader.field(model, MODEL_BUFFERS)
    metadata_field = reader.field(model, MODEL_METADATA)
    if metadata_field is None:
        return {}
    buffers = reader.tables(buffers_field) if buffers_field is not None else []
    out = {}
    for entry in reader.tables(metadata_field):
        name_pos, buffer_pos = reader.field(entry, 0), reader.field(entry, 1)
        if name_pos is None or buffer_pos is None:
            continue
        name = reader.bytes(name_pos).decode("utf-8", "replace")
        index = reader.u32(buffer_pos)
        if index >= len(buffers):
            raise FlatbufferError(f"metadata {name!r} points at a missing buffer {index}")
        buffer = buffers[index]
        data_pos = reader.field(buffer, 0)
        if data_pos is not None:
            out[name] = reader.bytes(data_pos)
            continue
        offset_pos, size_pos = reader.field(buffer, 1), reader.field(buffer, 2)
        if offset_pos is not None and size_pos is not None:
            offset, size = reader._unpack("<Q", offset_pos), reader._unpack("<Q", size_pos)
            if offset + size > len(data):
                raise FlatbufferError(f"metadata {name!r} runs past the end of the file")
            out[name] = data[offset:offset + size]
        else:
            out[name] = b""
    return out
