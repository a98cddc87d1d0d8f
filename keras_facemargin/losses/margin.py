"""Margin-softmax losses: the loss side of every margin head."""

from __future__ import annotations

import inspect
from typing import Any

import keras
from keras import ops

from keras_facemargin import margins as M
from keras_facemargin._api import register
from keras_facemargin._checks import guarded_loss
from keras_facemargin.losses._context import ContextLoss
from keras_facemargin.margins.base import Margin, margin_parameters


@register
class MarginLoss(ContextLoss):
    """Softmax cross-entropy on margin logits computed from a head's cosine output.

    ``y_pred`` must be the untouched output of a margin head called without labels (the loss
    refuses anything else: a head already called with labels, a layer after the head, a tensor
    from elsewhere); ``y_true`` holds integer class ids, which the loss hands to the head's
    :meth:`~keras_facemargin.layers.MarginHead.margin_logits`: the same code path as
    ``head(embeddings, labels)``, so both give the same numbers, and the margin is applied once.

    A batch with an invalid label gives a NaN loss (an error eagerly and in graph mode) and a zero
    gradient: under XLA, where assertions are dropped, nothing is trained on it.

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

    >>> import keras
    >>> from keras_facemargin import ArcMarginLayer
    >>> head = ArcMarginLayer(num_classes=10)
    >>> model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(16), head])
    >>> model.compile(optimizer="sgd", loss=head.loss)  # an ArcFaceLoss with the head's margin
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
        context = self.context()
        if context is None and self.building():
            # Keras builds the compiled loss on shape-only placeholders before the first step
            # (always under tf.distribute); only the output shape matters there.
            return ops.zeros_like(y_pred[:, 0])
        head = None if context is None else context.get("head")
        if head is None or "cosine" not in context:
            raise ValueError(
                f"{type(self).__name__} applies the margin to the untouched output of a margin "
                "head called without labels (model.add(head) + model.compile(loss=head.loss), the "
                "head the model's last layer). The y_pred it received is something else: the "
                "output of a head already called with labels (it has its margin: use plain "
                "keras.losses.SparseCategoricalCrossentropy(from_logits=True)), of a layer after "
                "the head, or a tensor from elsewhere. To pass labels explicitly, use "
                "keras_facemargin.FaceRecognizer(backbone, head)."
            )
        if head.sampled:
            raise ValueError(
                f"{head.name} samples its class centres (sample_rate={head.sample_rate}): the "
                "sample needs the labels before the cosines, which the Sequential path cannot "
                "give. Train it with keras_facemargin.FaceRecognizer(backbone, head).")
        if (type(head.margin) is not type(self.margin)
                or head.margin.get_config() != self.margin.get_config()):
            raise ValueError(
                f"{type(self).__name__} was built with {self.margin!r} but y_pred comes from a "
                f"head with {head.margin!r}; one head, one margin: compile with `loss=head.loss`."
            )
        out = head.margin_logits(context["cosine"], y_true, context, name="y_true")
        return guarded_loss(
            keras.losses.sparse_categorical_crossentropy(out.labels, out.logits,
                                                         from_logits=True)
            + out.regularization, out.valid)

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
