"""keras_facemargin.evaluation: verification, identification and angle statistics (NumPy).

The metric modules import neither TensorFlow nor Keras; the callback
(:mod:`keras_facemargin.evaluation.callback`) and the plots
(:mod:`keras_facemargin.evaluation.plots`, matplotlib) are imported on first use.
"""

from __future__ import annotations

import importlib

from keras_facemargin.evaluation.angles import AngleStats, angle_statistics
from keras_facemargin.evaluation.identification import IdentificationReport, identification
from keras_facemargin.evaluation.verification import (
    DEFAULT_FARS,
    DEFAULT_THRESHOLDS,
    VAL_THRESHOLDS,
    KFoldResult,
    ValResult,
    VerificationReport,
    equal_error_rate,
    evaluate_pairs,
    kfold_accuracy,
    l2_normalize,
    pair_distances,
    roc_auc,
    roc_curve,
    tar_at_far,
    val_at_far,
)

_LAZY = {
    "VerificationCallback": "keras_facemargin.evaluation.callback",
    "embed_images": "keras_facemargin.evaluation.callback",
    "plot_roc": "keras_facemargin.evaluation.plots",
    "plot_features": "keras_facemargin.evaluation.plots",
    "plot_feature_panels": "keras_facemargin.evaluation.plots",
    "plot_bars": "keras_facemargin.evaluation.plots",
}

__all__ = [
    "DEFAULT_FARS", "DEFAULT_THRESHOLDS", "VAL_THRESHOLDS", "AngleStats", "IdentificationReport",
    "KFoldResult", "ValResult", "VerificationReport", "angle_statistics", "equal_error_rate", "evaluate_pairs",
    "identification", "kfold_accuracy", "l2_normalize", "pair_distances", "roc_auc", "roc_curve",
    "tar_at_far", "val_at_far", *_LAZY,
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'keras_facemargin.evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
