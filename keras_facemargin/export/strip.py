"""Turn a trained recognition model into the embedding model that ships."""

from __future__ import annotations

from typing import Any

import keras

from keras_facemargin.export.layers import GroupedConv2D, HorizontalFlip, L2Normalize


def _iter_layers(model) -> list:
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        if isinstance(layer, keras.Model):
            out.extend(_iter_layers(layer))
    return out


def margin_heads(model) -> list:
    """Every ``MarginHead`` layer of ``model``, nested models included."""
    from keras_facemargin.layers.head import MarginHead

    return [layer for layer in _iter_layers(model) if isinstance(layer, MarginHead)]


def find_head(model: keras.Model, head_layer: str | keras.layers.Layer | None = None):
    """The margin head of ``model``: the one ``MarginHead`` layer, or the layer named."""
    layers = _iter_layers(model)
    if head_layer is not None:
        if isinstance(head_layer, keras.layers.Layer):
            if head_layer not in layers:
                raise ValueError(f"`head_layer` {head_layer.name!r} is not a layer of the model.")
            return head_layer
        named = [layer for layer in layers if layer.name == head_layer]
        if not named:
            raise ValueError(
                f"`head_layer`={head_layer!r} names no layer of the model. Its layers: "
                f"{[layer.name for layer in layers]}"
            )
        return named[0]
    heads = margin_heads(model)
    if not heads:
        raise ValueError(
            "The model has no margin head (no keras_facemargin MarginHead layer such as "
            "ArcMarginLayer); name the layer whose input is the embedding with `head_layer=`, "
            "or export the embedding model directly."
        )
    if len(heads) > 1:
        raise ValueError(
            f"The model has {len(heads)} margin heads ({[h.name for h in heads]}); choose one "
            "with `head_layer=`."
        )
    return heads[0]


def _embedding_tensor(model: keras.Model, head):
    try:
        head_input = head.input
    except (AttributeError, ValueError) as err:
        raise ValueError(
            f"The head {head.name!r} was called more than once or never inside the model, so its "
            f"input is ambiguous ({err}). Build the model functionally or as a Sequential."
        ) from None
    if isinstance(head_input, (list, tuple)):  # head(embeddings, labels)
        head_input = head_input[0]
    if len(head_input.shape) != 2:
        raise ValueError(
            f"The head {head.name!r} is fed a tensor of shape {tuple(head_input.shape)}; an "
            "embedding model needs a flat (batch, dim) embedding. Add a Flatten or pooling layer "
            "before the head, or name another layer with `head_layer=`."
        )
    return head_input


def _image_inputs(model: keras.Model, embedding) -> keras.KerasTensor:
    for candidate in model.inputs:
        try:
            keras.Model(candidate, embedding)
        except ValueError:
            continue
        return candidate
    raise ValueError("No single model input computes the embedding (the head's input).")


def _float32_config(config: Any) -> Any:
    """The model config with every mixed-precision dtype policy replaced by float32.

    Only policies are rewritten (a ``DTypePolicy`` entry, or a ``"dtype"`` value given as a
    policy name); a layer *named* ``mixed_...`` keeps its name.
    """
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and isinstance(config.get("config"), dict):
            name = str(config["config"].get("name", ""))
            if name.startswith("mixed_"):
                return {**config, "config": {**config["config"], "name": "float32"}}
        return {key: "float32" if key == "dtype" and isinstance(value, str)
                and value.startswith("mixed_") else _float32_config(value)
                for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_config(value) for value in config]
    return config


def _is_mixed(model: keras.Model) -> bool:
    return any(getattr(layer, "dtype_policy", None) is not None
               and layer.dtype_policy.name.startswith("mixed_") for layer in _iter_layers(model))


def to_float32(model: keras.Model) -> keras.Model:
    """The same model rebuilt under the float32 policy, with the same weights."""
    if not _is_mixed(model):
        return model
    config = _float32_config(keras.saving.serialize_keras_object(model))
    with keras.dtype_policies.DTypePolicyScope("float32") if hasattr(
            keras.dtype_policies, "DTypePolicyScope") else _policy_scope("float32"):
        clone = keras.saving.deserialize_keras_object(config)
    clone.set_weights(model.get_weights())
    return clone


class _policy_scope:
    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.old = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.name)

    def __exit__(self, *exc):
        keras.config.set_dtype_policy(self.old)


