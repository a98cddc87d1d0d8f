"""Export an embedding model to TFLite (builtin ops only), verified, with metadata."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

import keras
import numpy as np
import tensorflow as tf

from keras_facemargin._checks import check_choice
from keras_facemargin.export import _common
from keras_facemargin.export.verify import ExportReport, write_verified
from keras_facemargin.runtime.metadata import KEY

QUANTIZATIONS = (None, "float16", "dynamic", "int8")


class ConversionError(ValueError):
    """The converter could not lower a layer to builtin TFLite ops."""


def _frozen_function(model: keras.Model):
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    shape = _common.input_shape(model)
    serve = tf.function(lambda image: model(image, training=False), input_signature=[
        tf.TensorSpec([None, *shape], tf.float32, name="image")])
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


def add_metadata(data: bytes, text: str) -> bytes:
    """Append ``{KEY: text}`` to the flatbuffer's metadata list (as CONVERSION_METADATA is)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(text.encode("utf-8"), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = KEY
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (KEY, KEY.encode())]
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


def convert(model: keras.Model, quantization: str | None = None,
            representative_data: np.ndarray | None = None, int8_io: bool = False) -> bytes:
    """The TFLite flatbuffer of ``model`` (no verification, no metadata)."""
    function = _frozen_function(model)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        samples = representative_data

        def representative():
            for image in samples:
                yield [image[None].astype(np.float32)]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    try:
        data = converter.convert()
    except Exception as err:  # ConverterError and friends
        raise ConversionError(_explain(err, function)) from err
    custom = [name for name in op_names(data) if not name.isupper()]
    if custom:
        raise ConversionError(f"the converted model uses non-builtin ops {custom}; they do not "
                              "run on a stock TFLite runtime.")
    return data


def run_tflite(path: str, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Embeddings of normalized float images by the TFLite model at ``path`` (LiteRT)."""
    from keras_facemargin.runtime import Embedder

    return Embedder.open(path).embed(images, batch_size=batch_size, normalized=True)


def to_tflite(model: keras.Model, path: str | os.PathLike, quantization: str | None = None,
              representative_data: np.ndarray | Iterable | None = None, *,
              int8_io: bool = False, verification_data: np.ndarray | None = None,
              verify: bool = True, force: bool = False, strip: bool | None = None,
              l2_normalize: bool = True, flip_fusion: bool = False,
              head_layer: str | None = None, normalization=None,
              embedding_layer: str | keras.layers.Layer | None = None) -> ExportReport:
    """Export the embedding part of ``model`` to a verified ``.tflite`` file.

    The head is stripped (:func:`~keras_facemargin.export.strip_head`) when the model has one;
    the batch dimension stays dynamic; only builtin TFLite ops are allowed (a model that needs
    Flex ops is refused, naming the ops and layers). The exported model is run with LiteRT on
    held-out images and compared with the Keras embedding model: the minimum cosine similarity
    must reach 0.99999 (float32), 0.999 (float16) or 0.99 (dynamic, int8); otherwise nothing is
    written at ``path`` and :class:`ExportVerificationError` is raised (``force=True`` writes it
    anyway, with a warning). The file is written atomically and carries
    :class:`~keras_facemargin.runtime.ModelMetadata` in its metadata list.

    Args:
        model: a trained model with a margin head, or an embedding model.
        path: the ``.tflite`` file to write.
        quantization: `None` (float32), ``"float16"``, ``"dynamic"`` (int8 weights) or
            ``"int8"`` (full integer; needs ``representative_data``).
        representative_data: calibration images (N, H, W, 3), uint8 pixels or normalized
            floats, for ``"int8"``.
        int8_io: with ``"int8"``, integer input and output tensors. Defaults to `False`.
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
    """
    quantization = check_choice("quantization", quantization, QUANTIZATIONS)
    # a full-integer graph would emit an int8 unit vector (1/128 steps on components of
    # about 1/sqrt(D)): the L2 normalization then runs on the host, in float
    host_norm = quantization == "int8" and l2_normalize
    net, head = _common.embedding_model(model, strip, embedding_layer=embedding_layer,
                                        l2_normalize=l2_normalize and not host_norm,
                                        flip_fusion=flip_fusion, head_layer=head_layer)
    samples = None
    if quantization == "int8":
        if representative_data is None:
            raise ValueError("`representative_data` (calibration images) is required for "
                             "quantization='int8'.")
        samples, held = _common.calibration_split(net, representative_data, verification_data,
                                                  normalization=normalization)
    else:
        held = _common.held_out(net, verification_data, normalization=normalization)
    data = convert(net, quantization, samples, int8_io)
    input_type = "int8" if quantization == "int8" and int8_io else "float32"
    meta = _common.metadata(net, head, quantization, input_type, normalize_on_host=host_norm,
                            normalization=normalization)
    data = add_metadata(data, meta.to_json())
    reference = keras.ops.convert_to_numpy(net(held, training=False))
    if host_norm:
        reference = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True),
                                           1e-12)
    return write_verified(path, data, "tflite", quantization,
                          lambda tmp: run_tflite(tmp, held), reference, verify, force)
