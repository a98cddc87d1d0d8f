"""Multiplicative angular margins with the embedding norm kept: SphereFace, L-Softmax, softmax."""

from __future__ import annotations

from keras import ops

from keras_facemargin._api import register
from keras_facemargin._checks import check_int, check_number
from keras_facemargin.margins.base import Margin, angular_target


@register
class SphereMargin(Margin):
    """SphereFace (A-Softmax): ``||x|| * psi(theta_y)`` with the paper's lambda annealing.

    Formula:
        psi(theta) = (-1)^k cos(m theta) - 2k,   k = floor(m theta / pi)
        f(theta)   = (lambda cos(theta) + psi(theta)) / (1 + lambda)
        lambda     = max(lambda_min, lambda_base * (1 + lambda_gamma * step) ** -lambda_power)
        logit_y    = s ||x|| f(theta_y),   logit_j = s ||x|| cos(theta_j)

    ``step`` counts training calls of the head (a non-trainable weight saved with the model).
    ``lambda_base = lambda_min = 0`` gives the pure psi of pytorch-metric-learning.

    Args:
        margin: integer ``m >= 1``. Defaults to `4`.
        scale: ``s``. Defaults to `1.0`.
        lambda_base, lambda_gamma, lambda_power, lambda_min: the annealing schedule; the
            defaults `1000`, `0.12`, `1`, `5` are those of the authors' Caffe release.
        margin_gradient: ``"exact"`` or ``"straight_through"``. Defaults to `"exact"`.

    Reference: Liu et al., "SphereFace", CVPR 2017 (papers/000, papers/001).
    """

    uses_kernel_norm = False

    def __init__(self, margin: int = 4, scale: float = 1.0, lambda_base: float = 1000.0,
                 lambda_gamma: float = 0.12, lambda_power: float = 1.0, lambda_min: float = 5.0,
                 margin_gradient: str = "exact"):
        super().__init__(scale=scale, margin_gradient=margin_gradient)
        self.margin = check_int("margin", margin, low=1)
        self.lambda_base = check_number("lambda_base", lambda_base, low=0.0)
        self.lambda_gamma = check_number("lambda_gamma", lambda_gamma, low=0.0)
        self.lambda_power = check_number("lambda_power", lambda_power, low=0.0)
        self.lambda_min = check_number("lambda_min", lambda_min, low=0.0)

    @property
    def _annealed(self) -> bool:
        return self.lambda_base > self.lambda_min

    def build(self, layer):
        if not self._annealed:
            return {}
        step = layer.add_weight(name="step", shape=(), initializer="zeros", trainable=False,
                                aggregation="only_first_replica")
        return {"step": step}

    def context(self, state, x_norm, training):
        if not self._annealed:
            return {}
        step = state["step"]
        lam = ops.maximum(
            self.lambda_min,
            self.lambda_base * ops.power(1.0 + self.lambda_gamma * step, -self.lambda_power),
        )
        updates = [(step, step + 1.0)] if training else []
        return {"lambda": lam, "updates": updates}

    def target(self, cos_y, context):
        psi = angular_target(cos_y, m1=float(self.margin))
        if not self._annealed:
            lam = self.lambda_min
            return psi if lam == 0 else (lam * cos_y + psi) / (1.0 + lam)
        lam = context["lambda"]
        return (lam * cos_y + psi) / (1.0 + lam)

    def logit_scale(self, context):
        scale = self.scale * context["x_norm"][:, None]
        if self.uses_kernel_norm:
            scale = scale * context["kernel_norm"][None, :]
        return scale

    def get_config(self):
        return {
            "margin": self.margin, "scale": self.scale, "lambda_base": self.lambda_base,
            "lambda_gamma": self.lambda_gamma, "lambda_power": self.lambda_power,
            "lambda_min": self.lambda_min, "margin_gradient": self.margin_gradient,
        }


@register
class LargeMarginSoftmaxMargin(SphereMargin):
    """L-Softmax: ``||W_y|| ||x|| psi(theta_y)``, class centres not normalized.

    Formula:
        logit_y = s ||W_y|| ||x|| f(theta_y),   logit_j = s ||W_j|| ||x|| cos(theta_j) = s W_j.x

    ``f`` as in :class:`SphereMargin`; lambda defaults to 0 (pytorch-metric-learning's
    ``LargeMarginSoftmaxLoss``); set ``lambda_base``/``lambda_min`` to anneal as in the paper.

    Args:
        margin: integer ``m >= 1``. Defaults to `4`.
        scale: ``s``. Defaults to `1.0`.
        lambda_base, lambda_gamma, lambda_power, lambda_min: annealing. Defaults to `0`,
            `0.12`, `1`, `0`.

    Reference: Liu et al., "Large-Margin Softmax Loss for CNNs", ICML 2016.
    """

    uses_kernel_norm = True
    outputs_cosine = False

    def __init__(self, margin: int = 4, scale: float = 1.0, lambda_base: float = 0.0,
                 lambda_gamma: float = 0.12, lambda_power: float = 1.0, lambda_min: float = 0.0,
                 margin_gradient: str = "exact"):
        super().__init__(margin, scale, lambda_base, lambda_gamma, lambda_power, lambda_min,
                         margin_gradient)


@register
class SoftmaxMargin(Margin):
    """Plain softmax (DeepID baseline): logits ``W_j . x`` (no normalization, no margin, no bias).

    Formula:
        logit_j = ||W_j|| ||x|| cos(theta_j) = W_j . x

    Reference: Sun et al., "DeepID", CVPR 2014 (papers/000).
    """

    uses_kernel_norm = True
    outputs_cosine = False

    def __init__(self):
        super().__init__(scale=1.0)

    def target(self, cos_y, context):
        return cos_y

    def logit_scale(self, context):
        return context["x_norm"][:, None] * context["kernel_norm"][None, :]

    def get_config(self):
        return {}
