"""The named heads: each is :class:`MarginHead` with one margin (see ``keras_facemargin.margins``).

Every named head takes the common head arguments as keywords (``sub_centers``, ``sample_rate``,
``seed``, ``kernel_initializer``, ``kernel_regularizer``, ``check_inputs``,
``displacement_basis``, ``name``...; see :class:`MarginHead`), and ``head.loss`` is the loss of
the Sequential path. The formula of each margin is in its margin class.
"""

from __future__ import annotations

from typing import Any

from keras_facemargin import margins as M
from keras_facemargin._api import register
from keras_facemargin.layers.head import MarginHead


class NamedMarginHead(MarginHead):
    """A :class:`MarginHead` whose margin is given by its own keyword arguments (config: flat)."""

    def __init__(self, num_classes: int, margin, /, **kwargs):
        if "margin" in kwargs:  # a head whose margin has no `margin` argument
            raise ValueError(f"{type(self).__name__} takes no `margin` argument. "
                             f"Received: margin={kwargs['margin']!r}")
        super().__init__(num_classes, margin, **kwargs)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("margin")
        config.update(self.margin.get_config())
        return config


@register
class ArcMarginLayer(NamedMarginHead):
    """ArcFace head (additive angular margin): ``s * cos(theta_y + m)``.

    Args:
        num_classes: number of identities C.
        margin: ``m`` in radians, in [0, pi). Defaults to `0.5`.
        scale: ``s``. Defaults to `64.0`.
        boundary: rule once ``theta + m`` passes pi (see :class:`~keras_facemargin.margins.
            CombinedMargin`). Defaults to `"continuous"`.
        easy_margin: margin only where ``cos(theta_y) > 0``. Defaults to `False`.
        margin_gradient: ``"exact"`` or ``"straight_through"``. Defaults to `"exact"`.
        **kwargs: the common head arguments (:class:`MarginHead`), e.g. ``sample_rate=0.1``.

    Example:

    >>> from keras_facemargin import ArcMarginLayer
    >>> head = ArcMarginLayer(num_classes=1000, margin=0.5, scale=64.0)

    Reference: Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition",
    CVPR 2019.
    """

    def __init__(self, num_classes: int, margin: float = 0.5, scale: float = 64.0, *,
                 boundary: str = "continuous", easy_margin: bool = False,
                 margin_gradient: str = "exact", **kwargs):
        super().__init__(num_classes, M.ArcMargin(margin, scale, boundary, easy_margin,
                                                  margin_gradient), **kwargs)


@register
class SubCenterArcMarginLayer(ArcMarginLayer):
    """Sub-center ArcFace head: K sub-centres per class, max over K before the ArcFace margin.

    Args:
        num_classes: number of identities C.
        margin, scale, boundary, easy_margin, margin_gradient: as :class:`ArcMarginLayer`.
        sub_centers: K. Defaults to `3`.
        **kwargs: the common head arguments (:class:`MarginHead`).

    Example:

    >>> from keras_facemargin import SubCenterArcMarginLayer
    >>> head = SubCenterArcMarginLayer(num_classes=1000, sub_centers=3)

    Reference: Deng et al., "Sub-center ArcFace", ECCV 2020.
    """

    def __init__(self, num_classes: int, margin: float = 0.5, scale: float = 64.0, *,
                 sub_centers: int = 3, **kwargs):
        super().__init__(num_classes, margin, scale, sub_centers=sub_centers, **kwargs)


