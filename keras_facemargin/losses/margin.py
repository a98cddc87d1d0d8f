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


_ARGS = """
    Args:
        **margin_kwargs: the arguments of :class:`keras_facemargin.margins.{margin}` (the same
            keyword arguments as :class:`keras_facemargin.{layer}`); they must equal the
            head's (use ``head.loss``, which builds this loss from the head's margin).
        reduction, name, dtype: as for any ``keras.losses.Loss``.

    Example:

    >>> from keras_facemargin import {layer}
    >>> head = {layer}(num_classes=100)
    >>> loss = head.loss  # the loss of the Sequential path, with the head's margin
"""


def _doc(title: str, layer: str, margin: str, reference: str) -> str:
    return (f"{title}\n\n    The loss of :class:`keras_facemargin.{layer}` in the Sequential path "
            "(``model.compile(loss=head.loss)``): softmax cross-entropy on the head's margin "
            f"logits.\n" + _ARGS.format(layer=layer, margin=margin)
            + f"\n    Reference: {reference}\n")


@register
class ArcFaceLoss(MarginLoss):
    __doc__ = _doc("ArcFace loss: s * cos(theta_y + m).", "ArcMarginLayer", "ArcMargin",
                   "Deng et al., ArcFace, CVPR 2019.")
    margin_class = M.ArcMargin


@register
class SubCenterArcFaceLoss(MarginLoss):
    __doc__ = _doc("Sub-center ArcFace loss (the max over sub-centres happens in the head).",
                   "SubCenterArcMarginLayer", "ArcMargin", "Deng et al., Sub-center ArcFace, "
                   "ECCV 2020.")
    margin_class = M.ArcMargin


@register
class CosFaceLoss(MarginLoss):
    __doc__ = _doc("CosFace (LMCL) loss: s * (cos(theta_y) - m).", "CosMarginLayer", "CosMargin",
                   "Wang et al., CosFace, CVPR 2018.")
    margin_class = M.CosMargin


@register
class CombinedMarginLoss(MarginLoss):
    __doc__ = _doc("Combined margin loss: s * (cos(m1 theta_y + m2) - m3).",
                   "CombinedMarginLayer", "CombinedMargin", "Deng et al., ArcFace, CVPR 2019.")
    margin_class = M.CombinedMargin


@register
class NormFaceLoss(MarginLoss):
    __doc__ = _doc("NormFace (normalized softmax) loss: s * cos(theta_j).", "NormSoftmaxLayer",
                   "NormMargin", "Wang et al., NormFace, 2017.")
    margin_class = M.NormMargin


@register
class SphereFaceLoss(MarginLoss):
    __doc__ = _doc("SphereFace (A-Softmax) loss: ||x|| psi(theta_y) with lambda annealing.",
                   "SphereMarginLayer", "SphereMargin", "Liu et al., SphereFace, CVPR 2017.")
    margin_class = M.SphereMargin


@register
class LargeMarginSoftmaxLoss(MarginLoss):
    __doc__ = _doc("L-Softmax loss: ||W_y|| ||x|| psi(theta_y).", "LargeMarginSoftmaxLayer",
                   "LargeMarginSoftmaxMargin", "Liu et al., L-Softmax, ICML 2016.")
    margin_class = M.LargeMarginSoftmaxMargin


@register
class CurricularFaceLoss(MarginLoss):
    __doc__ = _doc("CurricularFace loss.", "CurricularMarginLayer", "CurricularMargin",
                   "Huang et al., CurricularFace, CVPR 2020.")
    margin_class = M.CurricularMargin


@register
class AdaFaceLoss(MarginLoss):
    __doc__ = _doc("AdaFace loss.", "AdaMarginLayer", "AdaMargin",
                   "Kim et al., AdaFace, CVPR 2022.")
    margin_class = M.AdaMargin


@register
class MagFaceLoss(MarginLoss):
    __doc__ = _doc("MagFace loss (cross-entropy plus the head's magnitude regularizer).",
                   "MagMarginLayer", "MagMargin", "Meng et al., MagFace, CVPR 2021.")
    margin_class = M.MagMargin


@register
class ElasticFaceLoss(MarginLoss):
    __doc__ = _doc("ElasticFace loss.", "ElasticMarginLayer", "ElasticMargin",
                   "Boutros et al., ElasticFace, CVPRW 2022.")
    margin_class = M.ElasticMargin


@register
class SoftmaxLoss(MarginLoss):
    __doc__ = _doc("Plain softmax cross-entropy (DeepID baseline) on W.x logits.", "SoftmaxLayer",
                   "SoftmaxMargin", "Sun et al., DeepID, CVPR 2014.")
    margin_class = M.SoftmaxMargin
