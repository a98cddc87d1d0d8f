"""The metadata every exported embedding model carries (JSON), shared by export and runtime."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

#: the key of the metadata entry (TFLite metadata name, ONNX metadata_props key).
KEY = "keras_facemargin"
SCHEMA_VERSION = 2  # 2: layout, normalization, trained_normalization, convention, min_runtime


@dataclass(frozen=True)
class ModelMetadata:
    """What a device needs to know to feed an exported embedding model.

    Attributes:
        embedding_size: D.
        input_shape: (H, W, C) of one image.
        channel_order: ``"RGB"``.
        mean, std: pixel normalization ``(x - mean) / std`` the file expects on its input,
            applied to 0-255 pixels (the runtime does it).
        normalization: the name of that convention (:mod:`keras_facemargin.preprocessing`:
            ``"keras_facemargin"`` 127.5 / 128, ``"arcface_torch"`` 127.5 / 127.5, or
            ``"custom"``).
        trained_normalization: ``{"name", "mean", "std"}`` the model was trained with; when
            it differs from ``mean`` / ``std`` the exporter put the affine map between the two
            into the graph (so the file's own convention gives the trained model's embeddings).
        layout: ``"NHWC"`` (``[N, H, W, C]`` input) or ``"NCHW"`` (``[N, C, H, W]``,
            insightface's convention); ``input_shape`` is (H, W, C) either way.
        convention: ``"keras_facemargin"`` or ``"insightface"`` (what the file was shaped for).
        min_runtime: the oldest runtime release that runs the file, per backend
            (``{"onnxruntime": "1.12"}``, ``{"tflite_runtime": "2.17"}``...).
        l2_normalized: the model's output is L2-normalized.
        flip_fused: the model adds the embedding of the mirrored image itself.
        input_type: dtype the model takes (``"float32"``, or ``"int8"`` / ``"uint8"`` for a
            full-integer TFLite model with integer input).
        package_version: keras_facemargin version that exported it.
        training_head: class name and hyper-parameters of the head it was trained with.
        quantization: ``None``, ``"float16"``, ``"dynamic"`` or ``"int8"``.
        normalize_on_host: the graph ends before the L2 normalization, which the runtime
            applies in float (full-integer models: an int8 unit vector loses too much).
    """

    embedding_size: int
    input_shape: tuple[int, int, int]
    channel_order: str = "RGB"
    mean: float = 127.5
    std: float = 128.0
    l2_normalized: bool = True
    flip_fused: bool = False
    input_type: str = "float32"
    package_version: str = ""
    training_head: dict[str, Any] = field(default_factory=dict)
    quantization: str | None = None
    normalize_on_host: bool = False
    normalization: str = "keras_facemargin"
    trained_normalization: dict[str, Any] = field(default_factory=dict)
    layout: str = "NHWC"
    convention: str = "keras_facemargin"
    min_runtime: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelMetadata:
        try:
            values = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"the model's {KEY!r} metadata is not valid JSON: {err}") from None
        if not isinstance(values, dict) or "embedding_size" not in values:
            raise ValueError(f"the model's {KEY!r} metadata lacks 'embedding_size'.")
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        known["input_shape"] = tuple(known.get("input_shape", (112, 112, 3)))
        if known.get("layout", "NHWC") not in ("NHWC", "NCHW"):
            raise ValueError(f"the model's {KEY!r} metadata has an unknown layout. Received: "
                             f"layout={known['layout']!r}")
        return cls(**known)
