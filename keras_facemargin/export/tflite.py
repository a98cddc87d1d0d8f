"""Export an embedding model to TFLite (builtin ops only), verified, with metadata."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable

import keras
import numpy as np
import tensorflow as tf

from keras_facemargin._checks import check_choice
from keras_facemargin.export import _common, tflite_metadata
from keras_facemargin.export._common import ConversionError
from keras_facemargin.export._pipeline import Converted, Converter, export
from keras_facemargin.export.verify import ExportReport
from keras_facemargin.preprocessing import Normalization
from keras_facemargin.runtime.metadata import KEY, ModelMetadata

QUANTIZATIONS = (None, "float16", "dynamic", "int8")
IO_DTYPES = ("float32", "uint8", "int8")
BATCH_SIZES = (None, 1)
#: ``(ai-edge-litert release, newest TensorFlow Lite runtime version whose operator versions it
#: loads)``, oldest first. Checked by loading files that need each runtime version in a
#: separate environment with that ai-edge-litert release (docs/export.md, "TFLite clients").
LITERT_RUNTIME = (("1.0", (2, 17)), ("2.3", (2, 21)))
#: the pixel range an integer input tensor covers exactly (scale 1: one step per grey level)
PIXEL_RANGE = (0.0, 255.0)


def _frozen_function(model: keras.Model, batch_size: int | None = None):
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    serve = _common.serving_function(model, batch_size)
    return convert_variables_to_constants_v2(serve.get_concrete_function())


def _explain(err: Exception, function=None) -> str:
    text = str(err)
    ops = sorted(set(re.findall(r"'(tf\.[A-Za-z0-9_]+)'", text)) | set(
        re.findall(r"\b(tf\.[A-Z][A-Za-z0-9_]+)\b", text)))
    layers = []
    if function is not None and ops:  # the frozen graph still has the layers' name scopes
        kinds = {op[3:] for op in ops}
        for node in function.graph.as_graph_def().node:
            if node.op in kinds:
                scopes = node.name.split("/")[:-1]
                layers.append("/".join(scopes[-2:]) if scopes else node.name)
        layers = sorted(set(layers))
    parts = []
    if ops:
        parts.append(f"ops without a builtin TFLite kernel: {', '.join(ops)}")
    if layers:
        parts.append(f"in layer(s): {', '.join(layers)}")
    detail = "; ".join(parts) if parts else text.strip().splitlines()[-1][:500]
    return f"TFLite conversion failed ({detail}). Only builtin ops are allowed (no Flex)."


def op_names(data: bytes) -> list[str]:
    """Names of the operators a TFLite flatbuffer uses (builtin names, or custom codes)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    names = []
    for code in model.operatorCodes:
        if code.customCode:
            names.append(code.customCode.decode() if isinstance(code.customCode, bytes)
                         else str(code.customCode))
        else:
            names.append(builtin.get(max(code.builtinCode, code.deprecatedBuiltinCode),
                                     str(code.builtinCode)))
    return sorted(set(names))


