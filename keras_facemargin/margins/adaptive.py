"""Margins that adapt during training: CurricularFace, AdaFace, MagFace, ElasticFace."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_facemargin._api import register
from keras_facemargin._checks import check_choice, check_number
from keras_facemargin.margins.angular import ArcMargin
from keras_facemargin.margins.base import BOUNDARIES, Margin, angular_target


@register
class CurricularMargin(ArcMargin):
    """CurricularFace: ArcFace target plus adaptive re-weighting of the hard negatives.

    Formula:
        logit_y = s * psi(theta_y + m)
        logit_j = s * cos_j * (t + cos_j)   if cos_j > psi(theta_y + m)  (hard negative)
                  s * cos_j                 otherwise
        t <- momentum * mean_b(cos(theta_y)) + (1 - momentum) * t     (each training step)

    ``t`` is a non-trainable weight of the head, saved with the model and averaged across
    replicas under ``tf.distribute``.

    Args:
        margin: ``m`` in radians. Defaults to `0.5`.
        scale: ``s``. Defaults to `64.0`.
        momentum: EMA rate of ``t``, in (0, 1]. Defaults to `0.01`.
        boundary, margin_gradient: as in :class:`ArcMargin`.

    Reference: Huang et al., "CurricularFace", CVPR 2020.
    """


    def __init__(self, margin: float = 0.5, scale: float = 64.0, momentum: float = 0.01,
                 boundary: str = "continuous", margin_gradient: str = "exact"):
        super().__init__(margin, scale, boundary, False, margin_gradient)
        self.momentum = check_number("momentum", momentum, low=0.0, high=1.0, low_inclusive=False)

    def build(self, layer):
        t = layer.add_weight(name="t", shape=(), initializer="zeros", trainable=False,
                             aggregation="mean")
        return {"t": t}

    def context(self, state, x_norm, training):
        return {"t": state["t"], "training": bool(training)}

    def negatives(self, cos, onehot, cos_y, target, context):
        t_var = context["t"]
        t = ops.convert_to_tensor(t_var)
        if context.get("training"):
            t = ops.stop_gradient(self.momentum * ops.mean(cos_y) + (1.0 - self.momentum) * t)
            context["updates"].append((t_var, t))
        hard = ops.logical_and(cos > target[:, None], onehot == 0)
        return ops.where(hard, cos * (t + cos), cos)

    def get_config(self):
        config = super().get_config()
        config.pop("easy_margin")
        return {**config, "momentum": self.momentum}


@register
class AdaMargin(Margin):
    """AdaFace: a margin that adapts to image quality through the feature norm.

    Formula:
        z      = clip(h * (||x|| - mu) / (sigma + eps), -1, 1)     (no gradient)
        logit_y = s * (psi(theta_y - m z) - (m z + m)),  logit_j = s * cos_j
        mu, sigma <- EMA (rate ``momentum``) of the batch mean / std of ||x|| (training only)

    Args:
        margin: ``m``. Defaults to `0.4`.
        scale: ``s``. Defaults to `64.0`.
        h: concentration of the normalized norm. Defaults to `0.333`.
        momentum: EMA rate of the norm statistics. Defaults to `0.01`.
        eps: added to sigma. Defaults to `1e-3`.
        boundary: rule outside [0, pi]; the official code clips (``"clip"``).
            Defaults to `"continuous"`.

    Reference: Kim et al., "AdaFace", CVPR 2022.
    """


    def __init__(self, margin: float = 0.4, scale: float = 64.0, h: float = 0.333,
                 momentum: float = 0.01, eps: float = 1e-3, boundary: str = "continuous",
                 margin_gradient: str = "exact"):
        super().__init__(scale=scale, margin_gradient=margin_gradient)
        self.margin = check_number("margin", margin, low=0.0, high=math.pi, high_inclusive=False)
        self.h = check_number("h", h, low=0.0, low_inclusive=False)
        self.momentum = check_number("momentum", momentum, low=0.0, high=1.0, low_inclusive=False)
        self.eps = check_number("eps", eps, low=0.0, low_inclusive=False)
        self.boundary = check_choice("boundary", boundary, BOUNDARIES)

    def build(self, layer):
        init = keras.initializers.Constant
        return {
            "batch_mean": layer.add_weight(name="batch_mean", shape=(), initializer=init(20.0),
                                           trainable=False, aggregation="mean"),
            "batch_std": layer.add_weight(name="batch_std", shape=(), initializer=init(100.0),
                                          trainable=False, aggregation="mean"),
        }

    def context(self, state, x_norm, training):
        norms = ops.stop_gradient(ops.clip(x_norm, 1e-3, 100.0))
        mean, std = state["batch_mean"], state["batch_std"]
        if training:
            n = ops.cast(ops.shape(norms)[0], norms.dtype)
            batch_mean = ops.mean(norms)
            batch_var = ops.sum(ops.square(norms - batch_mean)) / ops.maximum(n - 1.0, 1.0)
            new_mean = self.momentum * batch_mean + (1.0 - self.momentum) * mean
            new_std = self.momentum * ops.sqrt(batch_var) + (1.0 - self.momentum) * std
            updates = [(mean, new_mean), (std, new_std)]
            mean, std = new_mean, new_std
        else:
            updates = []
        scaler = ops.clip(self.h * (norms - mean) / (std + self.eps), -1.0, 1.0)
        return {"norm_scaler": scaler, "updates": updates}

    def target(self, cos_y, context):
        z = context["norm_scaler"]
        return angular_target(cos_y, 1.0, -self.margin * z, self.margin + self.margin * z,
                              self.boundary)

    def get_config(self):
        return {
            "margin": self.margin, "scale": self.scale, "h": self.h, "momentum": self.momentum,
            "eps": self.eps, "boundary": self.boundary, "margin_gradient": self.margin_gradient,
        }


@register
class MagMargin(Margin):
    """MagFace: a margin that grows with the feature magnitude, plus a magnitude regularizer.

    Formula:
        a       = clip(||x||, lower_norm, upper_norm)
        m(a)    = lower_margin + (upper_margin - lower_margin) (a - lower_norm)
                  / (upper_norm - lower_norm)
        logit_y = s * psi(theta_y + m(a)),  logit_j = s * cos_j
        g(a)    = 1 / a + a / upper_norm**2,  added to the loss as lambda_g * mean(g(a))

    The head adds ``lambda_g * mean(g(a))`` with ``add_loss`` (``model.fit`` sums it with the
    cross-entropy; in a custom loop add ``sum(head.losses)``).

    Args:
        scale: ``s``. Defaults to `64.0`.
        lower_margin, upper_margin: margin at the lower / upper magnitude. Defaults to `0.45`,
            `0.8`.
        lower_norm, upper_norm: magnitude range. Defaults to `10.0`, `110.0`.
        lambda_g: weight of the regularizer. Defaults to `35.0`.
        boundary, margin_gradient: as in :class:`~keras_facemargin.margins.CombinedMargin`.

    Reference: Meng et al., "MagFace", CVPR 2021.
    """


    def __init__(self, scale: float = 64.0, lower_margin: float = 0.45, upper_margin: float = 0.8,
                 lower_norm: float = 10.0, upper_norm: float = 110.0, lambda_g: float = 35.0,
                 boundary: str = "continuous", margin_gradient: str = "exact"):
        super().__init__(scale=scale, margin_gradient=margin_gradient)
        self.lower_margin = check_number("lower_margin", lower_margin, low=0.0,
                                         high=math.pi, high_inclusive=False)
        self.upper_margin = check_number("upper_margin", upper_margin, low=self.lower_margin,
                                         high=math.pi, high_inclusive=False)
        self.lower_norm = check_number("lower_norm", lower_norm, low=0.0, low_inclusive=False)
        self.upper_norm = check_number("upper_norm", upper_norm, low=self.lower_norm,
                                       low_inclusive=False)
        self.lambda_g = check_number("lambda_g", lambda_g, low=0.0)
        self.boundary = check_choice("boundary", boundary, BOUNDARIES)

    def context(self, state, x_norm, training):
        return {"magnitude": ops.clip(x_norm, self.lower_norm, self.upper_norm)}

    def regularization(self, context):
        a = context["magnitude"]
        if self.lambda_g == 0:
            return None
        return self.lambda_g * ops.mean(1.0 / a + a / self.upper_norm**2)

    def target(self, cos_y, context):
        a = context["magnitude"]
        slope = (self.upper_margin - self.lower_margin) / (self.upper_norm - self.lower_norm)
        m = self.lower_margin + slope * (a - self.lower_norm)
        return angular_target(cos_y, 1.0, m, 0.0, self.boundary)

    def get_config(self):
        return {
            "scale": self.scale, "lower_margin": self.lower_margin,
            "upper_margin": self.upper_margin, "lower_norm": self.lower_norm,
            "upper_norm": self.upper_norm, "lambda_g": self.lambda_g, "boundary": self.boundary,
            "margin_gradient": self.margin_gradient,
        }


@register
class ElasticMargin(Margin):
    """ElasticFace: a margin drawn per sample from N(m, std) at each training step.

    Formula:
        m_b ~ N(margin, std)  (training; ``margin`` at inference)
        arc: logit_y = s * psi(theta_y + m_b);   cos: logit_y = s * (cos(theta_y) - m_b)
        plus: the drawn margins are sorted so that the sample with the largest target cosine
              gets the smallest margin (ElasticFace+).

    Args:
        margin: mean margin. Defaults to `0.5` (use `0.35` with ``kind="cos"``).
        std: standard deviation. Defaults to `0.05`.
        kind: ``"arc"`` (additive angular) or ``"cos"`` (additive cosine). Defaults to `"arc"`.
        plus: ElasticFace+ ordering. Defaults to `False`.
        scale: ``s``. Defaults to `64.0`.
        seed: seed of the head's random generator. Defaults to `None`.

    Reference: Boutros et al., "ElasticFace", CVPRW 2022.
    """


    def __init__(self, margin: float = 0.5, std: float = 0.05, kind: str = "arc",
                 plus: bool = False, scale: float = 64.0, seed: int | None = None,
                 boundary: str = "continuous", margin_gradient: str = "exact"):
        super().__init__(scale=scale, margin_gradient=margin_gradient)
        self.margin = check_number("margin", margin, low=0.0, high=math.pi, high_inclusive=False)
        self.std = check_number("std", std, low=0.0)
        self.kind = check_choice("kind", kind, ("arc", "cos"))
        self.plus = bool(plus)
        self.seed = seed
        self.boundary = check_choice("boundary", boundary, BOUNDARIES)

    def build(self, layer):
        return {"seed_generator": keras.random.SeedGenerator(self.seed)}

    def context(self, state, x_norm, training):
        if training and self.std > 0:
            margins = keras.random.normal(ops.shape(x_norm), mean=self.margin, stddev=self.std,
                                          seed=state["seed_generator"])
        else:
            margins = ops.full_like(x_norm, self.margin)
        return {"margins": margins}

    def target(self, cos_y, context):
        margins = context["margins"]
        if self.plus:
            # rank 0 = largest target cosine -> smallest margin
            rank = ops.argsort(ops.argsort(-ops.stop_gradient(cos_y)))
            margins = ops.take(ops.sort(margins), rank)
        if self.kind == "arc":
            return angular_target(cos_y, 1.0, margins, 0.0, self.boundary)
        return cos_y - margins

    def get_config(self):
        return {
            "margin": self.margin, "std": self.std, "kind": self.kind, "plus": self.plus,
            "scale": self.scale, "seed": self.seed, "boundary": self.boundary,
            "margin_gradient": self.margin_gradient,
        }
