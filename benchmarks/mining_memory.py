"""XLA's temporary memory and step time of the triplet mining paths (fast switch vs sort only).

Every branch of the mining switch is compiled, so the temporary buffer XLA reserves for a step
is the largest any branch needs, even when the fast path runs. For each rule and
``max_positives`` (32: the fast path runs, the sort path is compiled too; 0: sort path only)
this compiles one forward + backward step in a fresh process with ``--xla_dump_to``, reads the
preallocated temporary buffer from XLA's buffer assignment, and times the step (median).

    python benchmarks/mining_memory.py --batch 1024
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from metric_losses import COMPILED_STEP  # noqa: E402

WORKER = r"""
import glob, json, os, statistics, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tensorflow as tf
import keras_facemargin as kf
rule, B, mp, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
x = tf.constant(rng.normal(size=(B, 512)).astype("float32"))
y = tf.constant(np.repeat(np.arange(B // 4), 4))
loss = kf.TripletLoss(margin=0.2, distance="squared_l2", mining=rule, max_positives=mp)
""" + COMPILED_STEP + r"""
step = compiled(loss)
t0 = time.perf_counter(); step(y, x)[0].numpy(); compile_s = time.perf_counter() - t0
times = []
for _ in range(repeats):
    t0 = time.perf_counter(); step(y, x)[0].numpy(); times.append(time.perf_counter() - t0)
temp = 0
for name in glob.glob(os.path.join(os.environ["DUMP_DIR"], "*buffer-assignment.txt")):
    with open(name) as f:
        for line in f:
            if "preallocated-temp" in line:
                temp = max(temp, int(line.split()[3].rstrip(",")))
print(json.dumps({"ms": 1e3 * statistics.median(times), "compile_s": compile_s, "temp_mb": temp / 1e6}))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rules", nargs="+", default=["semihard", "semihard_all", "all"])
    args = parser.parse_args(argv)
    print(f"command: python {' '.join(['benchmarks/mining_memory.py'] + (argv or sys.argv[1:]))}")
    print(f"B={args.batch}, D=512, B/4 identities x 4, forward + backward, XLA on, CPU")
    print("| rule | max_positives | path run | ms/step | compile s | XLA temp MB |")
    print("|---|---|---|---|---|---|")
    for rule in args.rules:
        for mp in (32, 0):
            with tempfile.TemporaryDirectory() as dump:
                env = {**os.environ, "DUMP_DIR": dump, "XLA_FLAGS": f"--xla_dump_to={dump}"}
                proc = subprocess.run([sys.executable, "-c", WORKER, rule, str(args.batch),
                                       str(mp), str(args.repeats)],
                                      capture_output=True, text=True, env=env)
            path = "fast" if mp else "sort"
            if proc.returncode != 0:
                print(f"| {rule} | {mp} | {path} | failed | | |")
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"| {rule} | {mp} | {path} | {res['ms']:.1f} | {res['compile_s']:.1f} | "
                  f"{res['temp_mb']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
