"""Throughput of the face-data pipelines and cost of the verification protocol.

* RecordIO training pipeline (``recordio_dataset``, training mode: shuffle, decode, flip,
  standardize, batch) over N synthetic 112x112 JPEGs written to a temporary .rec/.idx;
* ``decode_pairs`` of an insightface-style .bin of the same images;
* ``evaluate_pairs`` (10-fold accuracy + ROC + EER + TAR@FAR) on an LFW-sized set
  (6000 pairs, D-dimensional embeddings, flip test).

Prints a Markdown table (median over ``--repeats``) and the command that produced it.

    python benchmarks/data_and_eval.py                      # N=2048 images, D=512
    python benchmarks/data_and_eval.py --images 512 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_facemargin.data import (  # noqa: E402
    IRHeader,
    decode_pairs,
    load_bin,
    pack,
    recordio_dataset,
    write_recordio,
)
from keras_facemargin.evaluation import evaluate_pairs  # noqa: E402


def _jpegs(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (16, 112, 112, 3)).astype(np.uint8)
    out = []
    for i in range(n):  # smooth-ish images: a blurred random base plus a per-image shift
        img = np.roll(base[i % 16], i, axis=1)
        out.append(tf.io.encode_jpeg(img, quality=90).numpy())
    return out


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2048, help="synthetic images (default 2048)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--dim", type=int, default=512, help="embedding size (default 512)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (default 3)")
    args = p.parse_args(argv)
    jpegs = _jpegs(args.images, 0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rec, idx = os.path.join(tmp, "train.rec"), os.path.join(tmp, "train.idx")
        write_recordio(rec, idx, [(k + 1, pack(IRHeader(0, (float(k % 100),), k + 1), j))
                                  for k, j in enumerate(jpegs)])
        data = recordio_dataset(rec, batch_size=args.batch_size, seed=0)

        def epoch():
            for _ in data.dataset:
                pass
        epoch()  # warm-up (tracing)
        t = _median_time(epoch, args.repeats)
        n = (args.images // args.batch_size) * args.batch_size
        rows.append(("recordio_dataset, 1 epoch (train mode)", f"{n} images 112x112, batch "
                     f"{args.batch_size}", f"{t:.2f} s", f"{n / t:.0f} img/s"))
        path = os.path.join(tmp, "set.bin")
        m = args.images - args.images % 2
        with open(path, "wb") as f:
            pickle.dump((jpegs[:m], [bool(i % 2) for i in range(m // 2)]), f, protocol=2)
        t = _median_time(lambda: decode_pairs(load_bin(path)), args.repeats)
        rows.append(("load_bin + decode_pairs", f"{m} images 112x112", f"{t:.2f} s",
                     f"{m / t:.0f} img/s"))
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(12000, args.dim)).astype(np.float32)
    flip = emb + 0.1 * rng.normal(size=emb.shape).astype(np.float32)
    same = rng.random(6000) < 0.5
    t = _median_time(lambda: evaluate_pairs(emb, same, flip), args.repeats)
    rows.append(("evaluate_pairs (10-fold, ROC, EER, TAR@FAR)", f"6000 pairs, {args.dim}-D, flip",
                 f"{t:.3f} s", "-"))
    print(f"`python benchmarks/data_and_eval.py {' '.join(sys.argv[1:] if argv is None else argv)}`"
          f" (median of {args.repeats}; {os.cpu_count()} CPUs visible)\n")
    print("| what | shape | time | throughput |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
