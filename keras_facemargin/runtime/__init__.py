"""A TensorFlow-free runtime: embed and compare faces with an exported model on a device.

Imports neither TensorFlow nor Keras, even where they are installed (``import
keras_facemargin.runtime`` loads NumPy and this package's pure-Python modules only). Backends,
whichever is installed: ``ai-edge-litert`` (or the legacy ``tflite-runtime``) for ``.tflite``
files (:mod:`._tflite`), ``onnxruntime`` for ``.onnx`` files (:mod:`._onnx`); the
:class:`Embedder` (:mod:`._embedder`) applies the file's metadata around them.

Example::

    from keras_facemargin.runtime import Embedder

    face = Embedder.open("face.tflite")            # reads the stored preprocessing
    e = face.embed(images_uint8)                    # (N, 112, 112, 3) RGB -> (N, 512)
    same = face.verify(image_a, image_b, threshold=0.3)
    index, score = face.identify(probes, gallery)
"""

from __future__ import annotations

from keras_facemargin.runtime._embedder import Embedder
from keras_facemargin.runtime.metadata import ModelMetadata

__all__ = ["Embedder", "ModelMetadata", "available_backends"]


def available_backends() -> list[str]:
    """Names of the installed backends, in order of preference."""
    found = []
    for name, module in (("litert", "ai_edge_litert.interpreter"),
                         ("tflite_runtime", "tflite_runtime.interpreter"),
                         ("onnxruntime", "onnxruntime")):
        try:
            __import__(module)
        except ImportError:
            continue
        found.append(name)
    return found
