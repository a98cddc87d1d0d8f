"""Keras layers: the margin-head core and the named heads."""

from keras_facemargin.layers.head import MarginHead
from keras_facemargin.layers.heads import (
    AdaMarginLayer,
    ArcMarginLayer,
    CombinedMarginLayer,
    CosMarginLayer,
    CurricularMarginLayer,
    ElasticMarginLayer,
    LargeMarginSoftmaxLayer,
    MagMarginLayer,
    NormSoftmaxLayer,
    SoftmaxLayer,
    SphereMarginLayer,
    SubCenterArcMarginLayer,
)

__all__ = [
    "AdaMarginLayer", "ArcMarginLayer", "CombinedMarginLayer", "CosMarginLayer",
    "CurricularMarginLayer", "ElasticMarginLayer", "LargeMarginSoftmaxLayer", "MagMarginLayer",
    "MarginHead", "NormSoftmaxLayer", "SoftmaxLayer", "SphereMarginLayer",
    "SubCenterArcMarginLayer",
]
