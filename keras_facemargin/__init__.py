"""keras_facemargin: margin heads and metric losses for face recognition in Keras 3.

Importing the package registers every Keras class (so ``keras.models.load_model`` needs no
``custom_objects``). Where Keras is not installed (a device running only
``keras_facemargin.runtime``), the package imports without it and only the TensorFlow-free
modules are usable; the Keras names then raise an ImportError saying what to install.
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
    # metric losses and joint supervision
    "TripletLoss": "keras_facemargin.losses.triplet",
    "ContrastiveLoss": "keras_facemargin.losses.contrastive",
    "CenterLoss": "keras_facemargin.losses.center",
    "CenterLossLayer": "keras_facemargin.losses.center",
    "IntraLoss": "keras_facemargin.losses.angular",
    "InterLoss": "keras_facemargin.losses.angular",
    "DiscrepancyLoss": "keras_facemargin.losses.discrepancy",
    "JointLoss": "keras_facemargin.losses.joint",
    # Partial FC and the layers of exported embedding models (registered for load_model)
    "PartialFCHead": "keras_facemargin.training.partial_fc",
    # the task model: backbone + head, labels handed to the head explicitly
    "FaceRecognizer": "keras_facemargin.models.face_recognizer",
    "SkipNonFiniteSteps": "keras_facemargin.models.face_recognizer",
    "L2Normalize": "keras_facemargin.export.layers",
    "HorizontalFlip": "keras_facemargin.export.layers",
    # evaluation
    "VerificationCallback": "keras_facemargin.evaluation.callback",
}

__all__ = sorted(_PUBLIC)

# The facemargin command and the example scripts: TensorFlow's native log lines off before
# Keras imports TensorFlow (keras_facemargin/quiet.py; does nothing in any other process).
from keras_facemargin.quiet import quiet_if_entry_point as _quiet_if_entry_point  # noqa: E402

_quiet_if_entry_point()

try:
    import keras as _keras  # noqa: F401
except ImportError as _err:  # runtime-only install: no Keras, no TensorFlow
    _KERAS_ERROR: ImportError | None = _err
else:
    _KERAS_ERROR = None
    for _module in sorted(set(_PUBLIC.values())):
        importlib.import_module(_module)


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'keras_facemargin' has no attribute {name!r}")
    if _KERAS_ERROR is not None:
        raise ImportError(
            f"keras_facemargin.{name} needs Keras 3 and TensorFlow (pip install keras_facemargin); "
            f"only keras_facemargin.runtime works without them. Cause: {_KERAS_ERROR}"
        )
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
