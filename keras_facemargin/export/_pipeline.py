"""The one export pass, whatever the format.

``export(model, path, converter)`` runs, in this order and once each:

1. **strip**: the embedding model (:func:`embedding_model`: the head stripped, or the model up
   to ``embedding_layer``), rebuilt under the float32 policy by
   :func:`~keras_facemargin.export.strip_head`;
2. **images**: the held-out images to verify on and, for a quantized file, the calibration
   images (:func:`calibration_split`, :func:`held_out`), normalized as the model was trained;
3. **convert**: ``converter.convert`` writes the file's bytes, metadata included, and says
   which inputs the file takes (:class:`Converted`);
4. **reference**: the Keras embedding model on the held-out images (L2-normalized when the
   file's output is normalized on the host);
5. **verify, then write atomically**: :func:`~keras_facemargin.export.verify.write_verified`
   runs the file with ``converter.run`` and renames it into place only if it agrees.

A :class:`Converter` knows one format only: how to convert and how to run the file.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterable
from dataclasses import dataclass

import keras
import numpy as np

from keras_facemargin.export import _common
from keras_facemargin.export.strip import (
    embedding_at,
    ends_in_softmax,
    find_head,
    margin_heads,
    strip_head,
)
from keras_facemargin.export.verify import ExportReport, write_verified
from keras_facemargin.preprocessing import Normalization, get_normalization


@dataclass(frozen=True)
class Converted:
    """A converted file, before verification.

    Attributes:
        data: the file's bytes, metadata included.
        inputs: the held-out images as the file takes them (layout, normalization, dtype).
        reference_inputs: the same images as the Keras embedding model takes them (normalized
            as it was trained, NHWC float32): the reference is computed on them.
    """

    data: bytes
    inputs: np.ndarray
    reference_inputs: np.ndarray


class Converter(abc.ABC):
    """What the pass needs to know of one format: convert, and run the file.

    Args:
        quantization: the quantization mode (`None` for float32); a format-specific name.
        l2_normalize: end the converted graph with the L2 normalization.
        normalize_on_host: the file's output is L2-normalized on the host (by the runtime),
            so the reference is L2-normalized too.

    Attributes:
        format: the file format, ``"tflite"`` or ``"onnx"`` (the report's ``format``).
        calibration_argument: how the calibration argument is named in the error raised when
            a quantization that needs calibration images gets none.
    """

    format: str = ""
    calibration_argument: str = ""

    def __init__(self, quantization: str | None, *, l2_normalize: bool,
                 normalize_on_host: bool):
        self.quantization = quantization
        self.l2_normalize = l2_normalize
        self.normalize_on_host = normalize_on_host

    @property
    def needs_calibration(self) -> bool:
        """Whether the quantization needs calibration images (full-integer ``"int8"``)."""
        return self.quantization == "int8"

    @abc.abstractmethod
    def convert(self, net: keras.Model, head: keras.layers.Layer | None,
                calibration: np.ndarray | None, held: np.ndarray,
                normalization: Normalization) -> Converted:
        """The file of ``net``, with its metadata.

        Args:
            net: the float32 embedding model.
            head: the margin head it was stripped of, or `None`.
            calibration: normalized calibration images when ``needs_calibration``, else
                `None`.
            held: the normalized held-out images.
            normalization: the normalization the model was trained with.

        Returns:
            The :class:`Converted` file.
        """

    @abc.abstractmethod
    def run(self, path: str, inputs: np.ndarray) -> np.ndarray:
        """The embeddings the file at ``path`` gives for ``inputs``.

        Args:
            path: the (temporary) file written from :attr:`Converted.data`.
            inputs: :attr:`Converted.inputs`.

        Returns:
            The (N, D) embeddings, L2-normalized on the host when the runtime does it.
        """


def embedding_model(model: keras.Model, strip: bool | None = None, *,
                    embedding_layer: str | keras.layers.Layer | None = None, **strip_kwargs):
    """``(embedding model, head or None)``.

    * ``embedding_layer`` given: the model up to that layer's output (a model without a
      margin head must say where its embedding is);
    * a margin head (or ``head_layer``) and ``strip`` not `False`: the head stripped;
    * ``strip=False``: the model itself, stated to be an embedding model (refused when it ends
      in a softmax: classifier probabilities are not an embedding);
    * otherwise (no margin head, nothing stated): refused.

    Args:
        model: a trained model, a :class:`~keras_facemargin.FaceRecognizer`, or an embedding
            model.
        strip: strip the head (`None`: when the model has one).
        embedding_layer: the layer (or its name) whose output is the embedding. Defaults to
            `None`.
        **strip_kwargs: ``head_layer``, ``l2_normalize``, ``flip_fusion``, ``name`` of
            :func:`~keras_facemargin.export.strip_head`.

    Returns:
        ``(embedding model, the margin head or None)``; a stripped model computes in float32.

    Raises:
        ValueError: no way to tell which output is the embedding, or a model that is not an
            embedding model.
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


