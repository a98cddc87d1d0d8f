"""Training throughput (images/s) of a face backbone + ArcFace on CPU, ours vs insightface's.

Usage:
  python benchmarks/train_throughput.py [--batch 64] [--classes 10000] [--size 112]
      [--backbone mbf] [--scale 2] [--threads 2] [--rounds 5] [--steps 3] [--warmup 1]
      [--xla off on] [--torch-python PY --insightface-src DIR [--torch-steps N]] [--workers]
      [--profile | --grouped-conv]

Side by side, in one run (the main table):
  ours, XLA off    keras_facemargin.FaceRecognizer(backbone, ArcMarginLayer(C)), compile()'s
                   default SGD(0.1, momentum 0.9, weight decay 5e-4), jit_compile=False
  ours, XLA on     the same, Keras' whole train step XLA-compiled (jit_compile=True)
  insightface      arcface_torch's recipe in PyTorch (benchmarks/_torch_worker.py, run by
                   --torch-python with insightface's code imported from --insightface-src):
                   its backbone, its CombinedMarginLoss (ArcFace, s = 64, m = 0.5) on a
                   normalized linear layer (its PartialFC_V2 at sample rate 1.0 where that runs,
                   it needs CUDA), cross-entropy, SGD(0.1, momentum 0.9, weight decay 5e-4),
                   clip_grad_norm_(backbone, 5) as in its train_v2.py; fp32
Each configuration is a resident worker process (same batch, image size, classes, and
--threads for TF's intra/inter-op pools and torch's set_num_threads/set_num_interop_threads),
fed random in-memory batches. After --warmup steps each (tracing, XLA compilation), the
workers are timed ALTERNATELY, --rounds times: ours off, ours on, insightface, ours off, ...
so that load from other jobs hits every configuration alike; each row reports the median
images/s over the rounds, and "x insightface" is the median of the per-round ratios.

--workers adds the old fresh-process row: 2 workers, MultiWorkerMirroredStrategy on localhost
(global batch = --batch), images/s from keras_facemargin.cli.train.ThroughputCallback.
--profile (instead of the side by side) times ours' forward, forward + backward, optimizer
update and whole step apart (XLA off and on); the insightface worker reports its phases
(forward, backward, clip + SGD step) with every timing. --grouped-conv (instead) times
MobileFaceNet's one grouped convolution (scale 2) against the same convolution written as a
depthwise one. Prints Markdown tables and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
TORCH_NAME = "insightface (PyTorch)"
TORCH_HINT = (
    "insightface not measured: pass --torch-python (a Python with PyTorch, e.g. "
    "`python -m venv /work/venvs/torch && /work/venvs/torch/bin/pip install torch "
    "--index-url https://download.pytorch.org/whl/cpu`) and --insightface-src (the "
    "recognition/arcface_torch folder of a checkout of github.com/deepinsight/insightface).")


# --- the worker protocol (both sides) ---------------------------------------------------------
class Worker:
    """A resident benchmark process that answers JSON lines: ``{"steps": N}`` -> seconds.

    Args:
        name: the row name.
        cmd: the command line that starts it; it prints one ``{"ready": ...}`` line first.
        steps: steps per timed call.
        env: its environment. Defaults to `None` (this process's).
    """

    def __init__(self, name: str, cmd: list[str], steps: int, env: dict | None = None):
        self.name, self.cmd, self.steps = name, cmd, steps
        self.replies: list[dict] = []
        self._log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, env=env, bufsize=1)
        self.info = self._read()
        if not self.info.get("ready"):
            raise RuntimeError(f"{name}: worker did not start: {self.info}")

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=60)
            self._log.seek(0)
            raise RuntimeError(f"{self.name}: worker exited ({self.proc.returncode}):\n"
                               f"{self._log.read()[-3000:]}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{self.name}: {reply['error']}")
        return reply

    def run(self, steps: int | None = None) -> float:
        """Trains ``steps`` (default: ``self.steps``) steps; returns their wall seconds."""
        self.proc.stdin.write(json.dumps({"steps": steps or self.steps}) + "\n")
        self.proc.stdin.flush()
        self.last = self._read()
        self.replies.append(self.last)
        return float(self.last["seconds"])

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self._log.close()


def alternate(workers, rounds: int, warmup: int = 1, log=None) -> dict[str, list[float]]:
    """Times the workers in turn, ``rounds`` times: A, B, C, A, B, C, ...

    Args:
        workers: objects with ``name``, ``steps`` and ``run(steps) -> seconds``.
        rounds: timed rounds (>= 1).
        warmup: untimed steps each worker runs first (tracing, compilation). Defaults to `1`.
        log: a callable for progress lines. Defaults to `None`.

    Returns:
        ``{name: [seconds of round 1, ...]}``.
    """
    if rounds < 1:
        raise ValueError(f"`rounds` must be >= 1. Received: rounds={rounds!r}")
    if warmup > 0:
        for w in workers:
            w.run(warmup)
    times: dict[str, list[float]] = {w.name: [] for w in workers}
    for r in range(rounds):
        for w in workers:
            times[w.name].append(w.run(w.steps))
            if log:
                log(f"round {r + 1}/{rounds} {w.name}: "
                    f"{w.steps} steps in {times[w.name][-1]:.2f} s")
    return times


def summarize(times: dict[str, list[float]], steps: dict[str, int], batch: int,
              reference: str | None = None) -> list[dict]:
    """Median images/s per configuration and, against ``reference``, the median per-round ratio.

    Args:
        times: ``{name: [seconds per round]}`` from :func:`alternate`.
        steps: ``{name: steps per round}``.
        batch: images per step.
        reference: the row the others are compared with (round by round). Defaults to `None`.

    Returns:
        One dict per row: ``name``, ``images_s`` (median), ``low``/``high`` (min/max over
        rounds), ``step_s`` (median), ``ratio`` (None without a reference).
    """
    rates = {n: [batch * steps[n] / s for s in ts] for n, ts in times.items()}
    rows = []
    for name, rs in rates.items():
        ratio = None
        if reference is not None and name in rates and reference in rates:
            ratio = statistics.median(a / b for a, b in zip(rs, rates[reference], strict=True))
        rows.append({"name": name, "images_s": statistics.median(rs), "low": min(rs),
                     "high": max(rs), "step_s": statistics.median(t / steps[name]
                                                                 for t in times[name]),
                     "ratio": ratio})
    return rows


def markdown_table(rows: list[dict], reference: str | None) -> str:
    """The rows of :func:`summarize` as a Markdown table."""
    ref = reference or "-"
    lines = [f"| config | step s (median) | images/s (median) | images/s min-max | x {ref} |",
             "|---|---|---|---|---|"]
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(f"| {r['name']} | {r['step_s']:.3f} | {r['images_s']:.2f} | "
                     f"{r['low']:.2f}-{r['high']:.2f} | {ratio} |")
    return "\n".join(lines)


# --- our side ---------------------------------------------------------------------------------
def _set_threads(threads: int) -> None:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def build_ours(args, xla: bool, strategy=None):
    """Our model, compiled with FaceRecognizer's defaults; returns (model, dataset)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_facemargin import ArcMarginLayer
    from keras_facemargin.backbones import iresnet, mobilefacenet
    from keras_facemargin.models import FaceRecognizer

    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    shape = (args.size, args.size, 3)
    x = rng.normal(size=(4 * args.batch, *shape)).astype("float32")
    y = rng.integers(0, args.classes, 4 * args.batch).astype("int32")
    with strategy.scope():
        if args.backbone == "mbf":
            backbone = mobilefacenet(input_shape=shape, scale=args.scale, blocks=tuple(args.blocks))
        else:
            backbone = iresnet(int(args.backbone[1:]), input_shape=shape)
        # labels reach the head in the train step: the margin is applied once
        model = FaceRecognizer(backbone, ArcMarginLayer(args.classes))
        model.compile(jit_compile=xla)  # SGD(0.1, momentum 0.9, weight decay 5e-4)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch, drop_remainder=True)
    return model, data


def tf_worker(args) -> int:
    """Our side of the protocol (``--worker``): fit N steps per command, timed by a callback."""
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _set_threads(args.threads)
    import keras
    import numpy as np

    model, data = build_ours(args, args.xla)
    data = data.repeat()

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.end = time.perf_counter()

    def send(obj):
        reply.write(json.dumps(obj) + "\n")
        reply.flush()

    trainable = sum(int(np.prod(w.shape)) for w in model.backbone.trainable_weights)
    send({"ready": True, "params": trainable,
          "tensorflow": __import__("tensorflow").__version__})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("quit"):
            break
        timer = Timer()
        history = model.fit(data, epochs=1, steps_per_epoch=int(cmd["steps"]), verbose=0,
                            callbacks=[timer])
        send({"seconds": timer.end - timer.start, "loss": float(history.history["loss"][-1])})
    return 0


def _shape_args(args) -> list[str]:
    return ["--batch", str(args.batch), "--classes", str(args.classes), "--size", str(args.size),
            "--backbone", args.backbone, "--scale", str(args.scale), "--threads",
            str(args.threads), "--blocks", *map(str, args.blocks)]


def start_workers(args, log) -> list[Worker]:
    workers = []
    try:
        for xla in args.xla_modes:
            cmd = [sys.executable, __file__, "--worker", *_shape_args(args), "--xla", xla]
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                [str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
            workers.append(Worker(f"ours, XLA {xla}", cmd, args.steps, env))
            log(f"started {workers[-1].name}: {workers[-1].info}")
        if args.torch_python:
            cmd = [args.torch_python, str(HERE / "_torch_worker.py"), "--insightface-src",
                   args.insightface_src, *_shape_args(args)]
            # OpenMP threads spin while they wait by default: on cores shared with other jobs
            # that made torch's step 3-5x slower here (PASSIVE: they sleep, as TF's do)
            env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
            workers.append(Worker(TORCH_NAME, cmd, args.torch_steps or args.steps, env))
            log(f"started {TORCH_NAME}: {workers[-1].info}")
            if args.torch_channels_last:
                workers.append(Worker(TORCH_NAME + ", channels_last", cmd + ["--channels-last"],
                                      args.torch_steps or args.steps, env))
                log(f"started {workers[-1].name}: {workers[-1].info}")
    except BaseException:
        for w in workers:
            w.close()
        raise
    return workers


# --- profile of our step ----------------------------------------------------------------------
def profile_ours(args, repeats: int = 3) -> str:
    """Median seconds of our forward, forward+backward and optimizer update, XLA off and on."""
    _set_threads(args.threads)
    lines = ["| XLA | forward (backbone + head + loss) s | forward + backward s | "
             "optimizer update s | full train step s |", "|---|---|---|---|---|"]
    for xla in args.xla_modes:
        cols = _profile_one(args, xla == "on", repeats)
        lines.append(f"| {xla} | " + " | ".join(f"{c:.3f}" for c in cols) + " |")
    return "\n".join(lines)


def _profile_one(args, jit: bool, repeats: int) -> list[float]:
    import tensorflow as tf

    model, data = build_ours(args, jit)
    x, y = next(iter(data))
    weights = model.trainable_weights
    model.optimizer.build(weights)

    def forward(x, y):
        emb = model.backbone(x, training=True)
        out = model.head.compute_logits(emb, y, training=True)
        return model._head_loss(x, out, None, training=True)

    def backward(x, y):
        with tf.GradientTape() as tape:
            loss = forward(x, y)
        return tape.gradient(loss, weights)

    f_fwd = tf.function(forward, jit_compile=jit)
    f_bwd = tf.function(backward, jit_compile=jit)
    grads = [tf.zeros_like(w) for w in weights]
    f_opt = tf.function(lambda g: model.optimizer.apply(g, weights), jit_compile=jit)
    model.make_train_function()
    f_step = model.train_function
    it = iter(data.repeat())
    cols = []
    for call in (lambda: f_fwd(x, y), lambda: f_bwd(x, y), lambda: f_opt(grads),
                 lambda: f_step(it)):
        call()  # trace / compile
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            tf.nest.map_structure(lambda v: v.numpy() if hasattr(v, "numpy") else v, call())
            ts.append(time.perf_counter() - t)
        cols.append(statistics.median(ts))
    return cols


def grouped_conv_check(args, repeats: int = 1) -> str:
    """MobileFaceNet's one grouped (not depthwise) convolution, three ways, forward + backward.

    At scale 2 the second block is Conv3x3(128 -> 128, groups=64) at 56x56 (2 channels a group;
    at scale 1 it is depthwise and runs as DepthwiseConv2D). ``keras.layers.Conv2D(groups=64)``
    is what the backbone runs: Keras' TensorFlow backend compiles every grouped convolution with
    XLA ("grouped convolutions are broken on CPU without XLA", keras/src/backend/tensorflow/
    nn.py). Against it: TensorFlow's own ``tf.nn.conv2d`` with a (3, 3, 2, 128) kernel, and the
    same convolution as a depthwise one (channel multiplier out/groups) summed over each
    group's inputs. Outputs and gradients are compared with the Keras layer's.
    """
    _set_threads(args.threads)
    import keras
    import numpy as np
    import tensorflow as tf

    c, groups, size = 64 * args.scale, 64, args.size // 2 + 2
    k = m = c // groups
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(args.batch, size, size, c)).astype("float32"))
    layer = keras.layers.Conv2D(c, 3, groups=groups, use_bias=False)
    layer.build(x.shape)
    kernel = layer.kernel

    def grouped(x):
        return tf.nn.conv2d(x, kernel, 1, "VALID")

    def as_depthwise(x):
        dw = tf.reshape(tf.transpose(tf.reshape(kernel, (3, 3, k, groups, m)), (0, 1, 3, 2, 4)),
                        (3, 3, groups * k, m))
        y = tf.nn.depthwise_conv2d(x, dw, [1, 1, 1, 1], "VALID")
        shape = tf.shape(y)
        y = tf.reshape(y, tf.concat([shape[:3], [groups, k, m]], 0))
        return tf.reshape(tf.reduce_sum(y, axis=4), tf.concat([shape[:3], [groups * m]], 0))

    def fwd_bwd(fn):
        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = fn(x)
                loss = tf.reduce_sum(y * y)
            return [y, *tape.gradient(loss, [x, kernel])]
        return step

    lines = [f"Conv3x3({c} -> {c}, groups={groups}) on {args.batch}x{size}x{size}x{c}, forward + "
             "backward (gradients for the input and the kernel), XLA off otherwise:\n",
             "| implementation | seconds | max abs. difference to the Keras layer (output, "
             "input gradient, kernel gradient, relative) |", "|---|---|---|"]
    want = None
    for name, fn in (("keras.layers.Conv2D(groups=64): what the backbone runs", layer),
                     ("tf.nn.conv2d (TensorFlow's grouped kernel)", grouped),
                     ("depthwise x multiplier + sum over the group", as_depthwise)):
        step = fwd_bwd(fn)
        got = [v.numpy() for v in step(x)]
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            [v.numpy() for v in step(x)]
            ts.append(time.perf_counter() - t)
        want = got if want is None else want
        diff = ", ".join(f"{np.abs(g - w).max() / np.abs(w).max():.1e}"
                         for g, w in zip(got, want, strict=True))
        lines.append(f"| {name} | {statistics.median(ts):.3f} | {diff} |")
    return "\n".join(lines)