@register
class CosMarginLayer(NamedMarginHead):
    """CosFace (LMCL) head (additive cosine margin): ``s * (cos(theta_y) - m)``.

    Args:
        num_classes: number of identities C.
        margin: ``m`` in cosine units, in [0, 2]. Defaults to `0.35`.
        scale: ``s``. Defaults to `64.0`.
        margin_gradient: ``"exact"`` or ``"straight_through"``. Defaults to `"exact"`.
        **kwargs: the common head arguments (:class:`MarginHead`).

    Example:

    >>> from keras_facemargin import CosMarginLayer
    >>> head = CosMarginLayer(num_classes=1000, margin=0.35)

    Reference: Wang et al., "CosFace: Large Margin Cosine Loss", CVPR 2018.
    """

    def __init__(self, num_classes: int, margin: float = 0.35, scale: float = 64.0, *,
                 margin_gradient: str = "exact", **kwargs):
        super().__init__(num_classes, M.CosMargin(margin, scale, margin_gradient), **kwargs)


@register
class CombinedMarginLayer(NamedMarginHead):
    """Combined-margin head: ``s * (cos(m1 * theta_y + m2) - m3)`` (all three applied).

    Args:
        num_classes: number of identities C.
        m1: multiplicative angular margin, > 0. Defaults to `1.0`.
        m2: additive angular margin (radians). Defaults to `0.3`.
        m3: additive cosine margin. Defaults to `0.2`.
        scale: ``s``. Defaults to `64.0`.
        boundary, easy_margin, margin_gradient: as :class:`ArcMarginLayer`.
        **kwargs: the common head arguments (:class:`MarginHead`).

    Example:

    >>> from keras_facemargin import CombinedMarginLayer
    >>> head = CombinedMarginLayer(num_classes=1000, m1=1.0, m2=0.3, m3=0.2)

    Reference: Deng et al., "ArcFace", CVPR 2019 (combined margin, Section 3).
    """

    def __init__(self, num_classes: int, m1: float = 1.0, m2: float = 0.3, m3: float = 0.2,
                 scale: float = 64.0, *, boundary: str = "continuous", easy_margin: bool = False,
                 margin_gradient: str = "exact", **kwargs):
        super().__init__(num_classes, M.CombinedMargin(m1, m2, m3, scale, boundary, easy_margin,
                                                       margin_gradient), **kwargs)


@register
class NormSoftmaxLayer(NamedMarginHead):
    """NormFace head (normalized softmax, no margin): ``s * cos(theta_j)``.

    Args:
        num_classes: number of identities C.
        scale: ``s``. Defaults to `30.0`.
        learnable_scale: learn ``s`` as a weight of the head. Defaults to `False`.
        **kwargs: the common head arguments (:class:`MarginHead`).

    Example:

    >>> from keras_facemargin import NormSoftmaxLayer
    >>> head = NormSoftmaxLayer(num_classes=1000, scale=30.0)

    Reference: Wang et al., "NormFace: L2 Hypersphere Embedding for Face Verification", 2017.
    """

    def __init__(self, num_classes: int, scale: float = 30.0, *, learnable_scale: bool = False,
                 **kwargs):
        super().__init__(num_classes, M.NormMargin(scale, learnable_scale), **kwargs)


@register
class SphereMarginLayer(NamedMarginHead):
    """SphereFace (A-Softmax) head: ``s ||x|| psi(theta_y)``, lambda annealed.

    Args:
        num_classes: number of identities C.
        margin: integer ``m >= 1``. Defaults to `4`.
        scale: ``s``. Defaults to `1.0`.
        lambda_base, lambda_gamma, lambda_power, lambda_min: the annealing schedule of
            :class:`~keras_facemargin.margins.SphereMargin`. Defaults to `1000.0`, `0.12`,
            `1.0`, `5.0`.
        margin_gradient: ``"exact"`` or ``"straight_through"``. Defaults to `"exact"`.
        **kwargs: the common head arguments (:class:`MarginHead`).

    Example:

    >>> from keras_facemargin import SphereMarginLayer
    >>> head = SphereMarginLayer(num_classes=1000, margin=4)

    Reference: Liu et al., "SphereFace: Deep Hypersphere Embedding", CVPR 2017.
    """

    def __init__(self, num_classes: int, margin: int = 4, scale: float = 1.0, *,
                 lambda_base: float = 1000.0, lambda_gamma: float = 0.12,
                 lambda_power: float = 1.0, lambda_min: float = 5.0,
                 margin_gradient: str = "exact", **kwargs):
        super().__init__(num_classes, M.SphereMargin(margin, scale, lambda_base, lambda_gamma,
                                                     lambda_power, lambda_min, margin_gradient),
                         **kwargs)


