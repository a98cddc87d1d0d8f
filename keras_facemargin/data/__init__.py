"""keras_facemargin.data: face datasets in, verification pairs out.

:func:`~keras_facemargin.data.lfw_like_pairs` draws LFW-style pairs over labelled images (NumPy).

The readers (:mod:`~keras_facemargin.data.recordio`, :mod:`~keras_facemargin.data.verification`)
are pure Python; the tf.data pipelines (:mod:`~keras_facemargin.data.pipeline`) import
TensorFlow on first use.
"""

from __future__ import annotations

import importlib

from keras_facemargin.data.pairs import lfw_like_pairs
from keras_facemargin.data.recordio import IRHeader, RecordIOReader, pack, unpack, write_recordio
from keras_facemargin.data.verification import (
    SafeUnpickler,
    VerificationPairs,
    load_bin,
    load_pairs_txt,
)

_LAZY = {name: "keras_facemargin.data.pipeline" for name in (
    "FaceData", "SkipCounter", "decode_image", "decode_pairs", "image_folder_dataset",
    "recordio_dataset", "standardize", "IMAGE_SIZE",
)}
_LAZY["digit_faces"] = "keras_facemargin.data.digits"

__all__ = ["IRHeader", "RecordIOReader", "SafeUnpickler", "VerificationPairs", "lfw_like_pairs",
           "load_bin", "load_pairs_txt", "pack", "unpack", "write_recordio", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'keras_facemargin.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