# --- the old multi-worker row (fresh processes) -----------------------------------------------
def run_multiworker_child(args) -> dict:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from keras_facemargin.cli.train import ThroughputCallback
    from keras_facemargin.training import multiworker

    strategy = multiworker.multiworker_strategy(120.0)
    model, data = build_ours(args, False, strategy)
    throughput = ThroughputCallback(args.batch)
    model.fit(data.repeat(), steps_per_epoch=args.steps * args.rounds + 1, epochs=1, verbose=0,
              callbacks=[throughput])
    return {"images_s": throughput.last, "step_s": args.batch / throughput.last}


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def multiworker_row(args) -> dict:
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": i}}))
        procs.append(subprocess.Popen([sys.executable, __file__, "--child",
                                       *_shape_args(args), "--steps", str(args.steps),
                                       "--rounds", str(args.rounds)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=env))
    results = []
    for p in procs:
        out, err = p.communicate(timeout=3600)
        if p.returncode:
            raise RuntimeError(f"multi-worker child failed:\n{err[-3000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results[0]


# --- command line -----------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10000)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--backbone", default="mbf", choices=["mbf", "r18", "r34", "r50", "r100"],
                        help="mbf: MobileFaceNet (insightface's get_mbf), rN: IResNet-N")
    parser.add_argument("--scale", type=int, default=2, choices=[1, 2],
                        help="MobileFaceNet width (2: insightface's mbf, 1: the paper's)")
    parser.add_argument("--blocks", type=int, nargs=4, default=[1, 4, 6, 2],
                        help="MobileFaceNet residual blocks per stage")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="our steps per round")
    parser.add_argument("--torch-steps", type=int, default=None,
                        help="insightface's steps per round. Defaults to --steps")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--xla", dest="xla_modes", nargs="+", default=["off", "on"],
                        choices=["off", "on"])
    parser.add_argument("--torch-python", default=None)
    parser.add_argument("--insightface-src", default=None)
    parser.add_argument("--torch-channels-last", action="store_true",
                        help="also insightface with torch.channels_last (not in its recipe)")
    parser.add_argument("--workers", action="store_true",
                        help="also the 2-worker MultiWorkerMirroredStrategy row")
    parser.add_argument("--profile", action="store_true",
                        help="time our forward, backward and update apart (XLA off and on)")
    parser.add_argument("--grouped-conv", action="store_true",
                        help="time MobileFaceNet's grouped convolution against a depthwise form")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.xla = "on" in args.xla_modes if args.worker else False
    for name in ("batch", "classes", "size", "threads", "rounds", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1. Received: {name}={getattr(args, name)}")
    if args.torch_python:
        src = args.insightface_src
        if not src or not (pathlib.Path(src) / "losses.py").is_file():
            parser.error("--torch-python needs --insightface-src, insightface's "
                         "recognition/arcface_torch folder (with losses.py). "
                         f"Received: insightface_src={src!r}")
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        return tf_worker(args)
    if args.child:
        print(json.dumps(run_multiworker_child(args)))
        return 0
    if args.grouped_conv or args.profile:
        print(grouped_conv_check(args) if args.grouped_conv else
              "Our step in pieces (median of 3, one batch):\n\n" + profile_ours(args))
        print("\ncommand: python benchmarks/train_throughput.py " + " ".join(argv))
        return 0

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    if not args.torch_python:
        log(TORCH_HINT)
    workers = start_workers(args, log)
    try:
        times = alternate(workers, args.rounds, args.warmup, log)
        infos = {w.name: w.info for w in workers}
        phases = {w.name: {k: statistics.median(r[k] for r in w.replies[-args.rounds:])
                           for k in ("forward_s", "backward_s", "update_s")}
                  for w in workers if "forward_s" in w.last}
    finally:
        for w in workers:
            w.close()
    steps = {w.name: w.steps for w in workers}
    reference = TORCH_NAME if args.torch_python else None
    rows = summarize(times, steps, args.batch, reference)
    model = (f"MobileFaceNet (scale {args.scale}, blocks {tuple(args.blocks)})"
             if args.backbone == "mbf" else f"IResNet-{args.backbone[1:]}")
    print(f"\n{model} + ArcFace (s = 64, m = 0.5), C = {args.classes}, batch {args.batch}, "
          f"{args.size}x{args.size}, CPU, {args.threads} threads, {args.rounds} alternating "
          f"rounds after {args.warmup} warm-up step(s)\n")
    print(markdown_table(rows, reference))
    print()
    for name, info in infos.items():
        print(f"* {name}: " + ", ".join(f"{k} = {v}" for k, v in info.items() if k != "ready"))
    for name, ph in phases.items():
        print(f"* {name}, one step in phases (median over the rounds): forward with the loss "
              f"{ph['forward_s']:.3f} s, backward {ph['backward_s']:.3f} s, clip + SGD step "
              f"{ph['update_s']:.3f} s")
    if not args.torch_python:
        print(f"\n{TORCH_HINT}")
    if args.workers:
        r = multiworker_row(args)
        print("\n| config | XLA | step s | images/s |\n|---|---|---|---|")
        print(f"| 2 workers (MultiWorkerMirroredStrategy, localhost) | off | {r['step_s']:.3f} | "
              f"{r['images_s']:.1f} |")
    print("\ncommand: python benchmarks/train_throughput.py " + " ".join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
