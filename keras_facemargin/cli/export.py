"""``facemargin export``: strip the head of a trained model and write verified TFLite / ONNX.

    facemargin export model.keras --tflite face.tflite --onnx face.onnx
                      [--quantize float16|dynamic|int8 --calibration DIR] [--flip] [--force]
                      [--io-dtype float32|uint8|int8] [--batch-size 1]

Prints a table (format, quantization, size, min cosine vs Keras, batch-1 latency) and exits
non-zero, writing nothing, when an export disagrees with the Keras model (unless ``--force``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``export`` on the ``facemargin`` sub-command parser."""
    p = subparsers.add_parser("export", help="verified TFLite / ONNX embedding models",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="trained .keras model (with its margin head)")
    p.add_argument("--tflite", help="write a .tflite file here")
    p.add_argument("--onnx", help="write a .onnx file here")
    p.add_argument("--quantize", choices=["float16", "dynamic", "int8"],
                   help="quantization (TFLite: all three; ONNX: int8 only)")
    p.add_argument("--calibration", help="folder of face images (any depth) for int8 "
                                         "calibration; also used, held out, for verification")
    p.add_argument("--max-calibration", type=int, default=200,
                   help="images read from --calibration (default 200)")
    p.add_argument("--head", help="name of the head layer (default: the one margin head)")
    p.add_argument("--embedding-layer", help="a model without a margin head: the layer whose "
                                             "output is the embedding")
    p.add_argument("--normalization", choices=["keras_facemargin", "arcface_torch"],
                   default="keras_facemargin",
                   help="pixel normalization the model was trained with: keras_facemargin "
                        "(x - 127.5) / 128 (default) or arcface_torch (x - 127.5) / 127.5")
    p.add_argument("--onnx-layout", choices=["nchw", "nhwc"], default="nchw",
                   help="ONNX input layout: nchw = insightface's convention (default: "
                        "[N, 3, H, W], (x - 127.5) / 127.5 outside, raw output), nhwc = "
                        "[N, H, W, 3] normalized as trained, L2-normalized output")
    p.add_argument("--flip", action="store_true", help="fuse the flip test into the graph")
    p.add_argument("--no-l2", action="store_true", help="do not L2-normalize the output")
    p.add_argument("--int8-io", action="store_true", help="same as --io-dtype int8")
    p.add_argument("--io-dtype", choices=["float32", "uint8", "int8"],
                   help="TFLite input/output type (default float32); uint8 or int8 need "
                        "--quantize int8: the input then holds the pixels (scale 1), for Edge "
                        "TPU / NNAPI / MediaPipe (uint8)")
    p.add_argument("--batch-size", type=int, choices=[1],
                   help="TFLite: fix the input to a batch of 1 (default: dynamic batch)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17, at most 18)")
    p.add_argument("--onnx-8bit-weights", action="store_true",
                   help="ONNX int8: 8-bit weights (default 7-bit, which x86 CPUs without VNNI "
                        "need; use this for VNNI or ARM targets)")
    p.add_argument("--force", action="store_true", help="write even if verification fails")
    p.set_defaults(func=run)
    return p


def _read_images(folder: str, size: tuple[int, int], limit: int) -> np.ndarray:
    from keras_facemargin.data.pipeline import IMAGE_EXTENSIONS, decode_image

    if not os.path.isdir(folder):
        raise ValueError(f"`--calibration` must be a folder of images. Received: {folder!r}")
    files = sorted(os.path.join(root, f) for root, _, names in os.walk(folder) for f in names
                   if f.lower().endswith(IMAGE_EXTENSIONS))[:limit]
    images, skipped = [], 0
    for path in files:
        try:
            with open(path, "rb") as f:
                images.append(decode_image(f.read(), size))
        except (OSError, ValueError):
            skipped += 1
    if skipped:
        print(f"warning: skipped {skipped} unreadable image(s) in {folder}", file=sys.stderr)
    if len(images) < 2:
        raise ValueError(f"`--calibration` {folder!r} holds {len(images)} readable images "
                         f"({', '.join(IMAGE_EXTENSIONS)}); at least 2 are needed.")
    return np.stack(images)


