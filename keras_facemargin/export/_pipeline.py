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

from keras_facemargin.export._common import calibration_split, embedding_model, held_out
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
