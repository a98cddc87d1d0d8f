"""Run exported ``.tflite`` files through MediaPipe Tasks' ``ImageEmbedder`` (default options).

Runs in an environment with the ``mediapipe`` package (it pins its own numpy and protobuf, so
it lives in a separate virtual environment, e.g. /work/venvs/mediapipe); needs nothing from
keras_facemargin. ``tests/test_export_tflite_mediapipe.py`` runs it in a subprocess; by hand:

    /work/venvs/mediapipe/bin/python tests/scripts/mediapipe_check.py \\
        --images faces.npy --out mediapipe.npz face.tflite face_int8.tflite \\
        [--reference keras.npy --threshold 0.9999]

``--images``: uint8 RGB images (N, H, W, 3) saved with ``numpy.save``. Writes, per model, the
(N, D) float embeddings MediaPipe returns (``embedding_<i>`` in ``--out``, model order) and
prints one JSON line per model: path, MediaPipe version, embedding size and, with
``--reference`` (the (N, D) embeddings to compare with), the minimum cosine similarity. Exits 1
when a model is refused by MediaPipe or, with ``--threshold``, misses it.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def embed(path: str, images: np.ndarray) -> np.ndarray:
    """(N, D) embeddings of uint8 RGB ``images`` by MediaPipe's ImageEmbedder, default options
    (no L2 normalization, no scalar quantization)."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python.vision import ImageEmbedder, ImageEmbedderOptions

    options = ImageEmbedderOptions(base_options=BaseOptions(model_asset_path=path))
    out = []
    with ImageEmbedder.create_from_options(options) as embedder:
        for image in images:
            frame = mp.Image(image_format=mp.ImageFormat.SRGB,
                             data=np.ascontiguousarray(image, np.uint8))
            result = embedder.embed(frame)
            out.append(np.asarray(result.embeddings[0].embedding, np.float32))
    return np.stack(out)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    num = np.sum(a * b, axis=1)
    return float(np.min(num / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help=".tflite files")
    parser.add_argument("--images", required=True, help=".npy of uint8 (N, H, W, 3) RGB")
    parser.add_argument("--out", help=".npz to write the embeddings to")
    parser.add_argument("--reference", help=".npy of the (N, D) embeddings to compare with")
    parser.add_argument("--threshold", type=float, help="minimum cosine each model must reach")
    args = parser.parse_args(argv)
    import mediapipe as mp

    images = np.load(args.images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        parser.error(f"--images must hold uint8 (N, H, W, 3). Received: {images.dtype} "
                     f"{images.shape}")
    reference = np.load(args.reference) if args.reference else None
    results, failed = {}, False
    for i, path in enumerate(args.models):
        line = {"model": path, "mediapipe": mp.__version__}
        try:
            emb = embed(path, images)
        except Exception as err:  # MediaPipe raises RuntimeError / ValueError with its status
            line["error"] = str(err).strip().splitlines()[-1][:500]
            failed = True
            print(json.dumps(line), flush=True)
            continue
        results[f"embedding_{i}"] = emb
        line["embedding_size"] = int(emb.shape[1])
        if reference is not None:
            line["min_cosine"] = min_cosine(emb, reference)
            if args.threshold is not None and line["min_cosine"] < args.threshold:
                failed = True
        print(json.dumps(line), flush=True)
    if args.out:
        np.savez(args.out, **results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
