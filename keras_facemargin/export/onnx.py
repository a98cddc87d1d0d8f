"""Export an embedding model to ONNX through tf2onnx, verified, with metadata."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable

import keras
import numpy as np
import tensorflow as tf

from keras_facemargin._checks import check_choice, check_int
from keras_facemargin.export import _common
from keras_facemargin.export.tflite import ConversionError
from keras_facemargin.export.verify import ExportReport, write_verified
from keras_facemargin.runtime.metadata import KEY

QUANTIZATIONS = (None, "int8")
MAX_OPSET = 18  # tf2onnx 1.17 rejects newer opsets


def convert(model: keras.Model, opset: int = 17):
    """The ``onnx.ModelProto`` of ``model`` with a dynamic batch dimension named ``batch``."""
    import onnx
    import tf2onnx

    shape = _common.input_shape(model)
    serve = tf.function(lambda image: model(image, training=False), input_signature=[
        tf.TensorSpec([None, *shape], tf.float32, name="image")])
    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature,
                                                 opset=opset)
    except Exception as err:
        raise ConversionError(f"ONNX conversion (tf2onnx, opset {opset}) failed: "
                              f"{str(err).strip().splitlines()[-1][:500]}") from err
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = "batch"
    onnx.checker.check_model(proto, full_check=True)
    return proto


class _Calibration:
    """onnxruntime CalibrationDataReader over normalized images, one per call."""

    def __init__(self, name: str, images: np.ndarray):
        self.name, self.images, self.index = name, images, 0

    def get_next(self):
        if self.index >= len(self.images):
            return None
        self.index += 1
        return {self.name: self.images[self.index - 1:self.index]}

    def rewind(self):
        self.index = 0


def quantize_int8(proto, calibration: np.ndarray, reduce_range: bool = True):
    """Static QDQ quantization with onnxruntime: uint8 activations, per-channel int8 weights,
    after onnxruntime's float pre-processing, with the final L2 normalization kept in float.

    ``reduce_range=True`` quantizes the weights to 7 bits. onnxruntime's int8 kernels on x86
    CPUs without VNNI (AVX2, AVX-512F) add pairs of uint8 x int8 products in int16, which
    saturates with 8-bit weights: on a 2-core AMD EPYC (AVX2) a small trained ConvNet gave min
    cosine 0.975 when run, although the same QDQ file evaluated without the fused kernels gave
    0.9991; with 7-bit weights both give 0.9988 (onnxruntime's own advice for such CPUs).
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = (os.path.join(tmp, f"{name}.onnx") for name in ("float", "pre", "int8"))
        onnx.save(proto, src)
        # onnxruntime's float graph optimizations first (Pad and BN's Mul/Add folded into
        # Conv), so each folded op is quantized once: trained MobileFaceNet 0.9894 -> 0.9941
        quant_pre_process(src, pre, skip_symbolic_shape=True)
        quantize_static(pre, dst, _Calibration(proto.graph.input[0].name, calibration),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8,
                        nodes_to_exclude=l2_normalize_nodes(onnx.load(pre)))
        return onnx.load(dst)


def l2_normalize_nodes(proto) -> list[str]:
    """Names of the nodes of ``strip_head``'s final L2 normalization, kept in float by int8.

    A unit vector of D components (each about 1/sqrt(D), 0.044 at D = 512) quantized to 8 bits
    over [-1, 1] loses several percent of cosine; TFLite int8 runs this step on the host.
    """
    pattern = re.compile(r"(^|/)l2_normalize(_\d+)?/")
    return [node.name for node in proto.graph.node if pattern.search(node.name)]


def run_onnx(path: str, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Embeddings of normalized float images by the ONNX model at ``path`` (onnxruntime)."""
    from keras_facemargin.runtime import Embedder

    return Embedder.open(path).embed(images, batch_size=batch_size)


def to_onnx(model: keras.Model, path: str | os.PathLike, opset: int = 17,
            quantization: str | None = None,
            calibration_data: np.ndarray | Iterable | None = None, *,
            verification_data: np.ndarray | None = None, verify: bool = True,
            force: bool = False, strip: bool | None = None, l2_normalize: bool = True,
            flip_fusion: bool = False, head_layer: str | None = None,
            reduce_range: bool = True) -> ExportReport:
    """Export the embedding part of ``model`` to a verified ``.onnx`` file.

    Converted with tf2onnx (opset <= 18), batch dimension named ``batch``,
    ``onnx.checker.check_model(full_check=True)`` passed, metadata in ``metadata_props``, run
    with onnxruntime on held-out images and compared with the Keras embedding model (min cosine
    0.99999 for float32, 0.99 for int8) before the file is renamed into place; see
    :func:`~keras_facemargin.export.to_tflite` for the shared arguments.

    Args:
        model: a trained model with a margin head, or an embedding model.
        path: the ``.onnx`` file to write.
        opset: ONNX opset, 13 to 18. Defaults to `17`.
        quantization: `None` or ``"int8"`` (onnxruntime static QDQ quantization).
        calibration_data: calibration images for ``"int8"``.
        verification_data: held-out images to verify on. Defaults to `None`: for ``"int8"``
            the last quarter (at most 64) of ``calibration_data``, left out of the
            calibration; otherwise 16 seeded random images.
        verify, force, strip, l2_normalize, flip_fusion, head_layer: as in ``to_tflite``.
        reduce_range: for ``"int8"``, quantize the weights to 7 bits instead of 8. Defaults
            to `True`: onnxruntime's int8 kernels on x86 CPUs without VNNI saturate with 8-bit
            weights (see :func:`quantize_int8`); `False` suits VNNI and ARM targets.

    Returns:
        An :class:`~keras_facemargin.export.ExportReport`.
    """
    opset = check_int("opset", opset, low=13)
    if opset > MAX_OPSET:
        raise ValueError(f"`opset` must be <= {MAX_OPSET} (tf2onnx 1.17). Received: "
                         f"opset={opset}")
    quantization = check_choice("quantization", quantization, QUANTIZATIONS)
    net, head = _common.embedding_model(model, strip, l2_normalize=l2_normalize,
                                        flip_fusion=flip_fusion, head_layer=head_layer)
    if quantization == "int8":
        if calibration_data is None:
            raise ValueError("`calibration_data` is required for quantization='int8'.")
        calibration, held = _common.calibration_split(net, calibration_data, verification_data)
    else:
        held = _common.held_out(net, verification_data)
    proto = convert(net, opset)
    if quantization == "int8":
        proto = quantize_int8(proto, calibration, reduce_range=reduce_range)
    meta = _common.metadata(net, head, quantization)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = KEY, meta.to_json()
    reference = keras.ops.convert_to_numpy(net(held, training=False))
    return write_verified(path, proto.SerializeToString(), "onnx", quantization,
                          lambda tmp: run_onnx(tmp, held), reference, verify, force)
