"""Additive margins on the normalized hypersphere: NormFace, CosFace, ArcFace, combined."""

from __future__ import annotations

import math
from typing import Any

import keras

from keras_facemargin._api import register
from keras_facemargin._checks import check_choice, check_number
from keras_facemargin.margins.base import BOUNDARIES, Margin, angular_target


@register
class NormMargin(Margin):
    """NormFace / normalized softmax: no margin, logits ``s * cos(theta_j)``.

    Formula:
        logit_j = s * cos(theta_j)

    Args:
        scale: ``s`` (pytorch-metric-learning's ``1 / temperature``). Defaults to `30.0`.
        learnable_scale: learn ``s`` as a weight of the head (NormFace's learned scale).
            Defaults to `False`.

    Reference: Wang et al., "NormFace", 2017 (papers/002).
    """

    def __init__(self, scale: float = 30.0, learnable_scale: bool = False):
        super().__init__(scale=scale)
        self.learnable_scale = bool(learnable_scale)

    def build(self, layer):
        if not self.learnable_scale:
            return {}
        scale = layer.add_weight(
            name="scale", shape=(), initializer=keras.initializers.Constant(self.scale)
        )
        return {"scale": scale}

    def context(self, state, x_norm, training):
        return {"scale": state["scale"]} if self.learnable_scale else {}

    def target(self, cos_y, context):
        return cos_y

    def logit_scale(self, context):
        return context["scale"] if self.learnable_scale else self.scale

    def get_config(self):
        return {"scale": self.scale, "learnable_scale": self.learnable_scale}


@register
class CombinedMargin(Margin):
    """The combined margin of the ArcFace paper: ``s * (cos(m1 * theta + m2) - m3)``.

    All three margins are applied (insightface's PyTorch ``CombinedMarginLoss`` ignores ``m1``,
    and ``m2`` whenever ``m3 > 0``). Only the target logit is transformed.

    Formula:
        logit_y = s * (psi(m1 * theta_y + m2) - m3),  logit_j = s * cos(theta_j) (j != y)
        psi = cos on [0, pi], continued monotonically past it (see ``boundary``).

    Args:
        m1: multiplicative angular margin, > 0. Defaults to `1.0`.
        m2: additive angular margin in radians, in [0, pi). Defaults to `0.3`.
        m3: additive cosine margin, >= 0. Defaults to `0.2`.
        scale: ``s``. Defaults to `64.0`.
        boundary: rule once the target angle leaves [0, pi]: ``"continuous"``, ``"legacy"``
            (pytorch-metric-learning), ``"clip"`` or ``"none"`` (current insightface).
            Defaults to `"continuous"`.
        easy_margin: apply the angular margin only where ``cos(theta_y) > 0``.
            Defaults to `False`.
        margin_gradient: ``"exact"`` or ``"straight_through"``. Defaults to `"exact"`.

    Reference: Deng et al., "ArcFace", CVPR 2019 (papers/001).
    """

    def __init__(self, m1: float = 1.0, m2: float = 0.3, m3: float = 0.2, scale: float = 64.0,
                 boundary: str = "continuous", easy_margin: bool = False,
                 margin_gradient: str = "exact"):
        super().__init__(scale=scale, margin_gradient=margin_gradient)
        self.m1 = check_number("m1", m1, low=0.0, low_inclusive=False)
        self.m2 = check_number("m2", m2, low=0.0, high=math.pi, high_inclusive=False)
        self.m3 = check_number("m3", m3, low=0.0)
        self.boundary = check_choice("boundary", boundary, BOUNDARIES)
        self.easy_margin = bool(easy_margin)

    def target(self, cos_y, context):
        return angular_target(cos_y, self.m1, self.m2, self.m3, self.boundary, self.easy_margin)

    def get_config(self) -> dict[str, Any]:
        return {
            "m1": self.m1, "m2": self.m2, "m3": self.m3, **super().get_config(),
            "boundary": self.boundary, "easy_margin": self.easy_margin,
        }


@register
class ArcMargin(CombinedMargin):
    """ArcFace (additive angular margin): ``s * cos(theta_y + m)``.

    Args:
        margin: ``m`` in radians, in [0, pi). Defaults to `0.5`.
        scale: ``s``. Defaults to `64.0`.
        boundary, easy_margin, margin_gradient: as in :class:`CombinedMargin`.

    Reference: Deng et al., "ArcFace", CVPR 2019 (papers/001, papers/003).
    """

    def __init__(self, margin: float = 0.5, scale: float = 64.0, boundary: str = "continuous",
                 easy_margin: bool = False, margin_gradient: str = "exact"):
        margin = check_number("margin", margin, low=0.0, high=math.pi, high_inclusive=False)
        super().__init__(1.0, margin, 0.0, scale, boundary, easy_margin, margin_gradient)

    def get_config(self):
        config = super().get_config()
        for key in ("m1", "m2", "m3"):
            config.pop(key)
        return {"margin": self.m2, **config}


@register
class CosMargin(CombinedMargin):
    """CosFace / LMCL (additive cosine margin): ``s * (cos(theta_y) - m)``.

    Args:
        margin: ``m`` in cosine units, in [0, 2]. Defaults to `0.35`.
        scale: ``s``. Defaults to `64.0`.
        margin_gradient: as in :class:`CombinedMargin`. Defaults to `"exact"`.

    Reference: Wang et al., "CosFace", CVPR 2018 (papers/001).
    """

    def __init__(self, margin: float = 0.35, scale: float = 64.0, margin_gradient: str = "exact"):
        margin = check_number("margin", margin, low=0.0, high=2.0)
        super().__init__(1.0, 0.0, margin, scale, margin_gradient=margin_gradient)

    def get_config(self):
        return {"margin": self.m3, "scale": self.scale, "margin_gradient": self.margin_gradient}