def add_metadata(data: bytes, text: str, entries: dict[str, bytes] | None = None) -> bytes:
    """Append ``{KEY: text}`` and ``entries`` (name -> bytes) to the flatbuffer's metadata list
    (as the converter's CONVERSION_METADATA is), replacing entries of the same names."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    new = {KEY: text.encode("utf-8"), **(entries or {})}
    names = set(new) | {name.encode() for name in new}
    model.metadata = [m for m in (model.metadata or []) if m.name not in names]
    for name, value in new.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(bytes(value), np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = name
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    return serialize(model)


def _sharing_builder():
    """A flatbuffers ``Builder`` that writes each distinct numeric vector once.

    Flatbuffer tables refer to vectors by offset, so tables may share one (as the C++
    ``CreateSharedString`` does for strings). The converter writes, for every per-channel
    quantized tensor, an int64 zero-point vector of zeros (weights and biases are symmetric):
    on MobileFaceNet they are 164 kB of a 1.54 MB int8 file. Shared, each distinct vector is
    stored once; the values every reader gets are the same. Weight buffers (uint8) are not
    shared.
    """
    import flatbuffers

    class SharingBuilder(flatbuffers.Builder):
        def __init__(self, size):
            super().__init__(size)
            self._shared = {}

        def CreateNumpyVector(self, x):  # noqa: N802 (flatbuffers' name)
            if not isinstance(x, np.ndarray) or x.dtype == np.uint8 or x.ndim != 1:
                return super().CreateNumpyVector(x)
            key = (x.dtype.str, x.tobytes())
            if key not in self._shared:
                self._shared[key] = super().CreateNumpyVector(x)
            return self._shared[key]

    return SharingBuilder(1024)


def serialize(model) -> bytes:
    """The ``.tflite`` bytes of a flatbuffer object model (``schema.ModelT``), identical
    numeric vectors (zero points, scales, shapes) written once (see ``_sharing_builder``)."""
    builder = _sharing_builder()
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _quantize_with_input_range(calibrated: bytes, input_range: tuple[float, float],
                               dtype) -> bytes:
    """Quantize a calibrated model (``_experimental_calibrate_only``) after setting the
    recorded range of its input tensor to ``input_range``.

    The calibrator records the min/max the representative images reached; the quantizer maps
    that range onto the 256 integer levels. Set to the full pixel range (0, 255) it gives the
    input tensor scale 1 and zero point 0 (uint8) or -128 (int8): every pixel value is a grid
    point, whatever the calibration images hold.
    """
    from tensorflow.lite.python.convert import mlir_quantize
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(calibrated))
    graph = model.subgraphs[0]
    stats = graph.tensors[graph.inputs[0]].quantization
    stats.min = np.array([input_range[0]], np.float32)
    stats.max = np.array([input_range[1]], np.float32)
    data = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    return mlir_quantize(data, input_data_type=dtype, output_data_type=dtype)


def convert(model: keras.Model, quantization: str | None = None,
            representative_data: np.ndarray | None = None, int8_io: bool = False, *,
            io_dtype: str | None = None, batch_size: int | None = None,
            input_range: tuple[float, float] | None = None) -> bytes:
    """The TFLite flatbuffer of ``model`` (no verification, no metadata).

    Args:
        model: the embedding model (float input).
        quantization: see :func:`to_tflite`.
        representative_data: calibration inputs of ``model`` for ``"int8"``.
        int8_io: same as ``io_dtype="int8"``.
        io_dtype: type of the input and output tensors of a full-integer model:
            ``"float32"``, ``"uint8"`` or ``"int8"``. Defaults to `None` (float32).
        batch_size: `None` (dynamic batch) or a fixed batch. Defaults to `None`.
        input_range: ``(min, max)`` the integer input tensor covers, instead of the range the
            calibration images reached. Defaults to `None`.
    """
    io_dtype = io_dtype or ("int8" if int8_io else "float32")
    function = _frozen_function(model, batch_size)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    dtype = None
    if quantization == "int8":
        samples = representative_data

        def representative():
            for image in samples:
                yield [image[None].astype(np.float32)]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_dtype != "float32":
            dtype = tf.as_dtype(io_dtype)
            converter.inference_input_type = dtype
            converter.inference_output_type = dtype
            if input_range is not None:
                converter._experimental_calibrate_only = True
    try:
        data = converter.convert()
        if dtype is not None and input_range is not None:
            data = _quantize_with_input_range(data, input_range, dtype)
    except Exception as err:  # ConverterError and friends
        raise ConversionError(_explain(err, function)) from err
    custom = [name for name in op_names(data) if not name.isupper()]
    if custom:
        raise ConversionError(f"the converted model uses non-builtin ops {custom}; they do not "
                              "run on a stock TFLite runtime.")
    return data


def min_runtime(data: bytes) -> dict[str, str]:
    """The oldest runtimes that load the TFLite model ``data``, as ``{"litert": "x.y",
    "tflite_runtime": "x.y"}``.

    ``tflite_runtime`` is the converter's ``min_runtime_version`` entry (TensorFlow's table of
    the first runtime release that has each operator version the file uses, e.g.
    ``FULLY_CONNECTED`` v12 of a dynamic-range model -> 2.17; the legacy ``tflite-runtime``
    wheels follow TensorFlow's numbering and stop at 2.14). ``litert`` is the first
    ``ai-edge-litert`` release whose runtime includes that TensorFlow release (see
    :data:`LITERT_RUNTIME`).

    Raises:
        ValueError: the file has no ``min_runtime_version`` entry (not written by the
            TensorFlow converter).
    """
    from keras_facemargin.runtime._tflite import read_metadata

    raw = read_metadata(data).get("min_runtime_version")
    if not raw:
        raise ValueError("the TFLite model has no 'min_runtime_version' metadata entry.")
    text = bytes(raw).split(b"\0")[0].decode("ascii")
    major, minor = (int(part) for part in text.split(".")[:2])
    litert = next((release for release, runtime in LITERT_RUNTIME
                   if (major, minor) <= runtime), None)
    if litert is None:
        raise ValueError(f"no known ai-edge-litert release runs TFLite {major}.{minor} ops; "
                         f"extend LITERT_RUNTIME. Received: min_runtime_version={text!r}")
    return {"litert": litert, "tflite_runtime": f"{major}.{minor}"}


def run_tflite(path: str, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Embeddings of normalized float images by the TFLite model at ``path`` (LiteRT)."""
    from keras_facemargin.runtime import Embedder

    images = np.asarray(images)
    # normalized floats, or the 0-255 pixels of a file whose graph normalizes (integer input)
    return Embedder.open(path).embed(images, batch_size=batch_size,
                                     normalized=images.dtype != np.uint8)