@register
class LargeMarginSoftmaxLayer(NamedMarginHead):
    """L-Softmax head: ``||W_y|| ||x|| psi(theta_y)``; without labels it returns ``W.x``.

    Args:
        num_classes: number of identities C.
        margin: integer ``m >= 1``. Defaults to `4`.
        scale: ``s``. Defaults to `1.0`.
        lambda_base, lambda_gamma, lambda_power, lambda_min: annealing. Defaults to `0.0`,
            `0.12`, `1.0`, `0.0`.
        margin_gradient: ``"exact"`` or ``"straight_through"``. Defaults to `"exact"`.
        **kwargs: the common head arguments (:class:`MarginHead`).

    Example:

    >>> from keras_facemargin import LargeMarginSoftmaxLayer
    >>> head = LargeMarginSoftmaxLayer(num_classes=10, margin=2)

    Reference: Liu et al., "Large-Margin Softmax Loss for Convolutional Neural Networks",
    ICML 2016.
    """

    def __init__(self, num_classes: int, margin: int = 4, scale: float = 1.0, *,
                 lambda_base: float = 0.0, lambda_gamma: float = 0.12,
                 lambda_power: float = 1.0, lambda_min: float = 0.0,
                 margin_gradient: str = "exact", **kwargs):
        super().__init__(num_classes, M.LargeMarginSoftmaxMargin(
            margin, scale, lambda_base, lambda_gamma, lambda_power, lambda_min, margin_gradient),
            **kwargs)


@register
class CurricularMarginLayer(NamedMarginHead):
    """CurricularFace head: ArcFace target, hard negatives re-weighted by an EMA ``t``.

    Args:
        num_classes: number of identities C.
        margin: ``m`` in radians. Defaults to `0.5`.
        scale: ``s``. Defaults to `64.0`.
        momentum: EMA rate of ``t``. Defaults to `0.01`.
        boundary, margin_gradient: as :class:`ArcMarginLayer`.
        **kwargs: the common head arguments (:class:`MarginHead`).

    Example:

    >>> from keras_facemargin import CurricularMarginLayer
    >>> head = CurricularMarginLayer(num_classes=1000)

    Reference: Huang et al., "CurricularFace", CVPR 2020.
    """

    def __init__(self, num_classes: int, margin: float = 0.5, scale: float = 64.0, *,
                 momentum: float = 0.01, boundary: str = "continuous",
                 margin_gradient: str = "exact", **kwargs):
        super().__init__(num_classes, M.CurricularMargin(margin, scale, momentum, boundary,
                                                         margin_gradient), **kwargs)


@register
class AdaMarginLayer(NamedMarginHead):
    """AdaFace head: a margin adapted to image quality through the feature norm.

    Args:
        num_classes: number of identities C.
        margin: ``m``. Defaults to `0.4`.
        scale: ``s``. Defaults to `64.0`.
        h: concentration of the normalized norm. Defaults to `0.333`.
        momentum: EMA rate of the norm statistics. Defaults to `0.01`.
        eps: added to sigma. Defaults to `1e-3`.
        boundary, margin_gradient: as :class:`ArcMarginLayer`.
        **kwargs: the common head arguments (:class:`MarginHead`).

    Example:

    >>> from keras_facemargin import AdaMarginLayer
    >>> head = AdaMarginLayer(num_classes=1000)

    Reference: Kim et al., "AdaFace: Quality Adaptive Margin", CVPR 2022.
    """

    def __init__(self, num_classes: int, margin: float = 0.4, scale: float = 64.0, *,
                 h: float = 0.333, momentum: float = 0.01, eps: float = 1e-3,
                 boundary: str = "continuous", margin_gradient: str = "exact", **kwargs):
        super().__init__(num_classes, M.AdaMargin(margin, scale, h, momentum, eps, boundary,
                                                  margin_gradient), **kwargs)


