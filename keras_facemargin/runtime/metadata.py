"""The metadata every exported embedding model carries (JSON), shared by export and runtime."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

#: the key of the metadata entry (TFLite metadata name, ONNX metadata_props key).
KEY = "keras_facemargin"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ModelMetadata:
    """What a device needs to know to feed an exported embedding model.

    Attributes:
        embedding_size: D.
        input_shape: (H, W, C) of one image.
        channel_order: ``"RGB"``.
        mean, std: pixel normalization ``(x - mean) / std`` applied to 0-255 pixels.
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
        return cls(**known)
