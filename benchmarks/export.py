# ruff: noqa: B023  (every closure below runs within its own loop iteration)
"""Exported-model size and latency: Keras vs LiteRT (XNNPACK) vs onnxruntime.

For each backbone (MobileFaceNet, IResNet-50; 112x112x3 -> 512, untrained weights with
insightface's initialization), exports float32 / float16 / dynamic / int8 TFLite and float32 /
int8 ONNX (verification off: an untrained network says nothing about quantization accuracy; the
tests check that on a trained model), then times per-image latency at batch 1 and 32 (median of
``--repeats`` after warm-up) with the threads given, and prints a Markdown table.

    python benchmarks/export.py                         # both backbones
    python benchmarks/export.py --backbones mobilefacenet --repeats 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["mobilefacenet", "iresnet50"],
                        choices=["mobilefacenet", "iresnet18", "iresnet50"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras_facemargin.backbones as bb
    from keras_facemargin.export import strip_head  # noqa: F401 (registers layers)
    from keras_facemargin.export.onnx import to_onnx
    from keras_facemargin.export.tflite import to_tflite
    from keras_facemargin.runtime import Embedder

    rng = np.random.default_rng(0)
    calib = rng.integers(0, 256, (16, 112, 112, 3)).astype(np.uint8)
    x1 = rng.integers(0, 256, (1, 112, 112, 3)).astype(np.uint8)
    x32 = rng.integers(0, 256, (32, 112, 112, 3)).astype(np.uint8)
    rows = []
    tmp = tempfile.mkdtemp()
    for name in args.backbones:
        model = getattr(bb, name)()
        f1, f32 = ((x.astype(np.float32) - 127.5) / 128.0 for x in (x1, x32))
        rows.append((name, "Keras model(x)", "float32", None,
                     median_ms(lambda f=f1: model(f, training=False), args.repeats),
                     median_ms(lambda f=f32: model(f, training=False), args.repeats) / 32))
        serve = tf.function(lambda x: model(x, training=False), jit_compile=False)
        rows.append((name, "Keras tf.function", "float32", None,
                     median_ms(lambda f=f1: serve(f), args.repeats),
                     median_ms(lambda f=f32: serve(f), args.repeats) / 32))
        exports = [("LiteRT", q, lambda p, q=q: to_tflite(model, p, q, calib, verify=False,
                                                          l2_normalize=False,
                                                          embedding_layer="embedding"), ".tflite")
                   for q in (None, "float16", "dynamic", "int8")]
        exports += [("onnxruntime", q, lambda p, q=q: to_onnx(model, p, quantization=q,
                                                             calibration_data=calib,
                                                             verify=False, l2_normalize=False,
                                                             embedding_layer="embedding"),
                     ".onnx") for q in (None, "int8")]
        for runtime, quant, export, suffix in exports:
            path = os.path.join(tmp, f"{name}_{quant}{suffix}")
            report = export(path)
            face = Embedder.open(path, num_threads=args.threads)
            lat1 = median_ms(lambda: face.embed(x1, batch_size=1), args.repeats)
            lat32 = median_ms(lambda: face.embed(x32, batch_size=32), args.repeats) / 32
            rows.append((name, runtime, quant or "float32", report.size_bytes, lat1, lat32))
            print(f"{name} {runtime} {quant}: {report.size_bytes / 1e6:.2f} MB, "
                  f"{lat1:.2f} ms @1", file=sys.stderr, flush=True)
    print(f"\nCPU: {os.cpu_count()} cores, {args.threads} threads; per-image latency, median "
          f"of {args.repeats}; untrained weights, 112x112x3 -> 512.\n")
    print("| backbone | runtime | weights | size (MB) | x float32 size | ms/image @ batch 1 | "
          "x Keras @1 | ms/image @ batch 32 |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.backbones:
        mine = [r for r in rows if r[0] == name]
        keras_ms = mine[0][4]
        sizes = {(r[1], r[2]): r[3] for r in mine}
        for _, runtime, quant, size, lat1, lat32 in mine:
            base = sizes.get((runtime, "float32"))
            size_txt = "-" if size is None else f"{size / 1e6:.2f}"
            ratio = "-" if size is None or not base else f"{size / base:.2f}"
            print(f"| {name} | {runtime} | {quant} | {size_txt} | {ratio} | {lat1:.2f} | "
                  f"{lat1 / keras_ms:.2f} | {lat32:.2f} |")
    print("\ncommand: python benchmarks/export.py " + " ".join(argv or sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
