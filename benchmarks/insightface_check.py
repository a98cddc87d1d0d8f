"""Does insightface's own code accept our ONNX file? Run with insightface's Python.

insightface conflicts with nothing here but pulls opencv, scipy, scikit-image...; keep it in its
own environment:

    python -m venv /work/venvs/insightface
    /work/venvs/insightface/bin/pip install insightface onnxruntime

then (``tests/test_export_onnx_clients.py`` does this when that environment exists)::

    /work/venvs/insightface/bin/python benchmarks/insightface_check.py \\
        --model face.onnx --images crops_rgb.npy --want keras_embeddings.npy [--other old.onnx]

What it does, with insightface's code only (nothing of keras_facemargin is imported):

1. ``insightface.model_zoo.get_model(model)``: the router must return an ``ArcFaceONNX``
   (it returns None, printing ``model not recognized``, for files it cannot route).
2. ``ArcFaceONNX`` must pick insightface's normalization for it (input_mean = input_std =
   127.5; it switches to raw pixels when the first nodes look like MXNet's in-graph Sub/Mul).
3. ``get_feat`` on the images as BGR crops (what insightface gets from ``face_align.norm_crop``
   on an OpenCV image) must give the Keras embeddings: min cosine printed and checked against
   ``--min-cosine``.
4. ``--other``: the same router on another file (e.g. an NHWC export), to show what it does.

Prints one JSON line; exit status 0 when 1-3 hold.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def route(path: str):
    from insightface.model_zoo import get_model

    return get_model(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--images", required=True, help=".npy of uint8 RGB crops (N, H, W, 3)")
    parser.add_argument("--want", required=True, help=".npy of the Keras embeddings (N, D)")
    parser.add_argument("--other", help="another .onnx to route (reported, not checked)")
    parser.add_argument("--min-cosine", type=float, default=0.99999)
    args = parser.parse_args(argv)

    import insightface
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    out = {"insightface": insightface.__version__}
    model = route(args.model)
    out["routed_to"] = type(model).__name__ if model is not None else None
    ok = isinstance(model, ArcFaceONNX)
    if ok:
        out["input_mean"], out["input_std"] = float(model.input_mean), float(model.input_std)
        out["input_size"] = list(model.input_size)
        ok = out["input_mean"] == 127.5 and out["input_std"] == 127.5
        rgb = np.load(args.images)
        want = np.load(args.want).astype(np.float64)
        bgr = [np.ascontiguousarray(image[:, :, ::-1]) for image in rgb]
        got = np.asarray(model.get_feat(bgr), np.float64)
        out["output_shape"] = list(got.shape)
        cos = np.sum(got * want, axis=1) / (np.linalg.norm(got, axis=1)
                                            * np.linalg.norm(want, axis=1))
        out["min_cosine"] = float(cos.min())
        ok = ok and got.shape == want.shape and out["min_cosine"] >= args.min_cosine
    if args.other:
        other = route(args.other)
        out["other_routed_to"] = type(other).__name__ if other is not None else None
    out["ok"] = bool(ok)
    print(json.dumps(out))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
