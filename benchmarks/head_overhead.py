"""Forward + backward cost of every margin head against a plain Dense + softmax cross-entropy.

Times one step that computes the mean cross-entropy and its gradients with respect to the
embeddings and the class centres (no optimizer update), for B x D embeddings and C classes,
with XLA on and off; prints the median ms/step over ``--repeats`` runs after warm-up and the
ratio to the plain baseline (logits = x @ W, no bias, same shapes), timed alternately with each
head so that the machine's drift affects both sides of the ratio alike.

    python benchmarks/head_overhead.py                       # B=256, D=512, C=10k and 100k
    python benchmarks/head_overhead.py --classes 10000 --repeats 5 --heads arc cos --xla off
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_facemargin as kf  # noqa: E402

HEADS = {
    "arc": lambda C: kf.ArcMarginLayer(C, margin=0.5, scale=64.0),
    "cos": lambda C: kf.CosMarginLayer(C, margin=0.35, scale=64.0),
    "combined": lambda C: kf.CombinedMarginLayer(C, m1=1.0, m2=0.3, m3=0.2, scale=64.0),
    "norm": lambda C: kf.NormSoftmaxLayer(C, scale=30.0),
    "sphere": lambda C: kf.SphereMarginLayer(C, margin=4),
    "lsoftmax": lambda C: kf.LargeMarginSoftmaxLayer(C, margin=4),
    "subcenter": lambda C: kf.SubCenterArcMarginLayer(C, sub_centers=3),
    "curricular": lambda C: kf.CurricularMarginLayer(C),
    "ada": lambda C: kf.AdaMarginLayer(C),
    "mag": lambda C: kf.MagMarginLayer(C),
    "elastic": lambda C: kf.ElasticMarginLayer(C, seed=0),
    "softmax": lambda C: kf.SoftmaxLayer(C),
}


def make_step(head, jit: bool):
    def step(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = head(x, y, training=True)
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        return tape.gradient(loss, [x, head.kernel.value])

    return tf.function(step, jit_compile=jit)


def make_plain_step(kernel, jit: bool):
    def step(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = tf.matmul(x, kernel)
            loss = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        return tape.gradient(loss, [x, kernel])

    return tf.function(step, jit_compile=jit)


def paired_ms(plain, step, x, y, repeats: int, warmup: int = 3) -> tuple[float, float]:
    """Median ms of ``plain`` and of ``step``, timed alternately (ABAB) so drift hits both."""
    for _ in range(warmup):
        [g.numpy() for g in plain(x, y)]
        [g.numpy() for g in step(x, y)]
    times = {"plain": [], "step": []}
    for _ in range(repeats):
        for key, fn in (("plain", plain), ("step", step)):
            start = time.perf_counter()
            [g.numpy() for g in fn(x, y)]
            times[key].append((time.perf_counter() - start) * 1e3)
    return statistics.median(times["plain"]), statistics.median(times["step"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=list(HEADS))
    parser.add_argument("--xla", choices=["on", "off", "both"], default="both")
    parser.add_argument("--no-checks", action="store_true",
                        help="construct heads with check_inputs=False")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(args.batch, args.dim)).astype("float32"))
    jits = {"on": [True], "off": [False], "both": [False, True]}[args.xla]
    rows = []
    for C in args.classes:
        y = tf.constant(rng.integers(0, C, args.batch).astype("int32"))
        kernel = tf.Variable(rng.normal(size=(args.dim, C)).astype("float32") * 0.01)
        for jit in jits:
            plain_step = make_plain_step(kernel, jit)
            for name in args.heads:
                head = HEADS[name](C)
                if args.no_checks:
                    head.check_inputs = False
                head.build((None, args.dim))
                sub = head.sub_centers
                head.kernel.assign(rng.normal(size=(C * sub, args.dim)).astype("float32") * 0.01)
                plain, ms = paired_ms(plain_step, make_step(head, jit), x, y, args.repeats)
                rows.append((C, jit, type(head).__name__, plain, ms, ms / plain))
                print(f"C={C} xla={jit} {name}: {ms:.1f} ms vs plain {plain:.1f} ms "
                      f"({ms / plain:.2f}x)", file=sys.stderr)
                del head
    print(f"\nB={args.batch}, D={args.dim}, float32, CPU ({os.cpu_count()} cores), "
          f"median of {args.repeats} runs after 3 warm-up runs; forward + backward "
          "(gradients for embeddings and class centres).\n")
    print("| C | XLA | head | ms/step | plain ms/step (same runs) | x plain |")
    print("|---|---|---|---|---|---|")
    for C, jit, name, plain, ms, ratio in rows:
        print(f"| {C:,} | {'on' if jit else 'off'} | {name} | {ms:.1f} | {plain:.1f} | "
              f"{ratio:.2f} |")
    print("\ncommand: python benchmarks/head_overhead.py " + " ".join(argv or sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
