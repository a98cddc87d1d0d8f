"""Partial FC (An et al., 2022) is an option of every head: ``sample_rate < 1``.

:class:`PartialFCHead` remains as a name for a :class:`~keras_facemargin.layers.MarginHead` with
``sample_rate=0.1`` by default; train it (as any sampled head) with
:class:`~keras_facemargin.FaceRecognizer`. The sampler lives in
:mod:`keras_facemargin.ops.sampling`.
"""
from __future__ import annotations

from keras_facemargin._api import register
from keras_facemargin.layers.head import MarginHead
from keras_facemargin.ops.sampling import num_sampled_classes, sample_classes

__all__ = ["PartialFCHead", "num_sampled_classes", "sample_classes"]


@register
class PartialFCHead(MarginHead):
    """A margin head that trains on a sample of the class centres (Partial FC).

    The same head as every other (``MarginHead(C, margin, sample_rate=...)``), with ArcFace as
    the default margin and a default sample rate of 0.1. ``ArcMarginLayer(C, sample_rate=0.1)``
    is the same thing.

    Args:
        num_classes: C, >= 1.
        margin: a :class:`~keras_facemargin.margins.Margin`. Defaults to `ArcMargin()`.
        sample_rate: fraction of the centres per step, in (0, 1]. Defaults to `0.1`.
        **kwargs: as for :class:`~keras_facemargin.layers.MarginHead`.

    Example:

    >>> import keras
    >>> from keras_facemargin import FaceRecognizer, PartialFCHead
    >>> backbone = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8)])
    >>> model = FaceRecognizer(backbone, PartialFCHead(1000, sample_rate=0.1))
    >>> model.compile()
    """

    def __init__(self, num_classes: int, margin=None, *, sample_rate: float = 0.1, **kwargs):
        from keras_facemargin.margins import ArcMargin

        super().__init__(num_classes, ArcMargin() if margin is None else margin,
                         sample_rate=sample_rate, **kwargs)
