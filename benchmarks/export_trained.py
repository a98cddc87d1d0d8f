# ruff: noqa: E402
"""Export accuracy of *trained* face backbones: every format vs the Keras embedding model.

No face data set is available offline, so the backbones are trained briefly on real images that
are: scikit-learn's bundled digits (1,797 8x8 scans of 10 "identities"), upscaled to 112x112
RGB (each pixel a 14x14 block, colour-mapped, +-4 grey-level noise). The split:

* identities 0-6: 80% train the backbone with an ArcFace head (``ArcMarginLayer``, m = 0.5,
  s = 32); the calibration images of int8 are taken from these training images;
* held-out verification images (disjoint from training and calibration): the other 20% of
  identities 0-6 and images of identities 7-9, never seen in training (half each).

Then the embedding model is exported through the package's own API (``to_tflite`` float32 /
float16 / dynamic / int8, ``to_onnx`` float32 / int8) with ``verification_data`` = the
held-out images and ``force=True`` (so a file under the issue's threshold is still reported),
and a table of size, x float32 size and minimum per-embedding cosine vs Keras is printed.

    python benchmarks/export_trained.py                               # MobileFaceNet, ~4 min
    python benchmarks/export_trained.py --backbone iresnet50 --steps 40 --batch-size 32
    python benchmarks/export_trained.py --save mfn.keras    # then --load mfn.keras: no training
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np

TRAIN_IDS = 7


def split(labels: np.ndarray, seed: int = 0, calibration: int = 128, verification: int = 64):
    """Index arrays ``(train, calibration, verification)``; calibration is a subset of the
    training images, verification is disjoint from both (half unseen identities)."""
    rng = np.random.default_rng(seed)
    seen = np.flatnonzero(labels < TRAIN_IDS)
    unseen = np.flatnonzero(labels >= TRAIN_IDS)
    seen = rng.permutation(seen)
    cut = int(0.8 * len(seen))
    train, held_seen = seen[:cut], seen[cut:]
    calib = rng.choice(train, calibration, replace=False)
    verify = np.concatenate([rng.choice(held_seen, verification // 2, replace=False),
                             rng.choice(unseen, verification - verification // 2,
                                        replace=False)])
    return train, calib, verify


def train(backbone_name: str, images, labels, train_idx, steps: int, batch_size: int,
          lr: float, seed: int):
    import keras
    import tensorflow as tf

    import keras_facemargin as kf
    import keras_facemargin.backbones as bb

    keras.utils.set_random_seed(seed)
    backbone = getattr(bb, backbone_name)()
    head = kf.ArcMarginLayer(TRAIN_IDS, margin=0.5, scale=32.0, name="head")
    model = keras.Model(backbone.inputs, head(backbone.outputs[0]))
    model.compile(keras.optimizers.SGD(lr, momentum=0.9), loss=head.loss)
    x = (images[train_idx].astype(np.float32) - 127.5) / 128.0
    y = labels[train_idx]
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).repeat()
    probe = (x[:128], y[:128])  # the ArcFace loss on 128 training images, before and after
    loss0 = float(model.evaluate(*probe, batch_size=64, verbose=0))
    start = time.perf_counter()
    model.fit(data.batch(batch_size, drop_remainder=True), steps_per_epoch=steps, epochs=1,
              verbose=0)
    seconds = time.perf_counter() - start
    loss1 = float(model.evaluate(*probe, batch_size=64, verbose=0))
    return model, steps, steps * batch_size / len(x), seconds, loss0, loss1


def mediapipe_table(python: str, model, held: np.ndarray, rows, paths, tmp: str) -> None:
    """MediaPipe ImageEmbedder (default options) on the held-out images vs Keras, per file."""
    import json
    import subprocess

    import keras

    from keras_facemargin.export import strip_head

    net = strip_head(model)
    want = keras.ops.convert_to_numpy(net((held.astype(np.float32) - 127.5) / 128.0))
    np.save(os.path.join(tmp, "held.npy"), held)
    np.save(os.path.join(tmp, "keras.npy"), want)
    files = [path for (fmt, quant, _), path in zip(rows, paths, strict=True)
             if fmt == "TFLite" and "(int8 io" not in quant]  # MediaPipe: uint8 / float32 in
    script = os.path.join(os.path.dirname(__file__), "..", "tests", "scripts",
                          "mediapipe_check.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([python, script, "--images", os.path.join(tmp, "held.npy"),
                           "--reference", os.path.join(tmp, "keras.npy"), *files],
                          capture_output=True, text=True, env=env, timeout=1800)
    lines = {d["model"]: d for d in map(json.loads, (line for line in proc.stdout.splitlines()
                                                     if line.startswith("{")))}
    print(f"\nMediaPipe ImageEmbedder {next(iter(lines.values()), {}).get('mediapipe', '?')}, "
          f"default options, {len(held)} held-out images:\n")
    print("| file | min cosine vs Keras (MediaPipe) |")
    print("|---|---|")
    for (fmt, quant, _), path in zip(rows, paths, strict=True):
        if path in lines:
            line = lines[path]
            value = f"{line['min_cosine']:.6f}" if "min_cosine" in line else line["error"]
            print(f"| {fmt} {quant} | {value} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilefacenet",
                        choices=["mobilefacenet", "iresnet18", "iresnet50"])
    parser.add_argument("--steps", type=int, default=100, help="training steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--calibration", type=int, default=128)
    parser.add_argument("--verification", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--mediapipe-python",
                        help="python of an environment with mediapipe: also run every TFLite "
                             "file MediaPipe takes through its ImageEmbedder "
                             "(tests/scripts/mediapipe_check.py) and report the cosine")
    parser.add_argument("--save", help="also save the trained model (.keras) here")
    parser.add_argument("--load", help="skip training: export a model written by --save "
                                       "(same --seed, so the same calibration/held-out split)")
    args = parser.parse_args(argv)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from keras_facemargin.data.digits import digit_faces
    from keras_facemargin.export import to_onnx, to_tflite

    images, labels = digit_faces(seed=args.seed)
    train_idx, calib_idx, verify_idx = split(labels, args.seed, args.calibration,
                                             args.verification)
    assert not set(calib_idx) & set(verify_idx) and not set(train_idx) & set(verify_idx)
    if args.load:
        import keras

        import keras_facemargin  # noqa: F401  (registers the head for load_model)

        model = keras.models.load_model(args.load, compile=False)
        steps, epochs = args.steps, args.steps * args.batch_size / len(train_idx)
        print(f"{args.backbone}: loaded {args.load} (trained by --save with --steps "
              f"{args.steps} --batch-size {args.batch_size} assumed)", file=sys.stderr)
    else:
        model, steps, epochs, seconds, loss0, loss1 = train(
            args.backbone, images, labels, train_idx, args.steps, args.batch_size, args.lr,
            args.seed)
        print(f"{args.backbone}: {steps} steps of {args.batch_size} ({epochs:.1f} epochs of "
              f"{len(train_idx)} images, identities 0-{TRAIN_IDS - 1}) in {seconds:.0f} s, "
              f"ArcFace loss {loss0:.2f} -> {loss1:.2f}", file=sys.stderr, flush=True)
        if args.save:
            model.save(args.save)
    calib, held = images[calib_idx], images[verify_idx]

    exports = [("TFLite", q, ".tflite", lambda p, q=q: to_tflite(
        model, p, q, calib, verification_data=held, force=True))
        for q in (None, "float16", "dynamic", "int8")]
    # device variants: integer input/output holding the pixels, fixed batch of 1
    exports += [("TFLite", f"int8 ({io} io{', batch 1' if b else ''})", ".tflite",
                 lambda p, io=io, b=b: to_tflite(model, p, "int8", calib, io_dtype=io,
                                                  batch_size=b, verification_data=held,
                                                  force=True))
                for io, b in (("uint8", 1), ("int8", None))]
    exports += [("TFLite", "float32 (batch 1)", ".tflite", lambda p: to_tflite(
        model, p, batch_size=1, verification_data=held, force=True))]
    if not args.no_onnx:
        exports += [("ONNX", q, ".onnx", lambda p, q=q: to_onnx(
            model, p, quantization=q, calibration_data=calib, verification_data=held,
            force=True)) for q in (None, "int8")]
    tmp = tempfile.mkdtemp()
    rows, paths = [], []
    for fmt, quant, suffix, export in exports:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            name = "".join(c if c.isalnum() else "_" for c in str(quant))
            report = export(os.path.join(tmp, f"{args.backbone}_{name}{suffix}"))
        rows.append((fmt, quant or "float32", report))
        paths.append(report.path)
        print(f"  {fmt} {quant or 'float32'}: {report.size_bytes / 1e6:.3f} MB, min cosine "
              f"{report.min_cosine:.6f} ({time.perf_counter() - start:.0f} s)", file=sys.stderr,
              flush=True)

    print(f"\n{args.backbone} trained {steps} steps x {args.batch_size} ({epochs:.1f} epochs) on "
          f"digits upscaled to 112x112x3 (identities 0-{TRAIN_IDS - 1}); int8 calibrated on "
          f"{len(calib)} training images; verified on {len(held)} held-out images (half of "
          "unseen identities).\n")
    print("| format | weights | size (MB) | x float32 size | min cosine vs Keras | threshold | "
          "met |")
    print("|---|---|---|---|---|---|---|")
    base = {fmt: r.size_bytes for fmt, q, r in rows if q == "float32"}
    for fmt, quant, report in rows:
        print(f"| {fmt} | {quant} | {report.size_bytes / 1e6:.3f} | "
              f"{report.size_bytes / base[fmt]:.3f} | {report.min_cosine:.6f} | "
              f"{report.threshold} | {'yes' if report.passed else 'NO'} |")
    if args.mediapipe_python:
        mediapipe_table(args.mediapipe_python, model, held, rows, paths, tmp)
    print("\ncommand: python benchmarks/export_trained.py " + " ".join(
        sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