def held_out(model: keras.Model, data: np.ndarray | Iterable | None, count: int = 16,
             seed: int = 0, normalization: str | Normalization | None = None) -> np.ndarray:
    """Normalized float32 images to verify on: ``data`` (uint8 pixels are normalized with
    ``normalization``, what the model was trained with; floats are taken as normalized) or,
    when None, ``count`` seeded random images spanning the normalized pixel range.

    Args:
        model: the embedding model (its input shape).
        data: images (N, H, W, C), an iterable of batches, or `None`.
        count: how many random images when ``data`` is `None`. Defaults to `16`.
        seed: their seed. Defaults to `0`.
        normalization: the normalization the model was trained with. Defaults to `None`.

    Returns:
        The normalized float32 images.
    """
    norm = get_normalization(normalization)
    shape = _common.input_shape(model)
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

    Args:
        model: the embedding model (its input shape).
        calibration: the calibration images or batches.
        verification: held-out images, or `None`.
        normalization: the normalization the model was trained with. Defaults to `None`.

    Returns:
        ``(calibration images, verification images)``.
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


def export(model: keras.Model, path: str | os.PathLike, converter: Converter, *,
           calibration_data: np.ndarray | Iterable | None = None,
           verification_data: np.ndarray | Iterable | None = None,
           normalization: str | Normalization | tuple[float, float] | None = None,
           strip: bool | None = None, embedding_layer: str | keras.layers.Layer | None = None,
           flip_fusion: bool = False, head_layer: str | keras.layers.Layer | None = None,
           verify: bool = True, force: bool = False) -> ExportReport:
    """Strip, convert with ``converter``, verify and write ``model``'s embedding model.

    Args:
        model: a trained model with a margin head, or an embedding model.
        path: the file to write.
        converter: the format's :class:`Converter`.
        calibration_data: calibration images, required when ``converter.needs_calibration``.
            Defaults to `None`.
        verification_data: held-out images to verify on. Defaults to `None` (see
            :func:`calibration_split` and :func:`held_out`).
        normalization: the pixel normalization the model was trained with. Defaults to
            `None`: 127.5 / 128.
        strip, embedding_layer, flip_fusion, head_layer: how to find the embedding (see
            :func:`embedding_model`). Defaults to `None`, `None`, `False`, `None`.
        verify, force: check the file against Keras; write it even when it disagrees.
            Defaults to `True`, `False`.

    Returns:
        The :class:`~keras_facemargin.export.ExportReport` of the file written.
    """
    net, head = embedding_model(model, strip, embedding_layer=embedding_layer,
                                l2_normalize=converter.l2_normalize, flip_fusion=flip_fusion,
                                head_layer=head_layer)
    calibration = None
    if converter.needs_calibration:
        if calibration_data is None:
            raise ValueError(f"{converter.calibration_argument} is required for "
                             f"quantization={converter.quantization!r}.")
        calibration, held = calibration_split(net, calibration_data, verification_data,
                                              normalization=normalization)
    else:
        held = held_out(net, verification_data, normalization=normalization)
    converted = converter.convert(net, head, calibration, held, get_normalization(normalization))
    reference = keras.ops.convert_to_numpy(net(converted.reference_inputs, training=False))
    if converter.normalize_on_host:
        reference = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True),
                                           1e-12)
    return write_verified(path, converted.data, converter.format, converter.quantization,
                          lambda tmp: converter.run(tmp, converted.inputs), reference,
                          verify, force)
