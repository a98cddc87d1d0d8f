"""Shared steps of the exporters: the serving function, held-out data, metadata."""

from __future__ import annotations

from collections.abc import Iterable

import keras
import numpy as np

from keras_facemargin.export.layers import HorizontalFlip, L2Normalize
from keras_facemargin.export.strip import find_head, margin_heads, strip_head
from keras_facemargin.runtime.metadata import ModelMetadata


def embedding_model(model: keras.Model, strip: bool | None = None, **strip_kwargs):
    """``(embedding model, head or None)``: strips the head when the model has one."""
    from keras_facemargin.models.face_recognizer import FaceRecognizer

    if isinstance(model, FaceRecognizer):  # strip_head takes the task model's backbone
        return strip_head(model, **strip_kwargs), model.head
    if strip is None:
        strip = bool(margin_heads(model))
    if strip:
        return strip_head(model, **strip_kwargs), find_head(model, strip_kwargs.get("head_layer"))
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError("An embedding model has one image input and one output. Received: "
                         f"{len(model.inputs)} inputs and {len(model.outputs)} outputs.")
    return model, None


def input_shape(model: keras.Model) -> tuple[int, int, int]:
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(f"The embedding model must take images of a fixed (H, W, C) shape. "
                         f"Received: input shape {model.inputs[0].shape}")
    return tuple(int(d) for d in shape)


def held_out(model: keras.Model, data: np.ndarray | Iterable | None, count: int = 16,
             seed: int = 0) -> np.ndarray:
    """Normalized float32 images to verify on: ``data`` (uint8 pixels are normalized) or, when
    None, ``count`` seeded random images in the normalized pixel range."""
    shape = input_shape(model)
    if data is None:
        rng = np.random.default_rng(seed)
        return rng.uniform(-1.0, 1.0, size=(count, *shape)).astype(np.float32)
    if not isinstance(data, np.ndarray):
        data = np.concatenate([np.asarray(batch) for batch in data])
    if data.ndim != 4 or tuple(data.shape[1:]) != shape:
        raise ValueError(f"verification / calibration images must have shape (N, {shape[0]}, "
                         f"{shape[1]}, {shape[2]}). Received: {data.shape}")
    if data.dtype == np.uint8:
        return ((data.astype(np.float32) - 127.5) / 128.0)
    return data.astype(np.float32)


def calibration_split(model: keras.Model, calibration: np.ndarray | Iterable,
                      verification: np.ndarray | Iterable | None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(calibration images, verification images)``, normalized float32.

    Without ``verification`` images, the last quarter of the calibration images (at least one,
    at most 64) is held out of the calibration and verified on: random noise is far from the
    faces a quantized model was calibrated for and would fail a sound int8 model.
    """
    calibration = held_out(model, calibration)
    if verification is not None:
        return calibration, held_out(model, verification)
    if len(calibration) < 2:
        raise ValueError("at least 2 calibration images are needed to hold some out for "
                         f"verification, or pass `verification_data`. Received: "
                         f"{len(calibration)} image(s)")
    count = min(64, max(1, len(calibration) // 4))
    return calibration[:-count], calibration[-count:]


def metadata(model: keras.Model, head, quantization: str | None,
             input_type: str = "float32", normalize_on_host: bool = False) -> ModelMetadata:
    import keras_facemargin

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
        l2_normalized=normalized or normalize_on_host, flip_fused=flip, input_type=input_type,
        normalize_on_host=normalize_on_host,
        package_version=keras_facemargin.__version__, training_head=head_info,
        quantization=quantization)
