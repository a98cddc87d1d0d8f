"""The ONNX backend of the runtime: an onnxruntime session (CPU)."""

from __future__ import annotations

import os

import numpy as np

from keras_facemargin.runtime.metadata import KEY


def runtime_version() -> str | None:
    """Installed onnxruntime version (None if not installed)."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return str(onnxruntime.__version__)


class ONNXBackend:
    """Runs a ``.onnx`` file with onnxruntime's CPU provider."""

    def __init__(self, path: str, num_threads: int | None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError("Running a .onnx model needs onnxruntime "
                              "(pip install onnxruntime).") from None
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own Fail / InvalidProtobuf types
            raise ValueError(f"{path!r} is not a loadable ONNX model: {err}") from None
        self.input = self.session.get_inputs()[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else -1 for d in self.input.shape[1:])

    @property
    def input_dtype(self) -> str:
        return "float32"

    @property
    def output_size(self) -> int:
        size = self.session.get_outputs()[0].shape[-1]
        return size if isinstance(size, int) else -1

    def metadata(self) -> str | None:
        return self.session.get_modelmeta().custom_metadata_map.get(KEY)

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input.name: x.astype(np.float32)})[0],
                          np.float32)


#: (onnxruntime release, highest ONNX opset, highest IR version) it implements, from
#: onnxruntime's published compatibility matrix (onnxruntime.ai/docs/reference/compatibility).
ORT_SUPPORT = (
    ("1.10", 15, 8), ("1.11", 16, 8), ("1.12", 17, 8), ("1.14", 18, 8), ("1.15", 19, 9),
    ("1.17", 20, 9), ("1.18", 21, 10), ("1.21", 22, 10), ("1.22", 22, 11),
)


def min_onnxruntime(opset: int, ir_version: int) -> str | None:
    """The oldest onnxruntime release that implements ``opset`` and reads ``ir_version``
    (None when newer than the table)."""
    for release, max_opset, max_ir in ORT_SUPPORT:
        if opset <= max_opset and ir_version <= max_ir:
            return release
    return None


def _varint(data, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated protobuf varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("malformed protobuf varint")


def _fields(data, start: int, end: int):
    """``(field number, wire type, value)`` of a protobuf message in ``data[start:end]``;
    length-delimited values as ``(offset, length)``, the rest as integers."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > end:
                raise ValueError("a protobuf field runs past the end of the file")
            value, pos = (pos, length), pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = int.from_bytes(data[pos:pos + size], "little"), pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def read_header(data) -> dict:
    """IR version, opsets and ``metadata_props`` of a serialized ``onnx.ModelProto``, read
    without onnx or onnxruntime (``ModelProto``: ir_version = 1, opset_import = 8,
    metadata_props = 14; ``OperatorSetIdProto``: domain = 1, version = 2;
    ``StringStringEntryProto``: key = 1, value = 2). The graph is skipped, not parsed.

    Raises:
        ValueError: not a well-formed protobuf.
    """
    ir_version, opsets, metadata = 0, {}, {}

    def text(span) -> str:
        return bytes(data[span[0]:span[0] + span[1]]).decode("utf-8", "replace")

    for number, wire, value in _fields(data, 0, len(data)):
        if number == 1 and wire == 0:
            ir_version = value
        elif number in (8, 14) and wire == 2:
            sub = dict((n, v) for n, _, v in _fields(data, value[0], value[0] + value[1]))
            if number == 8:
                opsets[text(sub[1]) if 1 in sub else ""] = int(sub.get(2, 0))
            else:
                metadata[text(sub[1]) if 1 in sub else ""] = text(sub[2]) if 2 in sub else ""
    return {"ir_version": ir_version, "opsets": opsets, "metadata": metadata}


def read_file_header(path: str) -> dict:
    """:func:`read_header` of a ``.onnx`` file, through a memory map."""
    import mmap

    with open(path, "rb") as f:
        if not os.fstat(f.fileno()).st_size:
            raise ValueError("the file is empty")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return read_header(data)
