"""``Embedder``: an exported model, its preprocessing and the comparisons built on it."""

from __future__ import annotations

import os
import re
import warnings

import numpy as np

from keras_facemargin.preprocessing import DEFAULT, Normalization, get_normalization
from keras_facemargin.runtime import _onnx, _tflite
from keras_facemargin.runtime._tflite import FlatbufferError
from keras_facemargin.runtime.metadata import KEY, ModelMetadata

#: how far (in normalized units) ``normalized=True`` input may stray outside the image of 0-255.
NORMALIZED_TOLERANCE = 0.02


def version_tuple(version: str) -> tuple[int, ...]:
    """``"2.17.0rc1"`` -> ``(2, 17, 0)``: the leading numeric parts of a release string."""
    parts = []
    for part in str(version).split("."):
        match = re.match(r"\d+", part)
        if match is None:
            break
        parts.append(int(match.group()))
        if match.end() < len(part):
            break
    return tuple(parts)


def check_runtime_version(path: str, backend: str, installed: str | None,
                          required: str | None) -> None:
    """Raise when the installed runtime is older than what the file needs."""
    if not required or not installed:
        return
    if version_tuple(installed) < version_tuple(required):
        package = {"onnxruntime": "onnxruntime", "litert": "ai-edge-litert",
                   "tflite_runtime": "tflite-runtime"}[backend]
        raise RuntimeError(
            f"{path!r} needs {package} >= {required}; installed: {package} {installed}. "
            f"Upgrade it (pip install -U {package}), or re-export the file for the older "
            "runtime (ONNX: a lower `opset`; TFLite: see docs/export.md).")


