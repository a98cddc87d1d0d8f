"""A TensorFlow-free runtime: embed and compare faces with an exported model on a device.

Imports neither TensorFlow nor Keras. Backends, whichever is installed: ``ai-edge-litert`` (or the
legacy ``tflite-runtime``) for ``.tflite`` files, ``onnxruntime`` for ``.onnx`` files.

Example::

    from keras_facemargin.runtime import Embedder

    face = Embedder.open("face.tflite")            # reads the stored preprocessing
    e = face.embed(images_uint8)                    # (N, 112, 112, 3) RGB -> (N, 512)
    same = face.verify(image_a, image_b, threshold=0.3)
    index, score = face.identify(probes, gallery)
"""

from __future__ import annotations

import mmap
import os
import warnings

import numpy as np

from keras_facemargin.runtime._tflite import FlatbufferError, read_metadata
from keras_facemargin.runtime.metadata import KEY, ModelMetadata

__all__ = ["Embedder", "ModelMetadata", "available_backends"]


def available_backends() -> list[str]:
    """Names of the installed backends, in order of preference."""
    found = []
    for name, module in (("litert", "ai_edge_litert.interpreter"),
                         ("tflite_runtime", "tflite_runtime.interpreter"),
                         ("onnxruntime", "onnxruntime")):
        try:
            __import__(module)
        except ImportError:
            continue
        found.append(name)
    return found


def _tflite_interpreter(path: str, num_threads: int | None):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise ImportError(
                "Running a .tflite model needs ai-edge-litert (pip install ai-edge-litert) or the "
                "legacy tflite-runtime."
            ) from None
    try:
        return Interpreter(model_path=path, num_threads=num_threads)
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"{path!r} is not a loadable TFLite model: {err}") from None


class _TFLiteBackend:
    def __init__(self, path: str, num_threads: int | None):
        self.interpreter = _tflite_interpreter(path, num_threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = None

    @property
    def input_shape(self):
        return tuple(int(d) for d in self.input["shape_signature"][1:])

    @property
    def input_dtype(self):
        return np.dtype(self.input["dtype"]).name

    @property
    def output_size(self) -> int:
        return int(self.output["shape_signature"][-1])

    def run(self, x: np.ndarray) -> np.ndarray:
        if self.batch != len(x):
            self.interpreter.resize_tensor_input(self.input["index"], [len(x), *x.shape[1:]])
            self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]
            self.batch = len(x)
        scale, zero = self.input.get("quantization", (0.0, 0))
        if np.issubdtype(np.dtype(self.input["dtype"]), np.integer):
            info = np.iinfo(self.input["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        self.interpreter.set_tensor(self.input["index"], x.astype(self.input["dtype"]))
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])
        scale, zero = self.output.get("quantization", (0.0, 0))
        if np.issubdtype(y.dtype, np.integer):
            y = (y.astype(np.float32) - zero) * scale
        return np.asarray(y, np.float32)


class _ONNXBackend:
    def __init__(self, path: str, num_threads: int | None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError("Running a .onnx model needs onnxruntime "
                              "(pip install onnxruntime).") from None
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        try:
            self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own Fail / InvalidProtobuf types
            raise ValueError(f"{path!r} is not a loadable ONNX model: {err}") from None
        self.input = self.session.get_inputs()[0]

    @property
    def input_shape(self):
        return tuple(d if isinstance(d, int) else -1 for d in self.input.shape[1:])

    @property
    def input_dtype(self):
        return "float32"

    @property
    def output_size(self) -> int:
        size = self.session.get_outputs()[0].shape[-1]
        return size if isinstance(size, int) else -1

    def metadata(self) -> str | None:
        return self.session.get_modelmeta().custom_metadata_map.get(KEY)

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input.name: x.astype(np.float32)})[0],
                          np.float32)


