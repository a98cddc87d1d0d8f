"""Forward + backward cost of the triplet mining rules against the pairwise distance matrix alone.

For B embeddings of dimension D (B/4 identities x 4 images, as P x K sampling gives), times
one step computing the loss and its gradient with respect to the embeddings, XLA on, CPU, and
reports the median ms/step, the ratio to computing (and differentiating) the pairwise distance
matrix alone, and the peak resident memory of the steps above the memory held before them
(each configuration runs in a fresh process with glibc's mmap threshold at 64 KiB, so freed
tensors leave the RSS; the high-water mark is reset after compilation and warm-up). With ``--pml-python PATH`` (a Python with torch and pytorch-metric-learning),
the same steps for pml's TripletMarginLoss + miners run there, on the same threads.

    python benchmarks/metric_losses.py                                  # B = 256, 1024, 4096
    python benchmarks/metric_losses.py --batch 1024 --pml-python /path/to/venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

METHODS = ("distances", "semihard", "semihard_all", "all", "hard", "contrastive")
PML_METHODS = {"semihard_all": "semihard", "all": "all", "hard": "hard"}

#: one XLA-compiled forward + backward step of ``fn(labels, embeddings)`` (worker code).
COMPILED_STEP = r"""
def compiled(fn):
    @tf.function(jit_compile=True)
    def step(y, e):
        with tf.GradientTape() as tape:
            tape.watch(e)
            loss = fn(y, e)
        return loss, tape.gradient(loss, e)
    return step
"""

WORKER = r"""
import json, os, statistics, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(int(sys.argv[4]))
import keras_facemargin as kf
from keras_facemargin.ops.distances import pairwise_distances
method, B, D, threads, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
rng = np.random.default_rng(0)
x = tf.constant(rng.normal(size=(B, D)).astype("float32"))
y = tf.constant(np.repeat(np.arange(B // 4), 4))
""" + COMPILED_STEP + r"""
baseline = compiled(lambda y, e: tf.reduce_sum(pairwise_distances(e, "squared_l2")))
if method == "distances":
    fn = lambda y, e: tf.reduce_sum(pairwise_distances(e, "squared_l2"))
elif method == "contrastive":
    fn = kf.ContrastiveLoss()
else:
    fn = kf.TripletLoss(margin=0.2, distance="squared_l2", mining=method)
step = compiled(fn)
def status_mb(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key)) / 1024
for _ in range(2):  # compile and warm up, then reset the high-water mark (VmHWM)
    [t.numpy() for t in step(y, x)]
    [t.numpy() for t in baseline(y, x)]
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status_mb("VmRSS")
times = []
for _ in range(repeats):
    t0 = time.perf_counter(); [t.numpy() for t in step(y, x)]; times.append(time.perf_counter() - t0)
peak = status_mb("VmHWM") - base
base_times = []
for _ in range(repeats):  # the distance matrix alone, timed alternately with the step
    t0 = time.perf_counter(); [t.numpy() for t in baseline(y, x)]; base_times.append(time.perf_counter() - t0)
    t0 = time.perf_counter(); [t.numpy() for t in step(y, x)]; times.append(time.perf_counter() - t0)
print(json.dumps({"ms": 1e3 * statistics.median(times), "mem_mb": peak,
                  "base_ms": 1e3 * statistics.median(base_times)}))
"""

PML_WORKER = r"""
import json, statistics, sys, time
import numpy as np, torch
from pytorch_metric_learning import losses, miners, distances
method, B, D, threads, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
rng = np.random.default_rng(0)
x = torch.tensor(rng.normal(size=(B, D)).astype("float32"), requires_grad=True)
y = torch.tensor(np.repeat(np.arange(B // 4), 4))
dist = distances.LpDistance(p=2, power=2, normalize_embeddings=True)
loss_fn = losses.TripletMarginLoss(margin=0.2, distance=dist)
miner = {"semihard": miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard", distance=dist),
         "hard": miners.BatchHardMiner(distance=dist), "all": None}[method]
def status_mb(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key)) / 1024
def step():
    x.grad = None
    loss = loss_fn(x, y, miner(x, y)) if miner is not None else loss_fn(x, y)
    loss.backward()
for _ in range(2):
    step()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status_mb("VmRSS")
times = []
for _ in range(repeats):
    t0 = time.perf_counter(); step(); times.append(time.perf_counter() - t0)
print(json.dumps({"ms": 1e3 * statistics.median(times), "mem_mb": status_mb("VmHWM") - base}))
"""


def run(python: str, code: str, args: list[str], timeout: int = 900) -> dict | str:
    try:
        # large blocks straight from mmap and back on free: RSS then follows the working set
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
        proc = subprocess.run([python, "-c", code, *args], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return "timeout"
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return "failed: " + ("out of memory" if proc.returncode in (-9, 137) else tail[0][:60])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--pml-python", help="a Python with torch + pytorch-metric-learning")
    parser.add_argument("--pml-max-batch", type=int, default=1024,
                        help="skip pml's all-triplet miners above this B (they build B^3 masks)")
    args = parser.parse_args(argv)
    print(f"command: python {' '.join(['benchmarks/metric_losses.py'] + (argv or sys.argv[1:]))}")
    print(f"D={args.dim}, B/4 identities x 4, squared L2 on normalized embeddings, margin 0.2, "
          f"forward + backward, median of {args.repeats}, {args.threads} threads, XLA on")
    print("| B | method | ms/step | x distances (same process, alternating) | extra RSS MB "
          "| pml ms/step | pml RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for batch in args.batch:
        for method in args.methods:
            res = run(sys.executable, WORKER, [method, str(batch), str(args.dim),
                                               str(args.threads), str(args.repeats)])
            pml = ""
            if args.pml_python and method in PML_METHODS:
                if PML_METHODS[method] != "hard" and batch > args.pml_max_batch:
                    pml = "skipped (B^3 masks)"
                else:
                    pml = run(args.pml_python, PML_WORKER, [PML_METHODS[method], str(batch),
                                                            str(args.dim), str(args.threads),
                                                            str(args.repeats)])
            if isinstance(res, str):
                print(f"| {batch} | {method} | {res} | | | | |")
                continue
            ratio = f"{res['ms'] / res['base_ms']:.2f}"
            pml_ms = pml if isinstance(pml, str) else f"{pml['ms']:.1f}"
            pml_mem = "" if isinstance(pml, str) else f"{pml['mem_mb']:.0f}"
            print(f"| {batch} | {method} | {res['ms']:.1f} | {ratio} | {res['mem_mb']:.0f} | "
                  f"{pml_ms} | {pml_mem} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
