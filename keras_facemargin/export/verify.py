"""Check an exported model against the Keras embedding model before it is written."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: the minimum per-embedding cosine similarity each export must reach.
THRESHOLDS = {None: 0.99999, "float32": 0.99999, "float16": 0.999, "dynamic": 0.99, "int8": 0.99}


class ExportVerificationError(RuntimeError):
    """The exported model disagrees with the Keras model beyond the threshold (nothing written)."""


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how close it is to the Keras model.

    Attributes:
        path: the file written (``None`` when nothing was written).
        format: ``"tflite"`` or ``"onnx"``.
        quantization: ``None``, ``"float16"``, ``"dynamic"`` or ``"int8"``.
        size_bytes: file size.
        min_cosine: minimum cosine similarity between exported and Keras embeddings.
        max_abs_error: maximum absolute difference of the embeddings.
        threshold: the minimum cosine required.
        samples: number of held-out images compared.
        passed: ``min_cosine >= threshold``.
    """

    path: str | None
    format: str
    quantization: str | None
    size_bytes: int
    min_cosine: float
    max_abs_error: float
    threshold: float
    samples: int
    passed: bool


def compare(reference: np.ndarray, exported: np.ndarray) -> tuple[float, float]:
    """(min per-row cosine similarity, max abs error) of two (N, D) embedding arrays."""
    reference = np.asarray(reference, np.float64)
    exported = np.asarray(exported, np.float64)
    if reference.shape != exported.shape:
        raise ExportVerificationError(
            f"exported model returns shape {exported.shape}, Keras {reference.shape}")
    if not np.all(np.isfinite(exported)):
        return float("-inf"), float("inf")
    num = np.sum(reference * exported, axis=1)
    den = np.linalg.norm(reference, axis=1) * np.linalg.norm(exported, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-300), np.where(
        np.all(reference == exported, axis=1), 1.0, 0.0))
    return float(cos.min()), float(np.abs(reference - exported).max())


def write_verified(path: str | os.PathLike, data: bytes, fmt: str, quantization: str | None,
                   run_exported: Callable[[str], np.ndarray], reference: np.ndarray,
                   verify: bool = True, force: bool = False,
                   threshold: float | None = None) -> ExportReport:
    """Write ``data`` to a temp file beside ``path``, check it, then rename it into place.

    ``run_exported(tmp_path)`` runs the exported file on the held-out inputs. On failure the
    temp file is removed and :class:`ExportVerificationError` raised, unless ``force``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"the folder of `path` does not exist. Received: path={path!r}")
    threshold = THRESHOLDS[quantization] if threshold is None else float(threshold)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.",
                               suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        min_cos, max_err = float("nan"), float("nan")
        passed = True
        if verify:
            min_cos, max_err = compare(reference, run_exported(tmp))
            passed = min_cos >= threshold
        report = ExportReport(path, fmt, quantization, len(data), min_cos, max_err, threshold,
                              len(reference), passed)
        if not passed:
            message = (f"{fmt} export ({quantization or 'float32'}) disagrees with the Keras "
                       f"model: min cosine {min_cos:.6f} < {threshold} (max abs error "
                       f"{max_err:.3g}) on {len(reference)} held-out inputs")
            if not force:
                raise ExportVerificationError(message + f"; nothing written at {path!r} "
                                              "(force=True writes it anyway).")
            warnings.warn(message + "; written anyway (force=True).", stacklevel=3)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return report
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