@register
class MagMarginLayer(NamedMarginHead):
    """MagFace head: magnitude-aware margin plus the regularizer ``lambda_g * g(a)``.

    Args:
        num_classes: number of identities C.
        scale: ``s``. Defaults to `64.0`.
        lower_margin, upper_margin: margin at the lower / upper magnitude. Defaults to `0.45`,
            `0.8`.
        lower_norm, upper_norm: magnitude range. Defaults to `10.0`, `110.0`.
        lambda_g: weight of the regularizer. Defaults to `35.0`.
        boundary, margin_gradient: as :class:`ArcMarginLayer`.
        **kwargs: the common head arguments (:class:`MarginHead`).

    Example:

    >>> from keras_facemargin import MagMarginLayer
    >>> head = MagMarginLayer(num_classes=1000)

    Reference: Meng et al., "MagFace", CVPR 2021.
    """

    def __init__(self, num_classes: int, scale: float = 64.0, *, lower_margin: float = 0.45,
                 upper_margin: float = 0.8, lower_norm: float = 10.0, upper_norm: float = 110.0,
                 lambda_g: float = 35.0, boundary: str = "continuous",
                 margin_gradient: str = "exact", **kwargs):
        super().__init__(num_classes, M.MagMargin(scale, lower_margin, upper_margin, lower_norm,
                                                  upper_norm, lambda_g, boundary,
                                                  margin_gradient), **kwargs)


@register
class ElasticMarginLayer(NamedMarginHead):
    """ElasticFace head: margin drawn per sample from N(m, std) at each training step.

    Args:
        num_classes: number of identities C.
        margin: mean margin. Defaults to `0.5` (use `0.35` with ``kind="cos"``).
        std: standard deviation. Defaults to `0.05`.
        kind: ``"arc"`` or ``"cos"``. Defaults to `"arc"`.
        plus: ElasticFace+ ordering. Defaults to `False`.
        scale: ``s``. Defaults to `64.0`.
        seed: seed of the margin's random generator (and of the Partial FC sampler).
            Defaults to `None`.
        boundary, margin_gradient: as :class:`ArcMarginLayer`.
        **kwargs: the common head arguments (:class:`MarginHead`).

    Example:

    >>> from keras_facemargin import ElasticMarginLayer
    >>> head = ElasticMarginLayer(num_classes=1000, std=0.05)

    Reference: Boutros et al., "ElasticFace", CVPRW 2022.
    """

    def __init__(self, num_classes: int, margin: float = 0.5, std: float = 0.05, *,
                 kind: str = "arc", plus: bool = False, scale: float = 64.0,
                 seed: int | None = None, boundary: str = "continuous",
                 margin_gradient: str = "exact", **kwargs):
        super().__init__(num_classes, M.ElasticMargin(margin, std, kind, plus, scale, seed,
                                                      boundary, margin_gradient), seed=seed,
                         **kwargs)


@register
class SoftmaxLayer(NamedMarginHead):
    """Softmax (DeepID) baseline head: logits ``W.x``, no normalization, no margin.

    Without labels it returns the logits ``W.x`` it classifies with (``predict`` and
    ``metrics=["accuracy"]`` agree with training).

    Args:
        num_classes: number of identities C.
        **kwargs: the common head arguments (:class:`MarginHead`).

    Example:

    >>> from keras_facemargin import SoftmaxLayer
    >>> head = SoftmaxLayer(num_classes=1000)

    Reference: Sun et al., "Deep Learning Face Representation from Predicting 10,000 Classes"
    (DeepID), CVPR 2014.
    """

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(num_classes, M.SoftmaxMargin(), **kwargs)