def _normalize(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _tflite_min_runtime(entries: dict[str, bytes], metadata: ModelMetadata, backend: str):
    if backend in metadata.min_runtime:
        return metadata.min_runtime[backend]
    if backend == "tflite_runtime" and "min_runtime_version" in entries:
        # the converter's own entry: the TensorFlow release whose kernels run every op version
        return bytes(entries["min_runtime_version"]).rstrip(b"\x00").decode("ascii", "replace")
    return None


class Embedder:
    """An exported embedding model, its preprocessing and the comparisons built on it.

    Use :meth:`open`. Attributes: ``metadata`` (:class:`ModelMetadata`), ``normalization``
    (the :class:`~keras_facemargin.preprocessing.Normalization` the file expects),
    ``image_size`` (H, W), ``embedding_size``, ``backend`` (``"litert"``,
    ``"tflite_runtime"`` or ``"onnxruntime"``).

    Example:

    >>> from keras_facemargin.runtime import Embedder
    >>> face = Embedder.open("face.onnx")                  # doctest: +SKIP
    >>> face.embed(images_uint8_rgb).shape                  # doctest: +SKIP
    (8, 512)
    """

    def __init__(self, backend, metadata: ModelMetadata, path: str, backend_name: str):
        self._backend = backend
        self.metadata = metadata
        self.path = path
        self.backend = backend_name
        self.normalization = get_normalization((metadata.mean, metadata.std))
        self.image_size = tuple(metadata.input_shape[:2])
        self.embedding_size = metadata.embedding_size

    @classmethod
    def open(cls, path: str | os.PathLike, num_threads: int | None = None) -> Embedder:
        """Open a ``.tflite`` or ``.onnx`` model written by :mod:`keras_facemargin.export`.

        The runtime version is checked against what the file needs (the metadata's
        ``min_runtime``; for ONNX files also derived from their opset and IR version, for
        TFLite files from the converter's ``min_runtime_version`` entry).

        Args:
            path: the model file.
            num_threads: CPU threads for the backend. Defaults to `None` (backend default).

        Returns:
            An :class:`Embedder`.

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file is not a loadable model of its kind (truncated, corrupt,
                another format) or has an unknown extension.
            ImportError: no backend for that format is installed.
            RuntimeError: the installed runtime is older than the file needs.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"`path` must be an existing .tflite or .onnx file. "
                                    f"Received: path={path!r}")
        suffix = os.path.splitext(path)[1].lower()
        if suffix == ".tflite":
            try:
                entries = _tflite.read_file_metadata(path)
            except FlatbufferError as err:
                raise ValueError(f"{path!r} is not a valid TFLite model: {err}") from None
            name, module = _tflite.interpreter_module()
            text = entries.get(KEY)
            metadata = ModelMetadata.from_json(text) if text is not None else None
            required = _tflite_min_runtime(entries, metadata or ModelMetadata(0, (0, 0, 0)),
                                           name)
            check_runtime_version(path, name, _tflite.runtime_version(name), required)
            try:
                backend = _tflite.TFLiteBackend(path, num_threads, module)
            except ValueError as err:
                hint = f" (the file needs a TFLite runtime >= {required})" if required else ""
                raise ValueError(f"{err}{hint}") from None
        elif suffix == ".onnx":
            try:
                header = _onnx.read_file_header(path)
            except ValueError as err:
                raise ValueError(f"{path!r} is not a valid ONNX model: {err}") from None
            text = header["metadata"].get(KEY)
            metadata = ModelMetadata.from_json(text) if text is not None else None
            required = (metadata.min_runtime.get("onnxruntime") if metadata else None) or \
                _onnx.min_onnxruntime(header["opsets"].get("", header["opsets"].get(
                    "ai.onnx", 0)), header["ir_version"])
            name = "onnxruntime"
            check_runtime_version(path, name, _onnx.runtime_version(), required)
            backend = _onnx.ONNXBackend(path, num_threads)
        else:
            raise ValueError(f"`path` must end in .tflite or .onnx. Received: path={path!r}")
        if metadata is None:
            shape = backend.input_shape
            layout = "NCHW" if len(shape) == 3 and shape[0] in (1, 3) and shape[-1] not in (
                1, 3) else "NHWC"
            if layout == "NCHW":
                shape = (shape[1], shape[2], shape[0])
            warnings.warn(f"{path!r} has no {KEY!r} metadata: assuming {layout} RGB input "
                          f"normalized as (x - {DEFAULT.mean}) / {DEFAULT.std:g} and an output "
                          "to L2-normalize.", stacklevel=2)
            metadata = ModelMetadata(embedding_size=backend.output_size, input_shape=shape,
                                     l2_normalized=True, normalize_on_host=True, layout=layout,
                                     mean=DEFAULT.mean, std=DEFAULT.std,
                                     normalization=DEFAULT.name)
        return cls(backend, metadata, path, name)

    # ------------------------------------------------------------------ embedding
    def _check_shape(self, images, argument: str = "images") -> np.ndarray:
        x = np.asarray(images)
        h, w, c = self.metadata.input_shape
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or tuple(x.shape[1:]) != (h, w, c):
            hint = ""
            if x.ndim == 2 or (x.ndim == 4 and x.shape[-1] in (1, 4)):
                hint = " (grayscale or RGBA images: convert them to RGB first)"
            elif x.ndim == 4 and x.shape[1] == c and tuple(x.shape[2:]) == (h, w):
                hint = " (channels-first: pass (N, H, W, C); the runtime arranges the layout)"
            raise ValueError(f"`{argument}` must be {self.metadata.channel_order} images of "
                             f"shape (N, {h}, {w}, {c}) (or one image ({h}, {w}, {c})){hint}. "
                             f"Received: {argument}.shape={tuple(np.shape(images))}")
        return x

    def preprocess(self, images, normalized: bool = False) -> np.ndarray:
        """Check and normalize images into what the model takes (float32, its layout).

        Args:
            images: (N, H, W, 3) or one (H, W, 3) RGB image: 0-255 pixels (uint8, or float
                with values in [0, 255]); or, with ``normalized=True``, float values already
                mapped by the file's ``(x - mean) / std``.
            normalized: the images are already normalized. Defaults to `False`.

        Returns:
            float32 (N, H, W, 3) or (N, 3, H, W), as the file's ``layout`` says.

        Raises:
            ValueError: wrong rank, size or channel count; a dtype other than uint8 / float;
                float pixels outside [0, 255], or all within [0, 1] (images scaled to [0, 1]:
                multiply by 255); normalized input outside the normalized range.
        """
        x = self._check_shape(images)
        if x.dtype == np.uint8:
            if normalized:
                raise ValueError("uint8 `images` are 0-255 pixels, not normalized values; "
                                 "drop `normalized=True`. Received: images.dtype=uint8")
            out = self.normalization.apply(x)
        elif np.issubdtype(x.dtype, np.floating):
            if x.size and not np.all(np.isfinite(x)):
                raise ValueError("`images` must be finite. Received: NaN or infinite values")
            low, high = (float(x.min()), float(x.max())) if x.size else (0.0, 255.0)
            if normalized:
                lo, hi = self.normalization.normalized_range
                tol = NORMALIZED_TOLERANCE * (hi - lo)
                if low < lo - tol or high > hi + tol:
                    raise ValueError(
                        f"normalized `images` must lie within [{lo:.4g}, {hi:.4g}] (0-255 "
                        f"mapped by (x - {self.normalization.mean:g}) / "
                        f"{self.normalization.std:g}). Received: values in [{low:.3g}, "
                        f"{high:.3g}]")
                out = x.astype(np.float32)
            else:
                if low < 0.0 or high > 255.0:
                    raise ValueError(
                        "float `images` must be 0-255 pixel values (or pass "
                        "`normalized=True` for values already mapped by (x - "
                        f"{self.normalization.mean:g}) / {self.normalization.std:g}). "
                        f"Received: values in [{low:.3g}, {high:.3g}]")
                if x.size and high <= 1.0:
                    raise ValueError(
                        "float `images` must be 0-255 pixel values; these all lie in [0, 1] "
                        "(images scaled to [0, 1]? multiply by 255, or pass uint8). "
                        f"Received: values in [{low:.3g}, {high:.3g}]")
                out = self.normalization.apply(x)
        else:
            raise ValueError(f"`images` must be uint8 pixels or float32 values. Received: "
                             f"images.dtype={x.dtype}")
        if self.metadata.layout == "NCHW":
            out = np.ascontiguousarray(out.transpose(0, 3, 1, 2))
        return out

    def embed(self, images, flip: bool = False, batch_size: int = 32, *,
              normalized: bool = False) -> np.ndarray:
        """(N, D) embeddings of RGB images (L2-normalized when the model says so).

        Args:
            images: (N, H, W, 3) 0-255 RGB pixels, uint8 or float, or a single image (see
                :meth:`preprocess`).
            flip: add the embedding of the mirrored image (insightface's flip test), on the
                host unless the model already fuses it. On the host the model's outputs are
                added as they come out (unit vectors when the graph normalizes; insightface
                adds the raw embeddings, as ``flip_fusion=True`` at export does).
                Defaults to `False`.
            batch_size: images per backend call. Defaults to `32`.
            normalized: the images are already normalized as the file expects
                (``self.normalization``). Defaults to `False`.

        Returns:
            float32 (N, D).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer. Received: "
                             f"batch_size={batch_size!r}")
        x = self.preprocess(images, normalized=normalized)
        width_axis = 3 if self.metadata.layout == "NCHW" else 2
        out = []
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size]
            e = self._backend.run(batch)
            if flip and not self.metadata.flip_fused:
                mirror = np.ascontiguousarray(np.flip(batch, axis=width_axis))
                e = e + self._backend.run(mirror)
                if self.metadata.l2_normalized:
                    e = _normalize(e)
            elif self.metadata.normalize_on_host:
                e = _normalize(e)
            out.append(e)
        return np.concatenate(out) if out else np.zeros((0, self.embedding_size), np.float32)

    def _embeddings(self, value, argument: str) -> np.ndarray:
        array = np.asarray(value)
        h, w, _ = self.metadata.input_shape
        if array.ndim in (3, 4):
            self._check_shape(array, argument)
            return _normalize(self.embed(array))
        if array.ndim in (1, 2) and array.shape[-1] == self.embedding_size \
                and np.issubdtype(array.dtype, np.floating) \
                and not (array.ndim == 2 and array.shape == (h, w)):
            return _normalize(np.atleast_2d(array).astype(np.float32))
        if array.ndim == 2 and array.shape == (h, w):
            raise ValueError(f"`{argument}` looks like one grayscale image ({h}, {w}); the "
                             f"model takes RGB images (N, {h}, {w}, 3) or embeddings (N, "
                             f"{self.embedding_size}). Received: {argument}.shape={array.shape}")
        raise ValueError(f"`{argument}` must be RGB images (N, {h}, {w}, 3) or float "
                         f"embeddings (N, {self.embedding_size}). Received: "
                         f"{argument}.shape={array.shape}, dtype={array.dtype}")

    # ------------------------------------------------------------------ comparisons
    def similarity(self, a, b) -> np.ndarray:
        """Cosine similarity of each pair (a[i], b[i]); images or embeddings."""
        ea, eb = self._embeddings(a, "a"), self._embeddings(b, "b")
        if ea.shape != eb.shape:
            raise ValueError(f"`a` and `b` must hold the same number of faces. Received: "
                             f"{ea.shape[0]} and {eb.shape[0]}")
        return np.sum(ea * eb, axis=-1)

    def verify(self, a, b, threshold: float) -> np.ndarray:
        """Boolean per pair: same identity when the cosine similarity is >= ``threshold``."""
        if not -1.0 <= float(threshold) <= 1.0:
            raise ValueError(f"`threshold` is a cosine similarity in [-1, 1]. Received: "
                             f"threshold={threshold!r}")
        return self.similarity(a, b) >= float(threshold)

    def identify(self, probes, gallery, top_k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """1:N search: for each probe, the ``top_k`` most similar gallery entries.

        Returns:
            ``(indices, scores)``, each (N, top_k), best first.
        """
        ep, eg = self._embeddings(probes, "probes"), self._embeddings(gallery, "gallery")
        if not 1 <= int(top_k) <= len(eg):
            raise ValueError(f"`top_k` must be in [1, {len(eg)}]. Received: top_k={top_k!r}")
        scores = ep @ eg.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
        return order, np.take_along_axis(scores, order, axis=1)


__all__ = ["Embedder", "Normalization", "check_runtime_version", "version_tuple"]
