"""Shared front end of the pair- and triplet-based losses: labels, gathering, distances."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_facemargin._checks import (
    check_choice,
    check_finite,
    finite_or_zero,
    nan_unless,
    prepare_labels,
)
from keras_facemargin.ops.collective import all_gather
from keras_facemargin.ops.distances import DISTANCES, pairwise_distances


def snake_case(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


class PairLoss(keras.losses.Loss):
    """Base of the losses whose ``y_pred`` is a batch of embeddings and ``y_true`` its labels.

    Subclasses implement ``pair_loss(dist, labels) -> scalar`` (the masks of
    :func:`~keras_facemargin.ops.distances.label_masks` when they need them). This class checks the
    inputs, gathers the global batch when asked, computes the distances and returns the scalar
    (a NaN or Inf embedding: ``ValueError`` eagerly, ``InvalidArgumentError`` in a graph, and
    where XLA compiled the check away a NaN loss whose gradients are zero)
    broadcast over the local batch, so that Keras' mean reduction gives the scalar back and its
    ``tf.distribute`` loss scaling applies as for any per-sample loss.
    """

    def __init__(self, distance: str, normalize: bool, global_mining: bool,
                 reduction="sum_over_batch_size", name: str | None = None, dtype=None):
        super().__init__(name=name or snake_case(type(self).__name__), reduction=reduction,
                         dtype=dtype)
        self.distance = check_choice("distance", distance, DISTANCES)
        self.normalize = bool(normalize)
        self.global_mining = bool(global_mining)

    def pair_loss(self, dist, labels):  # pragma: no cover - abstract
        raise NotImplementedError

    def call(self, y_true, y_pred):
        if len(y_pred.shape) != 2:
            raise ValueError(
                f"{type(self).__name__} expects y_pred = embeddings of shape (batch, dim). "
                f"Received: y_pred.shape={tuple(y_pred.shape)}"
            )
        labels = prepare_labels(y_true, None, name="y_true")
        if (labels.shape[0] is not None and y_pred.shape[0] is not None
                and labels.shape[0] != y_pred.shape[0]):
            raise ValueError(
                f"y_true and y_pred must hold the same number of samples. Received: "
                f"y_true.shape={tuple(y_true.shape)}, y_pred.shape={tuple(y_pred.shape)}"
            )
        # like the heads: a ValueError eagerly, an assertion in a graph; XLA drops assertions,
        # so a NaN/Inf embedding then gives a NaN loss with zero gradients (below)
        x = check_finite(ops.cast(y_pred, "float32"), "y_pred")
        local_batch = ops.shape(x)[0]
        if self.global_mining:
            x, labels = all_gather(x), all_gather(labels)
        # a NaN/Inf embedding anywhere in the (global) batch: NaN loss, zero gradients
        x, finite = finite_or_zero(x)
        dist = pairwise_distances(x, self.distance, self.normalize)
        loss = nan_unless(finite, self.pair_loss(dist, labels))
        return ops.broadcast_to(loss, (local_batch,))

    def __repr__(self) -> str:
        config = {k: v for k, v in self.get_config().items() if k not in ("name", "reduction")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in config.items())})"

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "reduction": self.reduction, "distance": self.distance,
                "normalize": self.normalize, "global_mining": self.global_mining}
