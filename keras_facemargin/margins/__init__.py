"""Margin transforms: serializable objects mapping target cosines to target logits."""

from keras_facemargin.margins.adaptive import AdaMargin, CurricularMargin, ElasticMargin, MagMargin
from keras_facemargin.margins.angular import ArcMargin, CombinedMargin, CosMargin, NormMargin
from keras_facemargin.margins.base import Margin, angular_target, monotone_cos
from keras_facemargin.margins.multiplicative import (
    LargeMarginSoftmaxMargin,
    SoftmaxMargin,
    SphereMargin,
)

__all__ = [
    "AdaMargin", "ArcMargin", "CombinedMargin", "CosMargin", "CurricularMargin", "ElasticMargin",
    "LargeMarginSoftmaxMargin", "MagMargin", "Margin", "NormMargin", "SoftmaxMargin",
    "SphereMargin", "angular_target", "monotone_cos",
]
