"""keras_facemargin: margin heads and metric losses for face recognition in Keras 3.

Public names are loaded on first use (PEP 562), so ``import keras_facemargin.runtime`` on a
device imports neither TensorFlow nor Keras. Saved models load without ``custom_objects``: the
Keras config of every class names its module, which Keras imports on load.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    # heads
    "MarginHead": "keras_facemargin.layers.head",
    **{name: "keras_facemargin.layers.heads" for name in (
        "ArcMarginLayer", "CosMarginLayer", "SphereMarginLayer", "CombinedMarginLayer",
        "NormSoftmaxLayer", "LargeMarginSoftmaxLayer", "SubCenterArcMarginLayer",
        "CurricularMarginLayer", "AdaMarginLayer", "MagMarginLayer", "ElasticMarginLayer",
        "SoftmaxLayer",
    )},
    # margin losses
    **{name: "keras_facemargin.losses.margin" for name in (
        "MarginLoss", "ArcFaceLoss", "CosFaceLoss", "SphereFaceLoss", "CombinedMarginLoss",
        "NormFaceLoss", "LargeMarginSoftmaxLoss", "SubCenterArcFaceLoss", "CurricularFaceLoss",
        "AdaFaceLoss", "MagFaceLoss", "ElasticFaceLoss", "SoftmaxLoss",
    )},
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'keras_facemargin' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
