"""The TFLite backend of the runtime: the interpreter (LiteRT or the legacy tflite-runtime) and a
pure-Python reader of the flatbuffer's metadata list (no TensorFlow).

The TFLite ``Model`` table (schema.fbs) holds ``buffers: [Buffer]`` (field 4) and
``metadata: [Metadata]`` (field 6); a ``Metadata`` is ``{name: string, buffer: uint}`` and a
``Buffer`` holds ``data: [ubyte]`` (field 0), or, for models stored with external buffers,
``offset: ulong`` (field 1) and ``size: ulong`` (field 2) relative to the file start.
"""

from __future__ import annotations

import mmap
import os
import struct

import numpy as np

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


def read_file_metadata(path: str) -> dict[str, bytes]:
    """The metadata entries of a .tflite file, read through a memory map (a large model is not
    copied into memory only to find a few hundred bytes of JSON)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise FlatbufferError("the file is empty")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return read_metadata(data)


def interpreter_module() -> tuple[str, object]:
    """``(backend name, module)`` of the installed TFLite interpreter: LiteRT first."""
    try:
        import ai_edge_litert.interpreter as module

        return "litert", module
    except ImportError:
        pass
    try:
        import tflite_runtime.interpreter as module

        return "tflite_runtime", module
    except ImportError:
        raise ImportError(
            "Running a .tflite model needs ai-edge-litert (pip install ai-edge-litert) or the "
            "legacy tflite-runtime."
        ) from None


def runtime_version(name: str) -> str | None:
    """Installed version of ``ai-edge-litert`` / ``tflite-runtime`` (None if unknown)."""
    from importlib import metadata

    package = {"litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}[name]
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


class TFLiteBackend:
    """Runs a ``.tflite`` file; resizes the batch dimension on demand (dynamic-batch files)."""

    def __init__(self, path: str, num_threads: int | None, module=None):
        if module is None:
            _, module = interpreter_module()
        try:
            self.interpreter = module.Interpreter(model_path=path, num_threads=num_threads)
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"{path!r} is not a loadable TFLite model: {err}") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.input["shape_signature"][1:])

    @property
    def input_dtype(self) -> str:
        return np.dtype(self.input["dtype"]).name

    @property
    def output_size(self) -> int:
        return int(self.output["shape_signature"][-1])

    def run(self, x: np.ndarray) -> np.ndarray:
        if self.batch != len(x):
            self.interpreter.resize_tensor_input(self.input["index"], [len(x), *x.shape[1:]])
            self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]
            self.batch = len(x)
        scale, zero = self.input.get("quantization", (0.0, 0))
        if np.issubdtype(np.dtype(self.input["dtype"]), np.integer):
            info = np.iinfo(self.input["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        self.interpreter.set_tensor(self.input["index"], x.astype(self.input["dtype"]))
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])
        scale, zero = self.output.get("quantization", (0.0, 0))
        if np.issubdtype(y.dtype, np.integer):
            y = (y.astype(np.float32) - zero) * scale
        return np.asarray(y, np.float32)
