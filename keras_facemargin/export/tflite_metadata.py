"""The standard TFLite Model Metadata (``TFLITE_METADATA``) of an exported embedding model.

MediaPipe Tasks (``ImageEmbedder``), the TFLite Support library and Android Studio read a
``ModelMetadata`` flatbuffer (schema ``metadata_schema.fbs`` of tensorflow/tflite-support, file
identifier ``M001``) stored in a model buffer that the model's metadata list names
``TFLITE_METADATA``. For a float input, MediaPipe refuses a model without its
``NormalizationOptions``. tflite-support cannot be installed beside TensorFlow 2.21, so the
buffer is written here with the ``flatbuffers`` runtime and the object API generated from the
official schema (``_tflite_metadata_schema``, see its README).

What is written, for an image input ``[N, H, W, 3]`` and an embedding output ``[N, D]``:

* ``ModelMetadata``: name, description (input, output, how to compare), version (the
  package's), author, ``min_parser_version`` ``"1.0.0"`` (only fields of schema 1.0.0 are used).
* input ``TensorMetadata`` ``"image"``: ``ImageProperties`` (RGB, default size W x H),
  ``NormalizationOptions`` per channel such that ``input value = (pixel - mean) / std`` for
  0-255 pixels (the real, dequantized value for an integer input), and ``Stats`` min/max of
  that value for pixels 0 and 255.
* output ``TensorMetadata`` ``"embedding"``: ``FeatureProperties`` and a description.
"""

from __future__ import annotations

import flatbuffers
import numpy as np

from keras_facemargin.export._tflite_metadata_schema import metadata_schema_generated as schema

#: the name of the metadata entry MediaPipe and tflite-support look for.
NAME = "TFLITE_METADATA"
#: the file identifier of a ModelMetadata flatbuffer.
IDENTIFIER = b"M001"
#: every field written here exists in metadata schema 1.0.0.
MIN_PARSER_VERSION = "1.0.0"


def tensor_normalization(mean: float, std: float, input_type: str,
                         normalization_in_graph: bool) -> tuple[float, float]:
    """``(mean, std)`` with ``input value = (pixel - mean) / std`` for the model's input.

    The input value is the real (dequantized) value of the input tensor: for an integer
    tensor, ``(q - zero_point) * scale``; this is how TFLite Support reads the metadata of a
    quantized model (a uint8 image is fed as it is and the quantization carries the rest).

    Args:
        mean, std: the training normalization of 0-255 pixels.
        input_type: the input tensor's type, ``"float32"``, ``"uint8"`` or ``"int8"``.
        normalization_in_graph: the graph applies ``(pixel - mean) / std`` itself (integer
            inputs of full-integer models): the input's real value is the pixel (uint8 with
            scale 1 and zero point 0, int8 with scale 1 and zero point -128).

    Returns:
        ``(mean, std)`` for ``NormalizationOptions``.

    Example:

    >>> tensor_normalization(127.5, 128.0, "float32", False)
    (127.5, 128.0)
    >>> tensor_normalization(127.5, 128.0, "uint8", True)
    (0.0, 1.0)
    """
    if not normalization_in_graph:
        return float(mean), float(std)
    if input_type in ("uint8", "int8"):
        return 0.0, 1.0
    raise ValueError(f"normalization in the graph needs an integer input (uint8 or int8). "
                     f"Received: input_type={input_type!r}")


def build(*, name: str, description: str, version: str, height: int, width: int,
          embedding_size: int, mean: float, std: float, output_description: str) -> bytes:
    """The ``ModelMetadata`` flatbuffer (identifier ``M001``) of an image embedding model.

    Args:
        name, description, version: model-level text.
        height, width: image size the model takes.
        embedding_size: D.
        mean, std: ``tensor value = (pixel - mean) / std`` (see :func:`tensor_normalization`),
            written for each of the 3 channels.
        output_description: what the output vector is and how to compare two of them.

    Returns:
        The bytes to store in the model buffer named :data:`NAME`.

    Example:

    >>> data = build(name="face", description="d", version="1", height=112, width=112,
    ...              embedding_size=512, mean=127.5, std=128.0, output_description="e")
    >>> data[4:8]
    b'M001'
    """
    image = schema.ImagePropertiesT()
    image.colorSpace = schema.ColorSpaceType.RGB
    image.defaultSize = schema.ImageSizeT()
    image.defaultSize.width, image.defaultSize.height = int(width), int(height)
    content = schema.ContentT()
    content.contentPropertiesType = schema.ContentProperties.ImageProperties
    content.contentProperties = image

    normalization = schema.NormalizationOptionsT()
    normalization.mean = [float(mean)] * 3
    normalization.std = [float(std)] * 3
    unit = schema.ProcessUnitT()
    unit.optionsType = schema.ProcessUnitOptions.NormalizationOptions
    unit.options = normalization
    stats = schema.StatsT()
    stats.min = [(0.0 - mean) / std] * 3
    stats.max = [(255.0 - mean) / std] * 3

    tensor_in = schema.TensorMetadataT()
    tensor_in.name = "image"
    tensor_in.description = (
        f"RGB face crop, {height}x{width}, aligned as in training; input value "
        f"(pixel - {mean:g}) / {std:g} for 0-255 pixels (dequantized value for an integer "
        "input).")
    tensor_in.content = content
    tensor_in.processUnits = [unit]
    tensor_in.stats = stats

    feature = schema.ContentT()
    feature.contentPropertiesType = schema.ContentProperties.FeatureProperties
    feature.contentProperties = schema.FeaturePropertiesT()
    tensor_out = schema.TensorMetadataT()
    tensor_out.name = "embedding"
    tensor_out.description = output_description
    tensor_out.content = feature

    subgraph = schema.SubGraphMetadataT()
    subgraph.name = name
    subgraph.inputTensorMetadata = [tensor_in]
    subgraph.outputTensorMetadata = [tensor_out]

    model = schema.ModelMetadataT()
    model.name = name
    model.description = description
    model.version = version
    model.author = "keras_facemargin"
    model.subgraphMetadata = [subgraph]
    model.minParserVersion = MIN_PARSER_VERSION
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=IDENTIFIER)
    return bytes(builder.Output())


def parse(data: bytes) -> schema.ModelMetadataT:
    """The ``ModelMetadataT`` object of a ``TFLITE_METADATA`` buffer (generated reader).

    Raises:
        ValueError: the bytes are not a ModelMetadata flatbuffer (no ``M001`` identifier).
    """
    data = bytes(data)
    if len(data) < 8 or data[4:8] != IDENTIFIER:
        raise ValueError(f"not a TFLite ModelMetadata buffer (no {IDENTIFIER!r} identifier). "
                         f"Received: {data[:8]!r}")
    return schema.ModelMetadataT.InitFromObj(
        schema.ModelMetadata.GetRootAs(bytearray(data), 0))


def as_text(value) -> str:
    """A flatbuffer string field (bytes in the generated object API) as ``str``."""
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)


def normalization_of(metadata: schema.ModelMetadataT) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` arrays of the input's ``NormalizationOptions``."""
    tensor = metadata.subgraphMetadata[0].inputTensorMetadata[0]
    for unit in tensor.processUnits or []:
        if unit.optionsType == schema.ProcessUnitOptions.NormalizationOptions:
            return (np.asarray(unit.options.mean, np.float32),
                    np.asarray(unit.options.std, np.float32))
    raise ValueError("the input tensor metadata has no NormalizationOptions.")
