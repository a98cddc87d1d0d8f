"""Partial FC at scale: training-step time and peak memory for C classes and sample rate r.

Each configuration runs in a fresh process: a Dense(512) embedding of a 64-d input feeding an
``ArcMarginLayer(C, sample_rate=r)`` in a ``FaceRecognizer``, an optimizer
(``--optimizer``: Keras SGD, or RowSparseSGD; ``--momentum``), ``model.train_on_batch`` on B random samples; the median step time over ``--steps`` steps after
warm-up and the process's peak RSS (VmHWM) are reported, with the size of the logits the step
computes (B x ceil(r C) float32) for comparison.

    python benchmarks/partial_fc.py                               # C = 100k, 1M; r = 1.0, 0.1
    python benchmarks/partial_fc.py --classes 100000 --rates 1.0 0.1 0.01
    python benchmarks/partial_fc.py --classes 100000 --optimizer rowsparse --momentum 0.9
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

WORKER = r"""
import json, os, statistics, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, keras
from keras_facemargin import ArcMarginLayer, FaceRecognizer
from keras_facemargin.training import RowSparseSGD
C, r, B, D, steps, jit = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6] == "1"
optimizer = {"sgd": keras.optimizers.SGD, "rowsparse": RowSparseSGD}[sys.argv[7]](0.1, momentum=float(sys.argv[8]))
head = ArcMarginLayer(C, sample_rate=r, seed=0, check_inputs=False, kernel_initializer="random_normal")
model = FaceRecognizer(keras.Sequential([keras.Input((64,)), keras.layers.Dense(D)]), head)
model.compile(optimizer, jit_compile=jit)
rng = np.random.default_rng(0)
x = rng.normal(size=(B, 64)).astype("float32")
def step():
    y = rng.integers(0, C, B)
    return model.train_on_batch(x, y)
for _ in range(2):
    step()
times = []
for _ in range(steps):
    t0 = time.perf_counter(); loss = step(); times.append(time.perf_counter() - t0)
with open("/proc/self/status") as f:
    hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
print(json.dumps({"ms": 1e3 * statistics.median(times), "peak_mb": hwm, "loss": float(loss)}))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--rates", type=float, nargs="+", default=[1.0, 0.1])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--xla", choices=["on", "off"], default="on")
    parser.add_argument("--optimizer", choices=["sgd", "rowsparse"], default="sgd")
    parser.add_argument("--momentum", type=float, default=0.0)
    args = parser.parse_args(argv)
    print(f"command: python benchmarks/partial_fc.py {' '.join(argv or sys.argv[1:])}")
    print(f"B={args.batch}, D={args.dim}, ArcFace margin, optimizer {args.optimizer} (momentum "
          f"{args.momentum}), XLA {args.xla}, median of "
          f"{args.steps} steps after 2 warm-up steps; fresh process per row\n")
    print("| C | r | sampled classes | step ms | x r=1.0 | peak RSS MB | logits MB |")
    print("|---|---|---|---|---|---|---|")
    for classes in args.classes:
        base = None
        for rate in args.rates:
            proc = subprocess.run([sys.executable, "-c", WORKER, str(classes), str(rate),
                                   str(args.batch), str(args.dim), str(args.steps),
                                   "1" if args.xla == "on" else "0", args.optimizer,
                                   str(args.momentum)],
                                  capture_output=True, text=True, timeout=3600)
            sampled = min(classes, -(-int(classes * rate * 1e6) // 1_000_000))
            logits_mb = args.batch * sampled * 4 / 2**20
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["?"])[-1][:80]
                print(f"| {classes:,} | {rate} | {sampled:,} | failed: {tail} | | | "
                      f"{logits_mb:.0f} |", flush=True)
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            base = res["ms"] if rate == 1.0 else base
            ratio = f"{res['ms'] / base:.2f}" if base else "-"
            print(f"| {classes:,} | {rate} | {sampled:,} | {res['ms']:.0f} | {ratio} | "
                  f"{res['peak_mb']:.0f} | {logits_mb:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