def _latency_ms(path: str, image: np.ndarray, repeats: int = 20) -> float:
    from keras_facemargin.runtime import Embedder

    face = Embedder.open(path)
    face.embed(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        face.embed(image)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def run(args: argparse.Namespace) -> int:
    """Export; 0 on success, 1 when a verification failed, 2 on bad input."""
    if not args.tflite and not args.onnx:
        print("facemargin export: error: give `--tflite PATH` and/or `--onnx PATH`.", file=sys.stderr)
        return 2
    if args.onnx and args.quantize in ("float16", "dynamic"):
        print(f"facemargin export: error: ONNX export supports --quantize int8 only. Received: {args.quantize}",
              file=sys.stderr)
        return 2
    if args.int8_io and args.io_dtype not in (None, "int8"):
        print(f"error: --int8-io means --io-dtype int8. Received: --io-dtype {args.io_dtype}",
              file=sys.stderr)
        return 2
    io_dtype = "int8" if args.int8_io else args.io_dtype
    if io_dtype in ("uint8", "int8") and args.quantize != "int8":
        print(f"error: --io-dtype {io_dtype} needs --quantize int8. Received: --quantize "
              f"{args.quantize}", file=sys.stderr)
        return 2
    if (io_dtype or args.batch_size) and not args.tflite:
        print("error: --io-dtype and --batch-size apply to --tflite only.", file=sys.stderr)
        return 2
    if args.quantize == "int8" and not args.calibration:
        print("facemargin export: error: --quantize int8 needs --calibration DIR (face images).", file=sys.stderr)
        return 2
    if not os.path.isfile(args.model) or not args.model.endswith(".keras"):
        print(f"facemargin export: error: `model` must be an existing .keras file. Received: {args.model!r}",
              file=sys.stderr)
        return 2
    import keras

    import keras_facemargin  # noqa: F401  (registers the heads)
    from keras_facemargin.export import ExportVerificationError, to_onnx, to_tflite
    from keras_facemargin.export.tflite import ConversionError

    try:
        model = keras.models.load_model(args.model, compile=False)
        size = tuple(int(d) for d in model.inputs[0].shape[1:3])
        calib = held = None
        if args.calibration:
            images = _read_images(args.calibration, size, args.max_calibration)
            split = max(1, len(images) // 2)
            calib, held = images[:split], images[split:]
        common = dict(verification_data=held, force=args.force, head_layer=args.head,
                      flip_fusion=args.flip, embedding_layer=args.embedding_layer,
                      normalization=args.normalization)
        l2 = False if args.no_l2 else None
        reports = []
        if args.tflite:
            reports.append(to_tflite(model, args.tflite, args.quantize, calib,
                                     io_dtype=io_dtype, batch_size=args.batch_size,
                                     l2_normalize=l2 is None, **common))
        if args.onnx:
            reports.append(to_onnx(model, args.onnx, args.opset, args.quantize, calib,
                                   reduce_range=not args.onnx_8bit_weights,
                                   layout=args.onnx_layout, l2_normalize=l2, **common))
    except ExportVerificationError as err:
        print(f"facemargin export: error: {err}", file=sys.stderr)
        return 1
    except (ConversionError, ValueError, OSError) as err:
        print(f"facemargin export: error: {err}", file=sys.stderr)
        return 2
    probe = np.full((1, *size, 3), 128, np.uint8)
    print("| format | quantization | size (KB) | min cosine vs Keras | max abs error | "
          "batch-1 latency (ms) | file |")
    print("|---|---|---|---|---|---|---|")
    for r in reports:
        print(f"| {r.format} | {r.quantization or 'float32'} | {r.size_bytes / 1024:.0f} | "
              f"{r.min_cosine:.6f} | {r.max_abs_error:.2e} | {_latency_ms(r.path, probe):.2f} | "
              f"{r.path} |")
    return 0 if all(r.passed for r in reports) else 1
