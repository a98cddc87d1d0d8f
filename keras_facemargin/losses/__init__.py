"""Keras losses: margin-softmax losses (one per head) and metric-learning losses."""

from keras_facemargin.losses.margin import (
    AdaFaceLoss,
    ArcFaceLoss,
    CombinedMarginLoss,
    CosFaceLoss,
    CurricularFaceLoss,
    ElasticFaceLoss,
    LargeMarginSoftmaxLoss,
    MagFaceLoss,
    MarginLoss,
    NormFaceLoss,
    SoftmaxLoss,
    SphereFaceLoss,
    SubCenterArcFaceLoss,
)

__all__ = [
    "AdaFaceLoss", "ArcFaceLoss", "CombinedMarginLoss", "CosFaceLoss", "CurricularFaceLoss",
    "ElasticFaceLoss", "LargeMarginSoftmaxLoss", "MagFaceLoss", "MarginLoss", "NormFaceLoss",
    "SoftmaxLoss", "SphereFaceLoss", "SubCenterArcFaceLoss",
]
