"""Pixel normalization, stated once: ``(pixel - mean) / std`` on 0-255 RGB pixels.

The data pipeline, evaluation, export metadata and the device runtime all take their mean and
std from here. Pure NumPy: importable without TensorFlow or Keras (the runtime uses it).

Two conventions are in use in face recognition:

* ``"keras_facemargin"``: ``(x - 127.5) / 128``, this package's default (insightface's MXNet-era
  recognition training and its verification scripts; maps 0-255 into [-0.996, 0.996]).
* ``"arcface_torch"``: ``(x - 127.5) / 127.5``, insightface's PyTorch training
  (``recognition/arcface_torch``) and its ONNX model zoo (``ArcFaceONNX`` feeds this); maps 0-255
  onto [-1, 1].

A model trained with one and fed the other is off by a factor 128 / 127.5 at its input (min
cosine about 0.9998 on a real network): small, silent, avoidable. Record which one a model was
trained with and pass it to the exporters (``normalization=``); the file's metadata then says it.

Example:

>>> import numpy as np
>>> from keras_facemargin.preprocessing import get_normalization
>>> get_normalization("arcface_torch").apply(np.array([0, 255], np.uint8)).tolist()
[-1.0, 1.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ARCFACE_TORCH", "DEFAULT", "KERAS_FACEMARGIN", "NORMALIZATIONS", "Normalization",
           "get_normalization"]


@dataclass(frozen=True)
class Normalization:
    """``(pixel - mean) / std`` for 0-255 RGB pixels.

    Args:
        name: a short name stored in export metadata (``"keras_facemargin"``,
            ``"arcface_torch"`` or ``"custom"``).
        mean: subtracted from every channel.
        std: the divisor, > 0.

    Example:

    >>> Normalization("custom", 127.5, 128.0).normalized_range
    (-0.99609375, 0.99609375)
    """

    name: str
    mean: float
    std: float

    def __post_init__(self):
        if not np.isfinite(self.std) or self.std <= 0 or not np.isfinite(self.mean):
            raise ValueError(f"`std` must be a positive finite number and `mean` finite. "
                             f"Received: mean={self.mean!r}, std={self.std!r}")

    def apply(self, pixels) -> np.ndarray:
        """float32 ``(pixels - mean) / std`` of a NumPy array of 0-255 pixels."""
        return ((np.asarray(pixels, np.float32) - np.float32(self.mean))
                / np.float32(self.std)).astype(np.float32)

    def invert(self, normalized) -> np.ndarray:
        """The 0-255 pixel values that :meth:`apply` maps to ``normalized`` (float32)."""
        return (np.asarray(normalized, np.float32) * np.float32(self.std)
                + np.float32(self.mean)).astype(np.float32)

    @property
    def normalized_range(self) -> tuple[float, float]:
        """Where pixels 0 and 255 land."""
        return ((0.0 - self.mean) / self.std, (255.0 - self.mean) / self.std)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mean": float(self.mean), "std": float(self.std)}


KERAS_FACEMARGIN = Normalization("keras_facemargin", 127.5, 128.0)
ARCFACE_TORCH = Normalization("arcface_torch", 127.5, 127.5)
#: what the data pipeline, evaluation and exporters use when not told otherwise.
DEFAULT = KERAS_FACEMARGIN
NORMALIZATIONS = {n.name: n for n in (KERAS_FACEMARGIN, ARCFACE_TORCH)}


def get_normalization(value: str | Normalization | tuple[float, float] | None = None
                      ) -> Normalization:
    """A :class:`Normalization` from a name, a ``(mean, std)`` pair or an instance.

    Args:
        value: ``"keras_facemargin"`` (127.5 / 128), ``"arcface_torch"`` (127.5 / 127.5), a
            ``(mean, std)`` pair (named after the matching convention, else ``"custom"``), a
            :class:`Normalization`, or `None`. Defaults to `None`: :data:`DEFAULT`.

    Returns:
        A :class:`Normalization`.

    Example:

    >>> get_normalization((127.5, 127.5)).name
    'arcface_torch'
    """
    if value is None:
        return DEFAULT
    if isinstance(value, Normalization):
        return value
    if isinstance(value, str):
        if value not in NORMALIZATIONS:
            raise ValueError(f"`normalization` must be one of {sorted(NORMALIZATIONS)}, a "
                             f"(mean, std) pair or a Normalization. Received: "
                             f"normalization={value!r}")
        return NORMALIZATIONS[value]
    try:
        mean, std = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"`normalization` must be one of {sorted(NORMALIZATIONS)}, a "
                         f"(mean, std) pair or a Normalization. Received: "
                         f"normalization={value!r}") from None
    for known in NORMALIZATIONS.values():
        if (known.mean, known.std) == (mean, std):
            return known
    return Normalization("custom", mean, std)
