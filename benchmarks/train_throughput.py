"""Training throughput (images/s) of MobileFaceNet + ArcFace on synthetic 112x112 images.

Usage: python benchmarks/train_throughput.py [--batch 32] [--steps 8] [--classes 1000]
                                             [--size 112] [--no-workers]

Configurations, each in a fresh process:
  1 process, XLA off     default strategy, jit_compile=False
  1 process, XLA on      default strategy, Keras' whole train step XLA-compiled
  2 workers, XLA off     MultiWorkerMirroredStrategy, two processes on localhost (TF_CONFIG,
                         free ports picked at run time), global batch = --batch, through
                         keras_facemargin.training.multiworker (enable_multiworker_fit)
Images/s comes from keras_facemargin.cli.train.ThroughputCallback (the progress-bar figure:
images per wall second after the first step). Prints a Markdown table and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys


def run_one(args) -> dict:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_facemargin import ArcMarginLayer
    from keras_facemargin.backbones import mobilefacenet
    from keras_facemargin.cli.train import ThroughputCallback
    from keras_facemargin.models import FaceRecognizer
    from keras_facemargin.training import multiworker

    workers = "TF_CONFIG" in os.environ
    strategy = multiworker.multiworker_strategy(120.0) if workers else tf.distribute.get_strategy()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n = args.batch * (args.steps + 1)
    x = rng.normal(size=(n, args.size, args.size, 3)).astype("float32")
    y = rng.integers(0, args.classes, n).astype("int32")
    with strategy.scope():
        backbone = mobilefacenet(input_shape=(args.size, args.size, 3))
        # labels reach the head in the train step: the margin is applied once
        model = FaceRecognizer(backbone, ArcMarginLayer(args.classes))
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=args.xla)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch, drop_remainder=True)
    throughput = ThroughputCallback(args.batch)
    model.fit(data, epochs=1, verbose=0, callbacks=[throughput])
    return {"images_s": throughput.last, "step_s": args.batch / throughput.last}


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _child(args, xla: bool, env=None) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--child", "--batch", str(args.batch), "--steps",
           str(args.steps), "--classes", str(args.classes), "--size", str(args.size)]
    if xla:
        cmd.append("--xla")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=1800)
    if proc.returncode:
        raise RuntimeError(f"benchmark child failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--no-workers", action="store_true")
    parser.add_argument("--xla", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args)))
        return
    rows = []
    for xla in (False, True):
        r = _result(_child(args, xla))
        rows.append(("1 process", "on" if xla else "off", r))
    if not args.no_workers:
        ports = _free_ports(2)
        cluster = {"worker": [f"localhost:{p}" for p in ports]}
        procs = []
        for i in range(2):
            env = dict(os.environ, TF_CONFIG=json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": i}}))
            procs.append(_child(args, False, env))
        results = [_result(p) for p in procs]
        rows.append(("2 workers", "off", results[0]))
    print(f"\nMobileFaceNet + ArcFace, C = {args.classes}, global batch {args.batch}, "
          f"{args.size}x{args.size}, CPU, {args.steps} steps after the first\n")
    print("| config | XLA | step s | images/s |")
    print("|---|---|---|---|")
    for name, xla, r in rows:
        print(f"| {name} | {xla} | {r['step_s']:.3f} | {r['images_s']:.1f} |")
    print("\ncommand: python benchmarks/train_throughput.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
