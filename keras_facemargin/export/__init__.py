"""Ship the embedding model: strip the head, export verified TFLite and ONNX files.

TensorFlow-only (the converters); the core package never imports it. The device side is
:mod:`keras_facemargin.runtime`, which needs neither TensorFlow nor Keras.
"""

from keras_facemargin.export.layers import GroupedConv2D, HorizontalFlip, L2Normalize
from keras_facemargin.export.strip import embedding_at, find_head, strip_head
from keras_facemargin.export.verify import ExportReport, ExportVerificationError

__all__ = ["ExportReport", "ExportVerificationError", "GroupedConv2D", "HorizontalFlip",
           "L2Normalize", "embedding_at", "find_head", "strip_head", "to_onnx", "to_tflite"]


def __getattr__(name):  # the converters import TensorFlow: load them on first use
    if name == "to_tflite":
        from keras_facemargin.export.tflite import to_tflite

        return to_tflite
    if name == "to_onnx":
        from keras_facemargin.export.onnx import to_onnx

        return to_onnx
    raise AttributeError(f"module 'keras_facemargin.export' has no attribute {name!r}")