def _read_tflite_metadata(path: str) -> dict[str, bytes]:
    """The metadata entries of a .tflite file, read through a memory map (a large model is not
    copied into memory only to find a few hundred bytes of JSON)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise FlatbufferError("the file is empty")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return read_metadata(data)


def _normalize(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


class Embedder:
    """An exported embedding model, its preprocessing and the comparisons built on it.

    Use :meth:`open`. Attributes: ``metadata`` (:class:`ModelMetadata`), ``image_size`` (H, W),
    ``embedding_size``, ``backend`` (``"litert"``, ``"tflite_runtime"`` or ``"onnxruntime"``).
    """

    def __init__(self, backend, metadata: ModelMetadata, path: str, backend_name: str):
        self._backend = backend
        self.metadata = metadata
        self.path = path
        self.backend = backend_name
        self.image_size = tuple(metadata.input_shape[:2])
        self.embedding_size = metadata.embedding_size

    @classmethod
    def open(cls, path: str | os.PathLike, num_threads: int | None = None) -> Embedder:
        """Open a ``.tflite`` or ``.onnx`` model written by :mod:`keras_facemargin.export`.

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
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"`path` must be an existing .tflite or .onnx file. "
                                    f"Received: path={path!r}")
        suffix = os.path.splitext(path)[1].lower()
        if suffix == ".tflite":
            try:
                entries = _read_tflite_metadata(path)
            except FlatbufferError as err:
                raise ValueError(f"{path!r} is not a valid TFLite model: {err}") from None
            backend = _TFLiteBackend(path, num_threads)
            name = "litert" if "litert" in available_backends() else "tflite_runtime"
            text = entries.get(KEY)
        elif suffix == ".onnx":
            backend = _ONNXBackend(path, num_threads)
            name = "onnxruntime"
            text = backend.metadata()
        else:
            raise ValueError(f"`path` must end in .tflite or .onnx. Received: path={path!r}")
        if text is None:
            warnings.warn(f"{path!r} has no {KEY!r} metadata: assuming RGB input normalized as "
                          "(x - 127.5) / 128 and an output to L2-normalize.", stacklevel=2)
            metadata = ModelMetadata(embedding_size=backend.output_size,
                                     input_shape=backend.input_shape, l2_normalized=True,
                                     normalize_on_host=True)
        else:
            metadata = ModelMetadata.from_json(text)
        return cls(backend, metadata, path, name)

    # ------------------------------------------------------------------ embedding
    def preprocess(self, images) -> np.ndarray:
        """Check and normalize images: uint8 RGB (N, H, W, 3) -> float32 ``(x - mean) / std``.

        Float images are taken as already normalized (values within [-1.1, 1.1]).
        """
        x = np.asarray(images)
        if x.ndim == 3:
            x = x[None]
        h, w, c = self.metadata.input_shape
        if x.ndim != 4 or tuple(x.shape[1:]) != (h, w, c):
            raise ValueError(f"`images` must have shape (N, {h}, {w}, {c}) (or one image "
                             f"({h}, {w}, {c})), {self.metadata.channel_order}. Received: "
                             f"images.shape={tuple(np.shape(images))}")
        if x.dtype == np.uint8:
            return (x.astype(np.float32) - self.metadata.mean) / self.metadata.std
        if np.issubdtype(x.dtype, np.floating):
            if x.size and (not np.all(np.isfinite(x)) or np.abs(x).max() > 1.1):
                raise ValueError(
                    "float `images` must be already normalized ((x - 127.5) / 128, within "
                    "[-1.1, 1.1]) and finite; pass uint8 pixels to have them normalized. "
                    f"Received: values in [{np.nanmin(x):.3g}, {np.nanmax(x):.3g}]")
            return x.astype(np.float32)
        raise ValueError(f"`images` must be uint8 pixels or normalized floats. Received: "
                         f"images.dtype={x.dtype}")

    def embed(self, images, flip: bool = False, batch_size: int = 32) -> np.ndarray:
        """(N, D) embeddings of uint8 RGB images (L2-normalized when the model says so).

        Args:
            images: (N, H, W, 3) uint8 RGB (or normalized float32), or a single image.
            flip: add the embedding of the mirrored image (insightface's flip test), on the
                host unless the model already fuses it. On the host the model's outputs are
                added as they come out (unit vectors when the graph normalizes; insightface
                adds the raw embeddings, as ``flip_fusion=True`` at export does).
                Defaults to `False`.
            batch_size: images per backend call. Defaults to `32`.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer. Received: "
                             f"batch_size={batch_size!r}")
        x = self.preprocess(images)
        out = []
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size]
            e = self._backend.run(batch)
            if flip and not self.metadata.flip_fused:
                e = e + self._backend.run(np.ascontiguousarray(batch[:, :, ::-1]))
                if self.metadata.l2_normalized:
                    e = _normalize(e)
            elif self.metadata.normalize_on_host:
                e = _normalize(e)
            out.append(e)
        return np.concatenate(out) if out else np.zeros((0, self.embedding_size), np.float32)

    def _embeddings(self, value) -> np.ndarray:
        array = np.asarray(value)
        if array.ndim in (3, 4):
            return _normalize(self.embed(array))
        if array.ndim in (1, 2):
            return _normalize(np.atleast_2d(array).astype(np.float32))
        raise ValueError("expected images (N, H, W, 3) or embeddings (N, D). Received: "
                         f"shape={array.shape}")

    # ------------------------------------------------------------------ comparisons
    def similarity(self, a, b) -> np.ndarray:
        """Cosine similarity of each pair (a[i], b[i]); images or embeddings."""
        ea, eb = self._embeddings(a), self._embeddings(b)
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
        ep, eg = self._embeddings(probes), self._embeddings(gallery)
        if not 1 <= int(top_k) <= len(eg):
            raise ValueError(f"`top_k` must be in [1, {len(eg)}]. Received: top_k={top_k!r}")
        scores = ep @ eg.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
        return order, np.take_along_axis(scores, order, axis=1)
