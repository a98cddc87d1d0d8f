"""Margin-softmax losses: the loss side of every margin head."""

from __future__ import annotations

import inspect
from typing import Any

import keras

from keras_facemargin import margins as M
from keras_facemargin._api import register
from keras_facemargin._checks import prepare_labels
from keras_facemargin.losses._context import ContextLoss
from keras_facemargin.margins.base import Margin, margin_parameters


@register
class MarginLoss(ContextLoss):
    """Softmax cross-entropy on margin logits computed from a head's cosine output.

    ``y_pred`` is the output of a margin head called without labels (the cosine matrix and the
    context the head attached to it); ``y_true`` holds integer class ids. The margin is the same
    object code path as ``head(embeddings, labels)``, so both give the same numbers.

    Formula:
        loss_b = -log softmax(margin.logits(cos, y))_b[y_b]

    Args:
        margin: a :class:`~keras_facemargin.margins.Margin` (named losses such as
            :class:`ArcFaceLoss` build it from their keyword arguments instead).
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: loss name. Defaults to the class name in snake case.

    Returns:
        The mean (by default) cross-entropy over the batch.

    Example:

    >>> import numpy as np
    >>> from keras_facemargin import ArcFaceLoss
    >>> cos = np.array([[0.9, 0.1], [0.2, 0.8]], "float32")
    >>> float(ArcFaceLoss(margin=0.5, scale=64.0)(np.array([0, 1]), cos)) > 0
    True
    """

    margin_class: type[Margin] | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.margin_class is None:
            return
        base = list(inspect.signature(MarginLoss.__init__).parameters.values())
        params = [base[0]] + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
                              for p in margin_parameters(cls.margin_class)] + base[2:]
        cls.__signature__ = inspect.Signature(params)

    def __init__(self, margin: Margin | dict | None = None, *, reduction="sum_over_batch_size",
                 name: str | None = None, dtype=None, **margin_kwargs):
        if self.margin_class is not None:
            if margin is not None:
                margin_kwargs["margin"] = margin
            margin = self.margin_class(**margin_kwargs)
        elif isinstance(margin, dict):
            margin = keras.saving.deserialize_keras_object(margin)
        elif margin_kwargs:
            raise TypeError(f"Unexpected keyword arguments: {sorted(margin_kwargs)}")
        if not isinstance(margin, Margin):
            raise ValueError(
                "`margin` must be a keras_facemargin.margins.Margin instance (or use a named loss "
                f"such as ArcFaceLoss). Received: margin={margin!r}"
            )
        if name is None:
            name = "".join("_" + c.lower() if c.isupper() else c for c in type(self).__name__)
            name = name.lstrip("_")
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = margin

    def call(self, y_true, y_pred):
        labels = prepare_labels(y_true, y_pred.shape[-1], name="y_true")
        context = self.context()
        if context is None and self.margin.requires and self.building():
            # Keras builds the compiled loss on shape-only placeholders before the first step
            # (always under tf.distribute); only the output shape matters there.
            logits = y_pred
        else:
            logits = self.margin.logits(y_pred, labels, context)
        return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)

    def get_config(self) -> dict[str, Any]:
        config = {"name": self.name, "reduction": self.reduction}
        if self.margin_class is None:
            config["margin"] = keras.saving.serialize_keras_object(self.margin)
        else:
            config.update(self.margin.get_config())
        return config


def _loss(name: str, margin_class: type[Margin], doc: str) -> type[MarginLoss]:
    cls = type(name, (MarginLoss,), {"margin_class": margin_class, "__doc__": doc,
                                     "__module__": __name__})
    return register(cls)


_DOC = """{title}

    The loss of :class:`keras_facemargin.{layer}`: softmax cross-entropy on the logits of
    :class:`keras_facemargin.margins.{margin}` (see there for the formula and every argument).
    ``y_true``: integer class ids (B,); ``y_pred``: the head's output without labels.

    Example:

    >>> from keras_facemargin import {layer}
    >>> head = {layer}(num_classes=100)
    >>> loss = head.loss  # a {name} with the head's hyper-parameters
    """


def _doc(title: str, name: str, layer: str, margin: str) -> str:
    return _DOC.format(title=title, name=name, layer=layer, margin=margin)


ArcFaceLoss = _loss("ArcFaceLoss", M.ArcMargin, _doc(
    "ArcFace loss: s * cos(theta_y + m).", "ArcFaceLoss", "ArcMarginLayer", "ArcMargin"))
CosFaceLoss = _loss("CosFaceLoss", M.CosMargin, _doc(
    "CosFace (LMCL) loss: s * (cos(theta_y) - m).", "CosFaceLoss", "CosMarginLayer", "CosMargin"))
CombinedMarginLoss = _loss("CombinedMarginLoss", M.CombinedMargin, _doc(
    "Combined margin loss: s * (cos(m1 theta_y + m2) - m3).", "CombinedMarginLoss",
    "CombinedMarginLayer", "CombinedMargin"))
NormFaceLoss = _loss("NormFaceLoss", M.NormMargin, _doc(
    "NormFace (normalized softmax) loss: s * cos(theta_j).", "NormFaceLoss", "NormSoftmaxLayer",
    "NormMargin"))
SphereFaceLoss = _loss("SphereFaceLoss", M.SphereMargin, _doc(
    "SphereFace (A-Softmax) loss: ||x|| psi(theta_y) with lambda annealing.", "SphereFaceLoss",
    "SphereMarginLayer", "SphereMargin"))
LargeMarginSoftmaxLoss = _loss("LargeMarginSoftmaxLoss", M.LargeMarginSoftmaxMargin, _doc(
    "L-Softmax loss: ||W_y|| ||x|| psi(theta_y).", "LargeMarginSoftmaxLoss",
    "LargeMarginSoftmaxLayer", "LargeMarginSoftmaxMargin"))
SubCenterArcFaceLoss = _loss("SubCenterArcFaceLoss", M.ArcMargin, _doc(
    "Sub-center ArcFace loss (the max over sub-centres happens in the head).",
    "SubCenterArcFaceLoss", "SubCenterArcMarginLayer", "ArcMargin"))
CurricularFaceLoss = _loss("CurricularFaceLoss", M.CurricularMargin, _doc(
    "CurricularFace loss.", "CurricularFaceLoss", "CurricularMarginLayer", "CurricularMargin"))
AdaFaceLoss = _loss("AdaFaceLoss", M.AdaMargin, _doc(
    "AdaFace loss.", "AdaFaceLoss", "AdaMarginLayer", "AdaMargin"))
MagFaceLoss = _loss("MagFaceLoss", M.MagMargin, _doc(
    "MagFace loss (the magnitude regularizer is added by the head).", "MagFaceLoss",
    "MagMarginLayer", "MagMargin"))
ElasticFaceLoss = _loss("ElasticFaceLoss", M.ElasticMargin, _doc(
    "ElasticFace loss.", "ElasticFaceLoss", "ElasticMarginLayer", "ElasticMargin"))
SoftmaxLoss = _loss("SoftmaxLoss", M.SoftmaxMargin, _doc(
    "Plain softmax cross-entropy (DeepID baseline) on W.x logits.", "SoftmaxLoss",
    "SoftmaxLayer", "SoftmaxMargin"))
