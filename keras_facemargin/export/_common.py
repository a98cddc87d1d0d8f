"""What the format converters share: the input shape, the traced serving function, the
package's metadata and the conversion error."""

from __future__ import annotations

import keras

from keras_facemargin.export.layers import HorizontalFlip, L2Normalize
from keras_facemargin.preprocessing import Normalization, get_normalization
from keras_facemargin.runtime.metadata import ModelMetadata


class ConversionError(ValueError):
    """The converter could not lower the model to the format's ops (builtin TFLite ops, or
    ONNX through tf2onnx)."""


def input_shape(model: keras.Model) -> tuple[int, int, int]:
    """The fixed ``(H, W, C)`` input shape of ``model``.

    Args:
        model: the embedding model.

    Returns:
        ``(H, W, C)``.

    Raises:
        ValueError: the input is not a fixed-shape image.
    """
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(f"The embedding model must take images of a fixed (H, W, C) shape. "
                         f"Received: input shape {model.inputs[0].shape}")
    return tuple(int(d) for d in shape)


def serving_function(model: keras.Model, batch_size: int | None = None,
                     input_name: str = "image"):
    """``model``'s inference call as a ``tf.function`` over float32 images of its input shape.

    Args:
        model: the embedding model.
        batch_size: `None` (a dynamic batch) or a fixed batch. Defaults to `None`.
        input_name: the name of the input tensor. Defaults to `"image"`.

    Returns:
        The ``tf.function``, with its ``input_signature`` set.
    """
    import tensorflow as tf

    shape = input_shape(model)
    return tf.function(lambda image: model(image, training=False), input_signature=[
        tf.TensorSpec([batch_size, *shape], tf.float32, name=input_name)])


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

    Args:
        model: the embedding model exported.
        head: the margin head it was stripped of, or `None`.
        quantization: the file's quantization mode.
        input_type: the input tensor type. Defaults to `"float32"`.
        normalize_on_host: the runtime L2-normalizes the output. Defaults to `False`.
        normalization: the trained normalization. Defaults to `None`.
        file_normalization: the file's input normalization. Defaults to `None`.
        layout: ``"NHWC"`` or ``"NCHW"``. Defaults to `"NHWC"`.
        convention: the file's convention name. Defaults to `"keras_facemargin"`.
        min_runtime: the runtimes the file needs. Defaults to `None`.

    Returns:
        The :class:`ModelMetadata`.
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
