"""Keras losses: margin-softmax losses (one per head) and metric-learning losses."""

from keras_facemargin.losses.angular import InterLoss, IntraLoss
from keras_facemargin.losses.center import CenterLoss, CenterLossLayer
from keras_facemargin.losses.contrastive import ContrastiveLoss
from keras_facemargin.losses.discrepancy import DiscrepancyLoss
from keras_facemargin.losses.joint import JointLoss
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
from keras_facemargin.losses.triplet import TripletLoss

__all__ = [
    "AdaFaceLoss", "ArcFaceLoss", "CombinedMarginLoss", "CosFaceLoss", "CurricularFaceLoss",
    "ElasticFaceLoss", "LargeMarginSoftmaxLoss", "MagFaceLoss", "MarginLoss", "NormFaceLoss",
    "SoftmaxLoss", "SphereFaceLoss", "SubCenterArcFaceLoss",
    "CenterLoss", "CenterLossLayer", "ContrastiveLoss", "DiscrepancyLoss", "InterLoss",
    "IntraLoss", "JointLoss", "TripletLoss",
]