def strip_head(model: keras.Model, head_layer: str | keras.layers.Layer | None = None, *,
               l2_normalize: bool = True, flip_fusion: bool = False,
               name: str | None = None) -> keras.Model:
    """The embedding model: everything up to the input of the model's margin head.

    Args:
        model: a trained Sequential or functional model containing a margin head (or any
            layer named by ``head_layer`` whose input is the embedding).
        head_layer: the head layer or its name. Defaults to `None`: the one ``MarginHead``.
        l2_normalize: end with an L2 normalization. Defaults to `True`.
        flip_fusion: embed the image and its horizontal mirror and add the two embeddings
            (insightface's flip test) inside the graph. Defaults to `False`.
        name: name of the returned model. Defaults to `"<model>_embedding"`.

    Returns:
        A functional ``keras.Model`` from the image input to the (B, D) embedding, computing
        in float32 (a mixed-precision model is rebuilt under float32 with the same weights).

    Raises:
        ValueError: no head, several heads, a head fed by a non-flat tensor, an unknown
            ``head_layer``.

    Example:

    >>> import keras
    >>> from keras_facemargin import ArcMarginLayer
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), ArcMarginLayer(3)])
    >>> strip_head(model).output_shape
    (None, 4)
    """
    from keras_facemargin.models.face_recognizer import FaceRecognizer

    if isinstance(model, FaceRecognizer) and head_layer is None:  # the task model's backbone
        image = keras.Input(tuple(model.backbone.input_shape[1:]), name="image")
        body = keras.Model(image, model.backbone(image), name=model.name)
        return _serving_model(body, body.outputs[0], l2_normalize=l2_normalize,
                              flip_fusion=flip_fusion, name=name)
    head = find_head(model, head_layer)
    embedding = _embedding_tensor(model, head)
    return _serving_model(model, embedding, l2_normalize=l2_normalize, flip_fusion=flip_fusion,
                          name=name)


def _serving_model(model: keras.Model, embedding, *, l2_normalize: bool, flip_fusion: bool,
                   name: str | None) -> keras.Model:
    image = _image_inputs(model, embedding)
    body = to_float32(keras.Model(image, embedding, name="embedding_body"))
    inputs = keras.Input(tuple(image.shape[1:]), dtype="float32", name="image")
    x = body(inputs)
    if flip_fusion:
        x = keras.layers.Add(name="flip_fusion")([x, body(HorizontalFlip(name="flip")(inputs))])
    if l2_normalize:
        x = L2Normalize(name="l2_normalize")(x)
    return keras.Model(inputs, x, name=name or f"{model.name}_embedding")


def embedding_at(model: keras.Model, embedding_layer: str | keras.layers.Layer, *,
                 l2_normalize: bool = True, flip_fusion: bool = False,
                 name: str | None = None) -> keras.Model:
    """The embedding model of a model without a margin head: image -> the output of
    ``embedding_layer`` [-> flip fusion] [-> L2 normalization], in float32.

    Args:
        model: a functional or Sequential model.
        embedding_layer: the layer (or its name) whose output is the embedding; this
            package's backbones name it ``"embedding"``.
        l2_normalize, flip_fusion, name: as in :func:`strip_head`.

    Returns:
        A functional ``keras.Model`` from the image input to the (B, D) embedding.

    Example:

    >>> from keras_facemargin.backbones import mobilefacenet
    >>> embedding_at(mobilefacenet(input_shape=(32, 32, 3)), "embedding").output_shape
    (None, 512)
    """
    layers = _iter_layers(model)
    if isinstance(embedding_layer, keras.layers.Layer):
        if embedding_layer not in layers:
            raise ValueError(f"`embedding_layer` {embedding_layer.name!r} is not a layer of the "
                             "model.")
        layer = embedding_layer
    else:
        named = [candidate for candidate in layers if candidate.name == embedding_layer]
        if not named:
            raise ValueError(f"`embedding_layer` names no layer of the model. Its layers: "
                             f"{[candidate.name for candidate in layers]}. Received: "
                             f"embedding_layer={embedding_layer!r}")
        layer = named[0]
    try:
        embedding = layer.output
    except (AttributeError, ValueError) as err:
        raise ValueError(f"`embedding_layer` {layer.name!r} was called more than once or never "
                         f"inside the model, so its output is ambiguous ({err}).") from None
    if len(embedding.shape) != 2:
        raise ValueError(f"`embedding_layer` must output a flat (batch, dim) embedding. "
                         f"Received: embedding_layer={layer.name!r} with output shape "
                         f"{tuple(embedding.shape)}")
    return _serving_model(model, embedding, l2_normalize=l2_normalize, flip_fusion=flip_fusion,
                          name=name)


def ends_in_softmax(model: keras.Model) -> bool:
    """Whether the model's output comes out of a softmax (a classifier's probabilities)."""
    last = model.layers[-1] if getattr(model, "layers", None) else None
    if isinstance(last, keras.Model):
        return ends_in_softmax(last)
    if isinstance(last, keras.layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", None) == "softmax"


def without_grouped_convolutions(model: keras.Model) -> keras.Model:
    """The same model with every grouped ``Conv2D`` (1 < groups, not depthwise) replaced by
    :class:`~keras_facemargin.export.layers.GroupedConv2D` holding the same weights.

    Keras runs a grouped convolution on TensorFlow through a nested XLA function
    (``StatefulPartitionedCall``) that tf2onnx cannot convert; the replacement is a depthwise
    convolution and a sum, which every converter handles. Returns ``model`` itself when it
    has no grouped convolution.
    """
    def grouped(layer) -> bool:
        return (isinstance(layer, keras.layers.Conv2D) and getattr(layer, "groups", 1) > 1
                and layer.data_format == "channels_last"
                and getattr(layer.activation, "__name__", "") == "linear")

    if not any(grouped(layer) for layer in _iter_layers(model)):
        return model

    def clone(layer):
        if grouped(layer):
            config = layer.get_config()
            return GroupedConv2D(config["filters"], config["kernel_size"], config["groups"],
                                 strides=config["strides"], padding=config["padding"],
                                 dilation_rate=config["dilation_rate"],
                                 use_bias=config["use_bias"], name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return copy
