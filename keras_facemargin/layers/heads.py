"""The named heads: each is ``MarginHead`` with one margin class (see ``margins``)."""

from __future__ import annotations

from keras_facemargin import losses as L
from keras_facemargin import margins as M
from keras_facemargin._api import register
from keras_facemargin.layers.head import MarginHead

_DOC = """{title}

    A :class:`keras_facemargin.layers.MarginHead` with
    :class:`keras_facemargin.margins.{margin}`; every keyword argument of that margin
    (see its docstring for the formula) is accepted here, plus ``sub_centers``,
    ``kernel_initializer``, ``kernel_regularizer`` and ``check_inputs``. ``head.loss`` is a
    :class:`keras_facemargin.{loss}` with the same hyper-parameters.

    Example:

    >>> import keras
    >>> from keras_facemargin import {name}
    >>> head = {name}(num_classes=1000)
    >>> model = keras.Sequential([keras.Input((128,)), head])
    >>> model.compile(optimizer="sgd", loss=head.loss)
    """


def _head(name: str, title: str, margin_class, loss_class, sub_centers: int = 1):
    doc = _DOC.format(title=title, margin=margin_class.__name__, loss=loss_class.__name__,
                      name=name)
    cls = type(name, (MarginHead,), {
        "margin_class": margin_class, "loss_class": loss_class,
        "default_sub_centers": sub_centers, "__doc__": doc, "__module__": __name__,
    })
    return register(cls)


ArcMarginLayer = _head("ArcMarginLayer", "ArcFace head: s * cos(theta_y + m).",
                       M.ArcMargin, L.ArcFaceLoss)
CosMarginLayer = _head("CosMarginLayer", "CosFace (LMCL) head: s * (cos(theta_y) - m).",
                       M.CosMargin, L.CosFaceLoss)
CombinedMarginLayer = _head("CombinedMarginLayer",
                            "Combined-margin head: s * (cos(m1 theta_y + m2) - m3).",
                            M.CombinedMargin, L.CombinedMarginLoss)
NormSoftmaxLayer = _head("NormSoftmaxLayer", "NormFace head: s * cos(theta_j), no margin.",
                         M.NormMargin, L.NormFaceLoss)
SphereMarginLayer = _head("SphereMarginLayer",
                          "SphereFace (A-Softmax) head: ||x|| psi(theta_y), lambda annealed.",
                          M.SphereMargin, L.SphereFaceLoss)
LargeMarginSoftmaxLayer = _head("LargeMarginSoftmaxLayer",
                                "L-Softmax head: ||W_y|| ||x|| psi(theta_y).",
                                M.LargeMarginSoftmaxMargin, L.LargeMarginSoftmaxLoss)
SubCenterArcMarginLayer = _head("SubCenterArcMarginLayer",
                                "Sub-center ArcFace head: K sub-centres per class (default 3), "
                                "max over K before the ArcFace margin.",
                                M.ArcMargin, L.SubCenterArcFaceLoss, sub_centers=3)
CurricularMarginLayer = _head("CurricularMarginLayer",
                              "CurricularFace head: ArcFace target, hard negatives re-weighted.",
                              M.CurricularMargin, L.CurricularFaceLoss)
AdaMarginLayer = _head("AdaMarginLayer", "AdaFace head: margin adapted to the feature norm.",
                       M.AdaMargin, L.AdaFaceLoss)
MagMarginLayer = _head("MagMarginLayer",
                       "MagFace head: magnitude-aware margin plus the regularizer g(a).",
                       M.MagMargin, L.MagFaceLoss)
ElasticMarginLayer = _head("ElasticMarginLayer",
                           "ElasticFace head: margin drawn per sample from N(m, std).",
                           M.ElasticMargin, L.ElasticFaceLoss)
SoftmaxLayer = _head("SoftmaxLayer", "Softmax (DeepID) baseline head: logits W.x, no margin.",
                     M.SoftmaxMargin, L.SoftmaxLoss)
