"""The one margin code path: cosine logits + a transform of the target logit.

Every head of the package is a :class:`Margin` on the shared cosine core:

    logits = scale * (cos + onehot(y) * (f(cos_y) - cos_y))

``f`` acts on the B target cosines only (a gather, trigonometry on B values, and a one-hot
write-back), never on all B x C logits. A margin is a pure transform; what it needs beyond the
cosine (the embedding norm, a learned or annealed parameter, an EMA statistic) it reads from the
*context* dict that :meth:`keras_facemargin.layers.MarginHead.cosines` computes, and its state
lives in Keras variables of that head (created in :meth:`Margin.build`). A margin never assigns
its state itself: it lists ``(variable, new value)`` pairs in ``context["updates"]`` and the head
applies them only for a valid, non-empty batch.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import keras
from keras import ops

from keras_facemargin._checks import check_choice, check_number
from keras_facemargin.ops.cosine import safe_acos

#: attribute under which a head attaches its context dict to its output tensor.
CONTEXT_ATTR = "_keras_facemargin_context"
BOUNDARIES = ("continuous", "legacy", "clip", "none")
MARGIN_GRADIENTS = ("exact", "straight_through")


def _static(value) -> bool:
    return isinstance(value, (int, float))


def monotone_cos(phi):
    """Continuous, monotonically decreasing extension of ``cos`` to all angles.

    Formula:
        psi(phi) = (-1)**k * cos(phi) - 2k,   k = floor(phi / pi)

    Equal to ``cos(phi)`` on [0, pi]; past pi it keeps decreasing (SphereFace's psi) and
    below 0 it keeps increasing, so a target angle pushed beyond [0, pi] by a margin never
    turns back. ``k`` is piecewise constant and carries no gradient.
    """
    k = ops.stop_gradient(ops.floor(phi / math.pi))
    sign = 1.0 - 2.0 * ops.mod(k, 2.0)
    return sign * ops.cos(phi) - 2.0 * k


def chebyshev_cos(c, m: int):
    """``cos(m * theta)`` from ``c = cos(theta)`` by the Chebyshev recurrence (exact gradients)."""
    previous, current = ops.ones_like(c), c
    for _ in range(m - 1):
        previous, current = current, 2.0 * c * current - previous
    return current if m >= 1 else previous


def angular_target(cos_y, m1=1.0, m2=0.0, m3=0.0, boundary: str = "continuous",
                   easy_margin: bool = False):
    """Target logit of the combined margin, ``cos(m1 * theta + m2) - m3``, on B target cosines.

    Args:
        cos_y: target cosines, shape (B,).
        m1: multiplicative angular margin (SphereFace), a float or a (B,) tensor.
        m2: additive angular margin (ArcFace), radians, float or (B,) tensor.
        m3: additive cosine margin (CosFace), float or (B,) tensor.
        boundary: what happens once ``m1 * theta + m2`` leaves [0, pi]:
            ``"continuous"`` (default) the monotone, continuous extension
            :func:`monotone_cos`; ``"legacy"`` pytorch-metric-learning / old insightface:
            ``cos(theta) - m2 * sin(m2)`` past pi (monotone, but jumps); ``"clip"`` clamp the
            angle to [0, pi] (AdaFace's official rule); ``"none"`` raw ``cos`` (current
            insightface: turns back up past pi).
        easy_margin: apply the angular part only where ``cos_y > 0`` (original ArcFace option).

    Returns:
        The transformed target cosines (before the scale), shape (B,).
    """
    if _static(m1) and _static(m2) and m1 == 1 and m2 == 0:
        f = cos_y
    elif (_static(m1) and _static(m2) and m2 == 0 and float(m1).is_integer()
          and boundary == "continuous"):
        m = int(m1)
        k = ops.stop_gradient(ops.floor(m * safe_acos(cos_y) / math.pi))
        f = (1.0 - 2.0 * ops.mod(k, 2.0)) * chebyshev_cos(cos_y, m) - 2.0 * k
    else:
        phi = m1 * safe_acos(cos_y) + m2
        if boundary == "continuous":
            f = monotone_cos(phi)
        elif boundary == "legacy":
            f = ops.where(phi <= math.pi, ops.cos(phi), cos_y - m2 * ops.sin(m2))
        elif boundary == "clip":
            f = ops.cos(ops.clip(phi, 0.0, math.pi))
        else:
            f = ops.cos(phi)
    if easy_margin:
        f = ops.where(cos_y > 0, f, cos_y)
    return f - m3


class Margin:
    """Base class of the margin transforms (serializable strategy objects).

    Subclasses implement :meth:`target` (and optionally :meth:`negatives`,
    :meth:`logit_scale`, and the state hooks :meth:`build` / :meth:`context` /
    :meth:`regularization` used by the head layer). :meth:`logits` is the one code path.

    Args:
        scale: the logit scale ``s``. Defaults to `64.0`.
        margin_gradient: ``"exact"`` (default) back-propagates the exact derivative of the
            reported loss; ``"straight_through"`` applies the margin in the forward pass only
            and passes the gradient to the cosine unchanged (current insightface behaviour).
    """

    #: True when the logits scale with the class-centre norm (no sub-centres then).
    uses_kernel_norm: bool = False
    #: True when the head's output without labels is the cosine (False: the logits W.x).
    outputs_cosine: bool = True

    def __init__(self, scale: float = 64.0, margin_gradient: str = "exact"):
        self.scale = check_number("scale", scale, low=0.0, low_inclusive=False)
        self.margin_gradient = check_choice("margin_gradient", margin_gradient, MARGIN_GRADIENTS)

    # --- state hooks, called by the head layer -------------------------------------------
    def build(self, layer: keras.layers.Layer) -> dict[str, Any]:
        """Create the margin's state on ``layer`` (non-trainable weights, seeds)."""
        return {}

    def context(self, state: dict[str, Any], x_norm, training: bool) -> dict[str, Any]:
        """Per-batch quantities computed from the embeddings (before the labels are known).

        State changes are not assigned here: append ``(variable, new_value)`` to
        ``context["updates"]`` from :meth:`target` / :meth:`negatives`, or return them under
        ``"updates"`` (the head extends its list with them).
        """
        return {}

    def regularization(self, context: dict[str, Any]):
        """An extra loss term the head adds with ``add_loss`` (None for most margins)."""
        return None

    # --- the math ----------------------------------------------------------------------
    def target(self, cos_y, context: dict[str, Any]):
        """Transformed target cosine ``f(cos_y)``, shape (B,)."""
        raise NotImplementedError

    def negatives(self, cos, onehot, cos_y, target, context: dict[str, Any]):
        """Transform of the non-target cosines; identity except for CurricularFace."""
        return cos

    def logit_scale(self, context: dict[str, Any]):
        """Scale applied to the adjusted cosines: ``s`` or a (B, 1) / (B, C) tensor."""
        return self.scale

    def output(self, cos, context: dict[str, Any]):
        """What the head returns without labels: the scores it classifies with (no margin).

        The cosine for every normalized head; ``W.x`` for heads whose logits keep the norms
        (softmax, L-Softmax), so that ``predict``'s argmax is the training logits' argmax.
        """
        if self.outputs_cosine:
            return cos
        return cos * self.logit_scale(context)

    @property
    def prescalable(self) -> bool:
        """True when the head may fold the logit scale into the cosine matmul (fast path)."""
        return (type(self).logit_scale is Margin.logit_scale
                and type(self).negatives is Margin.negatives)

    def logits(self, cos, labels, context: dict[str, Any] | None = None,
               prescaled: bool = False):
        """Scaled, margin-adjusted logits from cosines ``cos`` (B, C) and int labels (B,).

        With ``prescaled=True`` (only when :attr:`prescalable`), ``cos`` already holds
        ``scale * cos``, unclipped; only the B target values are unscaled and clipped.
        ``labels`` must be valid (the head checks them and reports invalid rows).
        """
        context = context if context is not None else {}
        context.setdefault("updates", [])
        num_classes = ops.shape(cos)[-1]
        safe_labels = ops.cast(labels, "int32")
        # gather the B target entries from the flat (B * C) view: cheaper than take_along_axis
        rows = ops.arange(ops.shape(cos)[0], dtype="int32")
        picked = ops.take(ops.reshape(cos, (-1,)), rows * num_classes + safe_labels)
        onehot = ops.one_hot(safe_labels, num_classes, dtype=cos.dtype)
        if prescaled or self.prescalable:
            # logits = s * cos everywhere, the target entry replaced by s * f(cos_y)
            scale = self.scale
            scaled = cos if prescaled else cos * scale
            cos_y = ops.clip(picked / scale if prescaled else picked, -1.0, 1.0)
            delta = scale * self.target(cos_y, context) - (picked if prescaled else
                                                           picked * scale)
            return scaled + onehot * self._straight(delta)[:, None]
        cos_y = ops.clip(picked, -1.0, 1.0)
        target = self.target(cos_y, context)
        delta = self._straight(target - cos_y)
        adjusted = self.negatives(cos, onehot, cos_y, target, context) + onehot * delta[:, None]
        return adjusted * self.logit_scale(context)

    def _straight(self, delta):
        if self.margin_gradient == "straight_through":
            return ops.stop_gradient(delta)
        return delta

    # --- serialization -----------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {"scale": self.scale, "margin_gradient": self.margin_gradient}

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def margin_parameters(margin_class: type[Margin]) -> list[inspect.Parameter]:
    """The keyword parameters of a margin class (used to build named heads and losses)."""
    params = list(inspect.signature(margin_class.__init__).parameters.values())[1:]
    return [p for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
