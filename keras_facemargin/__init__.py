"""keras_facemargin: margin heads and metric losses for face recognition in Keras 3.

Importing the package registers every Keras class (so ``keras.models.load_model`` needs no
``custom_objects``) as soon as Keras is there: at once when Keras is already imported, otherwise
right after Keras is first imported (an import hook; the package itself imports neither Keras
nor TensorFlow). So ``import keras_facemargin.runtime`` and ``keras_facemargin.preprocessing``
stay free of TensorFlow and Keras even where both are installed, and a device without Keras
runs the runtime; the Keras names (``keras_facemargin.ArcMarginLayer``...) are loaded on first
use and raise an ImportError saying what to install where Keras is missing.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import warnings

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
    "RowSparseSGD": "keras_facemargin.training.sparse_sgd",  # facemargin train's optimizer
    # the task model: backbone + head, labels handed to the head explicitly
    "FaceRecognizer": "keras_facemargin.models.face_recognizer",
    "SkipNonFiniteSteps": "keras_facemargin.models.face_recognizer",
    "L2Normalize": "keras_facemargin.layers.normalization",
    "GroupedConv2D": "keras_facemargin.layers.convolution",
    "HorizontalFlip": "keras_facemargin.export.layers",
    # evaluation
    "VerificationCallback": "keras_facemargin.evaluation.callback",
}

__all__ = sorted(_PUBLIC)

# The facemargin command and the example scripts: TensorFlow's native log lines off before
# Keras imports TensorFlow (keras_facemargin/quiet.py; does nothing in any other process).
from keras_facemargin.quiet import quiet_if_entry_point as _quiet_if_entry_point  # noqa: E402

_quiet_if_entry_point()



def _register_keras_classes(strict: bool = True) -> None:
    """Import every module holding a public Keras class (their decorators register them).

    With ``strict=False`` (the import hook), a module that cannot be imported yet because
    one of ours is half-way through its own import (the first ``import keras`` of the process
    ran inside it) is left for later: :func:`__getattr__` completes the registration.
    """
    for module in sorted(set(_PUBLIC.values())):
        try:
            importlib.import_module(module)
        except ImportError:
            if strict:
                raise


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """Registers the package's Keras classes right after ``keras`` itself is imported.

    Finds ``keras``'s spec with the other finders and wraps its loader so that, once Keras has
    executed, :func:`_register_keras_classes` runs (then the hook removes itself). A failure
    there is a warning: it must never break ``import keras``.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return None
        execute = loader.exec_module

        def exec_module(module):
            execute(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            try:
                _register_keras_classes(strict=False)
            except Exception as err:  # noqa: BLE001 (never break the user's import of keras)
                warnings.warn(f"keras_facemargin could not register its Keras classes: {err!r}",
                              stacklevel=2)

        loader.exec_module = exec_module
        return spec


if sys.modules.get("keras") is not None:
    _register_keras_classes()
elif not any(isinstance(f, _RegisterAfterKeras) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterKeras())


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'keras_facemargin' has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(module), name)
    except ImportError as err:
        if err.name not in ("keras", "tensorflow"):
            raise
        raise ImportError(
            f"keras_facemargin.{name} needs Keras 3 and TensorFlow (pip install keras_facemargin); "
            f"only keras_facemargin.runtime works without them. Cause: {err}"
        ) from None
    _register_keras_classes()
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
