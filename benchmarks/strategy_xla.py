"""Train-step time of MobileFaceNet + ArcFace on CPU: XLA on/off/split, one device vs mirrored.

Usage: python benchmarks/strategy_xla.py [--batch 32] [--steps 8] [--size 112]

Each configuration runs in its own process (logical CPU devices are fixed at start-up):
  default/off     one device, jit_compile=False
  default/xla     one device, Keras' whole train step XLA-compiled
  default/split   one device, forward+loss+gradients XLA-compiled, optimizer update outside
  mirrored2/off   MirroredStrategy over 2 logical CPU devices, no XLA
  mirrored2/split MirroredStrategy over 2 logical CPU devices, per-replica forward/backward XLA
Prints a Markdown table: median seconds per step (after 2 warm-up steps) and images/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def run_one(strategy_name: str, mode: str, batch: int, steps: int, size: int) -> dict:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import numpy as np
    import tensorflow as tf

    if strategy_name == "mirrored2":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    else:
        strategy = tf.distribute.get_strategy()
    import keras

    import keras_facemargin as kf
    from keras_facemargin.backbones import mobilefacenet
    from keras_facemargin.training import multiworker

    rng = np.random.default_rng(0)
    n = batch * (steps + 2)
    x = rng.uniform(-1, 1, size=(n, size, size, 3)).astype("float32")
    y = rng.integers(0, 1000, n)
    with strategy.scope():
        head = kf.ArcMarginLayer(1000)
        model = keras.Sequential([mobilefacenet((size, size, 3)), head])
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9), loss=head.loss,
                      jit_compile=(mode == "xla"))
    if mode == "split":
        model.train_step = multiworker._xla_local_train_step(model)
    multiworker.enable_multiworker_fit(model)

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_train_batch_begin(self, b, logs=None):
            self.t = time.perf_counter()

        def on_train_batch_end(self, b, logs=None):
            self.times.append(time.perf_counter() - self.t)

    timer = Timer()
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    model.fit(data, epochs=1, verbose=0, callbacks=[timer])
    step = float(np.median(timer.times[2:]))
    return {"strategy": strategy_name, "mode": mode, "step_s": step, "images_s": batch / step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one, args.batch, args.steps, args.size)))
        return
    rows = []
    for strategy_name, mode in [("default", "off"), ("default", "xla"), ("default", "split"),
                                ("mirrored2", "off"), ("mirrored2", "split")]:
        out = subprocess.run([sys.executable, __file__, "--one", strategy_name, mode,
                              "--batch", str(args.batch), "--steps", str(args.steps),
                              "--size", str(args.size)],
                             capture_output=True, text=True, timeout=1800, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], file=sys.stderr, flush=True)
    print(f"| strategy | XLA | s/step (B={args.batch}, {args.size}x{args.size}) | images/s |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['strategy']} | {r['mode']} | {r['step_s']:.3f} | {r['images_s']:.1f} |")


if __name__ == "__main__":
    main()