def _pixel_model(net: keras.Model, mean: float, std: float) -> keras.Model:
    """``net`` behind its own input normalization: takes 0-255 pixels (as floats)."""
    shape = _common.input_shape(net)
    pixels = keras.Input(shape, name="pixels")
    normalized = keras.layers.Rescaling(1.0 / std, offset=-mean / std, name="normalize")(pixels)
    return keras.Model(pixels, net(normalized), name=f"{net.name}_pixels")


def _to_pixels(normalized: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 pixels of normalized images (the inverse of ``(pixel - mean) / std``, rounded)."""
    return np.clip(np.round(normalized * std + mean), 0, 255).astype(np.uint8)


def _description(meta: ModelMetadata, io_dtype: str, batch_size: int | None,
                 needs: dict[str, str]) -> tuple[str, str]:
    head = meta.training_head.get("class_name", "no margin head")
    h, w, _ = meta.input_shape
    batch = "a dynamic batch" if batch_size is None else f"a fixed batch of {batch_size}"
    model = (f"Face embedding model exported by keras_facemargin {meta.package_version}: "
             f"{h}x{w} RGB face crops ({io_dtype}, {batch}) -> {meta.embedding_size}-d embedding. "
             f"Trained with {head}; weights {meta.quantization or 'float32'}. Needs LiteRT >= "
             f"{needs['litert']} or tflite-runtime >= {needs['tflite_runtime']}.")
    if meta.normalize_on_host:
        norm = ("not L2-normalized in the graph (full-integer model): divide by its L2 norm "
                "before comparing")
    elif meta.l2_normalized:
        norm = "L2-normalized"
    else:
        norm = "not L2-normalized"
    output = (f"{meta.embedding_size}-d face embedding, {norm}; compare two faces by the "
              "cosine similarity of their embeddings.")
    return model, output


class TFLiteConverter(Converter):
    """The TFLite step of :func:`~keras_facemargin.export._pipeline.export`: builtin ops only,
    the package's and the standard TFLite metadata, run with LiteRT through the runtime.

    Args:
        quantization: `None`, ``"float16"``, ``"dynamic"`` or ``"int8"``.
        io_dtype: the input and output tensor type (``"float32"``, or for ``"int8"`` also
            ``"uint8"`` or ``"int8"``: the graph then normalizes the pixels itself).
        batch_size: `None` (dynamic batch) or ``1``.
        l2_normalize: the embedding is L2-normalized: in the graph, or on the host for a
            full-integer model.
    """

    format = "tflite"
    calibration_argument = "`representative_data` (calibration images)"

    def __init__(self, quantization: str | None, *, io_dtype: str = "float32",
                 batch_size: int | None = None, l2_normalize: bool = True):
        # a full-integer graph would emit an int8 unit vector (1/128 steps on components of
        # about 1/sqrt(D)): the L2 normalization then runs on the host, in float
        host_norm = quantization == "int8" and l2_normalize
        super().__init__(quantization, l2_normalize=l2_normalize and not host_norm,
                         normalize_on_host=host_norm)
        self.io_dtype = io_dtype
        self.batch_size = batch_size

    def convert(self, net: keras.Model, head: keras.layers.Layer | None,
                calibration: np.ndarray | None, held: np.ndarray,
                normalization: Normalization) -> Converted:
        """The ``.tflite`` bytes of ``net`` with both metadata entries (see
        :meth:`Converter.convert`); an integer-input file takes the held-out images as uint8
        pixels, and its reference is computed on those pixels normalized again."""
        meta = _common.metadata(net, head, self.quantization, self.io_dtype,
                                normalize_on_host=self.normalize_on_host,
                                normalization=normalization)
        extra = {}
        if self.io_dtype == "float32":
            data = convert(net, self.quantization, calibration, batch_size=self.batch_size)
            run_on = held
        else:  # the graph normalizes: the integer input tensor holds the pixels themselves
            mean, std = meta.mean, meta.std
            data = convert(_pixel_model(net, mean, std), self.quantization,
                           calibration * std + mean, io_dtype=self.io_dtype,
                           batch_size=self.batch_size, input_range=PIXEL_RANGE)
            run_on = _to_pixels(held, mean, std)
            held = (run_on.astype(np.float32) - mean) / std
            extra["normalization_in_graph"] = {"mean": mean, "std": std}
            meta = dataclasses.replace(meta, mean=0.0, std=1.0)
        return Converted(self._with_metadata(data, meta, extra), run_on, held)

    def _with_metadata(self, data: bytes, meta: ModelMetadata, extra: dict) -> bytes:
        """``data`` with the package's entry (``meta``, ``extra``, the runtimes the file
        needs, the batch size) and the standard TFLite Model Metadata."""
        needs = min_runtime(data)
        meta = dataclasses.replace(meta, min_runtime=needs)
        entry = {**json.loads(meta.to_json()), **extra, "min_runtime": needs,
                 "batch_size": self.batch_size}
        model_text, output_text = _description(meta, self.io_dtype, self.batch_size, needs)
        tensor_mean, tensor_std = tflite_metadata.tensor_normalization(
            meta.mean, meta.std, self.io_dtype,
            normalization_in_graph=self.io_dtype != "float32")
        standard = tflite_metadata.build(
            name="keras_facemargin face embedding", description=model_text,
            version=meta.package_version, height=meta.input_shape[0],
            width=meta.input_shape[1], embedding_size=meta.embedding_size, mean=tensor_mean,
            std=tensor_std, output_description=output_text)
        return add_metadata(data, json.dumps(entry, sort_keys=True),
                            entries={tflite_metadata.NAME: standard})

    def run(self, path: str, inputs: np.ndarray) -> np.ndarray:
        """LiteRT's embeddings of ``inputs`` (see :func:`run_tflite`), ``batch_size`` at a
        time (32 for a dynamic batch).

        Args:
            path: the ``.tflite`` file.
            inputs: :attr:`Converted.inputs`.

        Returns:
            The (N, D) embeddings.
        """
        return run_tflite(path, inputs, batch_size=32 if self.batch_size is None
                          else self.batch_size)


def to_tflite(model: keras.Model, path: str | os.PathLike, quantization: str | None = None,
              representative_data: np.ndarray | Iterable | None = None, *,
              io_dtype: str | None = None, batch_size: int | None = None,
              int8_io: bool = False, verification_data: np.ndarray | None = None,
              verify: bool = True, force: bool = False, strip: bool | None = None,
              l2_normalize: bool = True, flip_fusion: bool = False,
              head_layer: str | None = None, normalization=None,
              embedding_layer: str | keras.layers.Layer | None = None) -> ExportReport:
    """Export the embedding part of ``model`` to a verified ``.tflite`` file.

    The head is stripped (:func:`~keras_facemargin.export.strip_head`) when the model has one;
    only builtin TFLite ops are allowed (a model that needs Flex ops is refused, naming the ops
    and layers). The exported model is run with LiteRT on held-out images and compared with the
    Keras embedding model: the minimum cosine similarity must reach 0.99999 (float32), 0.999
    (float16) or 0.99 (dynamic, int8); otherwise nothing is written at ``path`` and
    :class:`ExportVerificationError` is raised (``force=True`` writes it anyway, with a
    warning). The file is written atomically and carries two metadata entries: the standard
    TFLite Model Metadata (``TFLITE_METADATA``: image properties, ``NormalizationOptions``,
    tensor descriptions; what MediaPipe's ``ImageEmbedder`` reads) and the package's own
    :class:`~keras_facemargin.runtime.ModelMetadata` (JSON, ``keras_facemargin``) with the
    runtime versions the file needs (``min_runtime``).

    Integer input (``io_dtype="uint8"`` or ``"int8"``, full-integer models): the graph starts
    with the normalization ``(pixel - mean) / std`` and its input tensor holds the pixels, with
    scale 1 and zero point 0 (uint8: the pixel itself) or -128 (int8: ``pixel - 128``), so
    every 0-255 pixel is exactly a grid point whatever the training mean and std (127.5 is not
    an integer zero point). The output is of the same type (dequantize with its scale and zero
    point, then L2-normalize). The metadata then says mean 0 and std 1 (the host does no
    normalization) and keeps the training values under ``normalization_in_graph``.

    Args:
        model: a trained model with a margin head, or an embedding model.
        path: the ``.tflite`` file to write.
        quantization: `None` (float32), ``"float16"``, ``"dynamic"`` (int8 weights) or
            ``"int8"`` (full integer; needs ``representative_data``).
        representative_data: calibration images (N, H, W, 3), uint8 pixels or normalized
            floats, for ``"int8"``.
        io_dtype: input and output tensor type, ``"float32"``, or for ``"int8"`` also
            ``"uint8"`` (Edge TPU, NNAPI, MediaPipe) or ``"int8"``. Defaults to `None`
            (``"float32"``).
        batch_size: `None` (dynamic batch) or ``1`` (input fixed to ``[1, H, W, 3]``, for
            compilers and delegates that refuse dynamic shapes). Defaults to `None`.
        int8_io: same as ``io_dtype="int8"`` (kept for older code). Defaults to `False`.
        verification_data: held-out images to verify on. Defaults to `None`: for ``"int8"``
            the last quarter (at most 64) of ``representative_data``, left out of the
            calibration; otherwise 16 seeded random images in the normalized range (pass real
            faces for a meaningful check).
        verify, force: see above. Defaults to `True`, `False`.
        strip, l2_normalize, flip_fusion, head_layer: passed to ``strip_head``.
        normalization: the pixel normalization the model was trained with (see
            :func:`keras_facemargin.preprocessing.get_normalization`); stored in the metadata,
            applied to uint8 calibration / verification images. Defaults to `None`: 127.5 / 128.
        embedding_layer: for a model without a margin head, the layer (or its name) whose
            output is the embedding. Defaults to `None`.

    Returns:
        An :class:`~keras_facemargin.export.ExportReport`.

    Example:

    >>> from keras_facemargin.export import to_tflite
    >>> report = to_tflite(model, "face.tflite", quantization="float16")  # doctest: +SKIP
    >>> report.min_cosine >= 0.999                                          # doctest: +SKIP
    True
    >>> to_tflite(model, "face_edgetpu.tflite", "int8", faces, io_dtype="uint8",
    ...           batch_size=1)                                             # doctest: +SKIP
    """
    quantization = check_choice("quantization", quantization, QUANTIZATIONS)
    if int8_io and io_dtype not in (None, "int8"):
        raise ValueError(f"`int8_io=True` means io_dtype='int8'. Received: int8_io=True, "
                         f"io_dtype={io_dtype!r}")
    io_dtype = check_choice("io_dtype", io_dtype or ("int8" if int8_io else "float32"),
                            IO_DTYPES)
    if isinstance(batch_size, bool):
        raise ValueError(f"`batch_size` must be one of {BATCH_SIZES}. Received: "
                         f"batch_size={batch_size!r}")
    batch_size = check_choice("batch_size", batch_size, BATCH_SIZES)
    if io_dtype != "float32" and quantization != "int8":
        raise ValueError(f"`io_dtype={io_dtype!r}` needs quantization='int8' (a full-integer "
                         f"model); other models take and give float32. Received: "
                         f"quantization={quantization!r}")
    converter = TFLiteConverter(quantization, io_dtype=io_dtype, batch_size=batch_size,
                                l2_normalize=l2_normalize)
    return export(model, path, converter, calibration_data=representative_data,
                  verification_data=verification_data, normalization=normalization,
                  strip=strip, embedding_layer=embedding_layer, flip_fusion=flip_fusion,
                  head_layer=head_layer, verify=verify, force=force)
