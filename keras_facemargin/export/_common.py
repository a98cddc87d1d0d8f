"""Shared steps of the exporters: the embedding model, held-out data, metadata."""

from __future__ import annotations

from collections.abc import Iterable

import keras
import numpy as np

from keras_facemargin.export.layers import HorizontalFlip, L2Normalize
from keras_facemargin.export.strip import (
    embedding_at,
    ends_in_softmax,
    find_head,
    margin_heads,
    strip_head,
)
from keras_facemargin.preprocessing import Normalization, get_normalization
from keras_facemargin.runtime.metadata import ModelMetadata


def embedding_model(model: keras.Model, strip: bool | None = None, *,
                    embedding_layer: str | keras.layers.Layer | None = None, **strip_kwargs):
    """``(embedding model, head or None)``.

    * ``embedding_layer`` given: the model up to that layer's output (a model without a
      margin head must say where its embedding is);
    * a margin head (or ``head_layer``) and ``strip`` not `False`: the head stripped;
    * ``strip=False``: the model itself, stated to be an embedding model (refused when it ends
      in a softmax: classifier probabilities are not an embedding);
    * otherwise (no margin head, nothing stated): refused.
    """
    if embedding_layer is not None:
        kwargs = {k: v for k, v in strip_kwargs.items() if k != "head_layer"}
        return embedding_at(model, embedding_layer, **kwargs), None
    from keras_facemargin.models.face_recognizer import FaceRecognizer

    if isinstance(model, FaceRecognizer):  # strip_head takes the task model's backbone
        return strip_head(model, **strip_kwargs), model.head
    has_head = bool(margin_heads(model)) or strip_kwargs.get("head_layer") is not None
    if strip is None:
        strip = has_head
        if not has_head:
            raise ValueError(
                f"The model {model.name!r} has no margin head, so which output is the "
                "embedding is not known (its output may be a classifier's scores). Pass "
                "`embedding_layer=` the name of the layer whose output is the embedding ("
                "this package's backbones call it 'embedding'), `head_layer=` the layer fed "
                "by the embedding, or `strip=False` if the model's output is the embedding. "
                f"Received: a model whose last layer is {model.layers[-1].name!r}.")
    if strip:
        return strip_head(model, **strip_kwargs), find_head(model, strip_kwargs.get("head_layer"))
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError("An embedding model has one image input and one output. Received: "
                         f"{len(model.inputs)} inputs and {len(model.outputs)} outputs.")
    if ends_in_softmax(model):
        raise ValueError(
            f"`strip=False` states that the model's output is the embedding, but "
            f"{model.name!r} ends in a softmax (class probabilities, not an embedding). Pass "
            "`embedding_layer=` the layer whose output is the embedding. Received: last layer "
            f"{model.layers[-1].name!r}.")
    return model, None


def input_shape(model: keras.Model) -> tuple[int, int, int]:
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(f"The embedding model must take images of a fixed (H, W, C) shape. "
                         f"Received: input shape {model.inputs[0].shape}")
    return tuple(int(d) for d in shape)


def held_out(model: keras.Model, data: np.ndarray | Iterable | None, count: int = 16,
             seed: int = 0, normalization: str | Normalization | None = None) -> np.ndarray:
    """Normalized float32 images to verify on: ``data`` (uint8 pixels are normalized with
    ``normalization``, what the model was trained with; floats are taken as normalized) or,
    when None, ``count`` seeded random images spanning the normalized pixel range."""
    norm = get_normalization(normalization)
    shape = input_shape(model)
    if data is None:
        rng = np.random.default_rng(seed)
        low, high = norm.normalized_range
        return rng.uniform(low, high, size=(count, *shape)).astype(np.float32)
    if not isinstance(data, np.ndarray):
        data = np.concatenate([np.asarray(batch) for batch in data])
    if data.ndim != 4 or tuple(data.shape[1:]) != shape:
        raise ValueError(f"verification / calibration images must have shape (N, {shape[0]}, "
                         f"{shape[1]}, {shape[2]}). Received: {data.shape}")
    if data.dtype == np.uint8:
        return norm.apply(data)
    return data.astype(np.float32)


def calibration_split(model: keras.Model, calibration: np.ndarray | Iterable,
                      verification: np.ndarray | Iterable | None,
                      normalization: str | Normalization | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(calibration images, verification images)``, normalized float32.

    Without ``verification`` images, the last quarter of the calibration images (at least one,
    at most 64) is held out of the calibration and verified on: random noise is far from the
    faces a quantized model was calibrated for and would fail a sound int8 model.
    """
    calibration = held_out(model, calibration, normalization=normalization)
    if verification is not None:
        return calibration, held_out(model, verification, normalization=normalization)
    if len(calibration) < 2:
        raise ValueError("at least 2 calibration images are needed to hold some out for "
                         f"verification, or pass `verification_data`. Received: "
                         f"{len(calibration)} image(s)")
    count = min(64, max(1, len(calibration) // 4))
    return calibration[:-count], calibration[-count:]


def metadata(model: keras.Model, head, quantization: str | None,
             input_type: str = "float32", normalize_on_host: bool = False, *,
             normalization: str | Normalization | None = None,
             file_normalization: str | Normalization | None = None, layout: str = "NHWC",
             convention: str = "keras_facemargin",
             min_runtime: dict[str, str] | None = None) -> ModelMetadata:
    """The :class:`ModelMetadata` of an export of ``model``.

    ``normalization`` is what the model was trained with; ``file_normalization`` what the
    written file expects on its input (defaults to the same; differs when the exporter put the
    map between the two into the graph).
    """
    import keras_facemargin

    trained = get_normalization(normalization)
    expected = trained if file_normalization is None else get_normalization(file_normalization)
    flip = any(isinstance(layer, HorizontalFlip) for layer in model.layers)
    normalized = isinstance(model.layers[-1], L2Normalize)
    head_info = {}
    if head is not None:
        config = head.get_config()
        head_info = {"class_name": type(head).__name__,
                     **{k: v for k, v in config.items()
                        if k in ("num_classes", "margin", "scale", "m1", "m2", "m3",
                                 "sub_centers")}}
    return ModelMetadata(
        embedding_size=int(model.outputs[0].shape[-1]), input_shape=input_shape(model),
        mean=float(expected.mean), std=float(expected.std), normalization=expected.name,
        trained_normalization=trained.to_dict(), layout=layout, convention=convention,
        l2_normalized=normalized or normalize_on_host, flip_fused=flip, input_type=input_type,
        normalize_on_host=normalize_on_host, min_runtime=dict(min_runtime or {}),
        package_version=keras_facemargin.__version__, training_head=head_info,
        quantization=quantization)
