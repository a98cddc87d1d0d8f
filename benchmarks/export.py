# ruff: noqa: B023  (every closure below runs within its own loop iteration)
"""Exported-model size and latency: Keras vs LiteRT (XNNPACK) vs onnxruntime.

For each backbone (MobileFaceNet, IResNet-50; 112x112x3 -> 512, untrained weights with
insightface's initialization), exports float32 / float16 / dynamic / int8 TFLite and float32 /
int8 ONNX (verification off: an untrained network says nothing about quantization accuracy; the
tests check that on a trained model), then times per-image latency at batch 1 and 32 (median of
``--repeats`` after warm-up) with the threads given, and prints a Markdown table.

    python benchmarks/export.py                         # both backbones
    python benchmarks/export.py --backbones mobilefacenet --repeats 20

Side by side with insightface's own route (``--torch-python`` and ``--insightface-src``): the
same architectures built from insightface's PyTorch definition
(``recognition/arcface_torch/backbones``: ``mbf``, ``r18``, ``r50``) and exported with
``torch.onnx.export`` as its ``torch2onnx.py`` does (``benchmarks/insightface_torch_export.py``,
run in that interpreter), and this package's ``to_onnx`` file of the same architecture
(insightface convention, NCHW), both timed in this process's onnxruntime with the same session
options, alternating theirs / ours, at the batch sizes given; prints a second table with the
median ms per image and ours / theirs, and the parameter counts of both:

    python benchmarks/export.py --anchor-only --threads 1 --repeats 30 \
        --torch-python /work/venvs/torch/bin/python --insightface-src /path/to/insightface
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


#: anchor name -> (insightface ``get_model`` name, this package's builder and its kwargs)
ANCHORS = {
    "mbf": ("mbf", "mobilefacenet", {"scale": 2}),
    "r18": ("r18", "iresnet18", {}),
    "r50": ("r50", "iresnet50", {}),
}
#: range of the trained-like BN scales (deep residual nets need small ones to stay finite)
GAMMA = {"mbf": (0.5, 1.5), "r18": (0.1, 0.5), "r50": (0.1, 0.5)}
TORCH_HELP = (
    "insightface's side needs PyTorch (CPU) and onnx in a Python of its own, and a checkout of "
    "deepinsight/insightface:\n"
    "    python -m venv /work/venvs/torch\n"
    "    /work/venvs/torch/bin/pip install torch --index-url "
    "https://download.pytorch.org/whl/cpu\n"
    "    /work/venvs/torch/bin/pip install onnx onnxruntime\n"
    "    git clone https://github.com/deepinsight/insightface\n"
    "then pass --torch-python /work/venvs/torch/bin/python --insightface-src insightface")


def trained_like(model, gamma=(0.5, 1.5), seed: int = 1):
    """Distinct BN / PReLU values as training leaves them (BN scale uniform in ``gamma``, shift
    and mean normal(0, 0.1), variance uniform in [0.5, 1.5], PReLU slopes uniform in [0.1,
    0.4]; insightface's side gets the same). At initialization they are constants a converter
    may fold or share (a BN shift of 0 disappears), which a trained model's file cannot."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.PReLU)):
            layer.set_weights([rng.uniform(*gamma, w.shape) if "gamma" in w.path
                               else rng.uniform(0.5, 1.5, w.shape) if "variance" in w.path
                               else rng.uniform(0.1, 0.4, w.shape) if "alpha" in w.path
                               else rng.normal(0.0, 0.1, w.shape) for w in layer.weights])
    return model


def torch_layout_weights(model) -> list:
    """This package's backbone weights in insightface's module order and torch layouts, for
    ``insightface_torch_export.py --weights``: the same network on both sides.

    Conv kernels (kh, kw, in, out) -> (out, in, kh, kw), depthwise (kh, kw, C, 1) -> (C, 1, kh,
    kw); BN gamma, beta, mean, variance (a BN without scale gets ones, as insightface's frozen
    one); PReLU (1, 1, C) -> (C,); Dense (F, out) -> (out, F) with F reordered from the NHWC
    flatten to torch's NCHW one; IResNet's shortcut conv + BN at the end of their block,
    where insightface registers its ``downsample``."""
    import keras

    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
             keras.layers.BatchNormalization, keras.layers.PReLU, keras.layers.Dense)
    layers, pending = [], []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Add) and pending:  # the block's end
            layers += pending
            pending = []
        if not isinstance(layer, kinds):
            continue
        if "_down_conv" in layer.name or "_down_bn" in layer.name:  # IResNet shortcut
            pending.append(layer)
            continue
        layers.append(layer)
    if pending:
        raise ValueError(f"shortcut layers without their block: {[p.name for p in pending]}")
    arrays = []
    for layer in layers:
        w = [keras.ops.convert_to_numpy(v) for v in layer.weights]
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw, c, m = w[0].shape
            arrays.append(w[0].transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw))
        elif isinstance(layer, keras.layers.Conv2D):
            arrays.append(w[0].transpose(3, 2, 0, 1))
        elif isinstance(layer, keras.layers.BatchNormalization):
            arrays += ([] if layer.scale else [np.ones_like(w[0])]) + w
        elif isinstance(layer, keras.layers.PReLU):
            arrays.append(w[0].reshape(-1))
        else:  # the Dense after the one Flatten of (h, w, c)
            (flatten,) = [f for f in model.layers if isinstance(f, keras.layers.Flatten)]
            h, wd, c = flatten.input.shape[1:]
            kernel = w[0].reshape(h, wd, c, -1).transpose(3, 2, 0, 1).reshape(w[0].shape[1], -1)
            arrays += [kernel] + w[1:]
    return [a.astype(np.float32) for a in arrays]


def alternate(fns: dict, repeats: int, warmup: int = 2, clock=time.perf_counter) -> dict:
    """Time each callable of ``fns`` ``repeats`` times, interleaved: one call of each per round,
    the order reversed every other round (A B, B A, A B, ...), so a change of machine load hits
    every callable alike. ``warmup`` untimed rounds first.

    Args:
        fns: name -> callable without arguments.
        repeats: timed rounds, >= 1.
        warmup: untimed rounds before them. Defaults to `2`.
        clock: a seconds clock. Defaults to `time.perf_counter`.

    Returns:
        name -> list of ``repeats`` durations in ms, in call order.

    Example:

    >>> times = alternate({"a": lambda: None, "b": lambda: None}, repeats=3)
    >>> sorted(times), len(times["a"])
    (['a', 'b'], 3)
    """
    if repeats < 1:
        raise ValueError(f"`repeats` must be >= 1. Received: repeats={repeats}")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            start = clock()
            fns[name]()
            times[name].append((clock() - start) * 1e3)
    return times


def side_by_side(theirs: list, ours: list, batch: int) -> dict:
    """Per-image medians of paired timings and the ratio ours / theirs.

    Args:
        theirs: ms per call of insightface's file, round by round.
        ours: ms per call of this package's file, the same rounds.
        batch: images per call.

    Returns:
        ``{"theirs_ms", "ours_ms"}`` (median ms per image), ``"ratio"`` (ratio of the
        medians) and ``"paired_ratio"`` (median over rounds of ours / theirs in that round).
    """
    if len(theirs) != len(ours) or not theirs:
        raise ValueError(f"`theirs` and `ours` must be the same non-empty rounds. Received: "
                         f"{len(theirs)} and {len(ours)} timings")
    t, o = statistics.median(theirs) / batch, statistics.median(ours) / batch
    paired = statistics.median(b / a for a, b in zip(theirs, ours, strict=True))
    return {"theirs_ms": t, "ours_ms": o, "ratio": o / t, "paired_ratio": paired}


def anchor_table(rows: list) -> list:
    """Markdown lines of the side-by-side table; a row without ``theirs_ms`` shows ``-``."""
    lines = ["| backbone | batch | insightface file | ms/image insightface (torch.onnx) | "
             "ms/image ours (to_onnx) | ours / theirs | paired ours / theirs |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        def fmt(key, spec):
            return "-" if r.get(key) is None else format(r[key], spec) + (
                "x" if "ratio" in key else "")
        lines.append(f"| {r['backbone']} | {r['batch']} | {r.get('their_file') or '-'} | "
                     f"{fmt('theirs_ms', '.2f')} | {r['ours_ms']:.2f} | {fmt('ratio', '.2f')} | "
                     f"{fmt('paired_ratio', '.2f')} |")
    return lines


def op_counts(path: str) -> dict:
    """ONNX op type -> number of nodes in the file at ``path`` (before onnxruntime's fusions)."""
    import onnx

    counts: dict = {}
    for node in onnx.load(path, load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def onnx_weights(path: str) -> int:
    """Numbers stored in the file's initializers and Constant nodes (weights after folding)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(path).graph
    total = sum(numpy_helper.to_array(t).size for t in graph.initializer)
    for node in graph.node:
        if node.op_type == "Constant":
            total += sum(numpy_helper.to_array(a.t).size for a in node.attribute if a.name == "value")
    return total


def ort_session(path: str, threads: int, profile_prefix: str | None = None):
    """The same onnxruntime session options for both files: CPU, ``threads`` intra-op threads,
    one inter-op thread, sequential execution, every graph optimization."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # a fixed-batch output shape warns at batch 32
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def profile_ops(path: str, x: np.ndarray, threads: int, runs: int, prefix: str) -> dict:
    """op type -> (nodes run, total ms per call) from onnxruntime's profiler over ``runs`` calls
    (after one untimed call), from the optimized graph onnxruntime actually runs."""
    import json

    session = ort_session(path, threads, profile_prefix=prefix)
    feed = {session.get_inputs()[0].name: x}
    session.run(None, feed)
    for _ in range(runs):
        session.run(None, feed)
    trace = session.end_profiling()
    with open(trace) as f:
        events = json.load(f)
    os.remove(trace)
    per_op: dict = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            count, total = per_op.get(op, (0, 0.0))
            per_op[op] = (count + 1, total + event["dur"] / 1e3)
    return {op: (count / (runs + 1), total / (runs + 1)) for op, (count, total) in per_op.items()}


def torch_export(torch_python: str, insightface_src: str, network: str, output: str,
                 dynamic_batch: bool = False, gamma=None, weights: str | None = None) -> dict:
    """insightface's ONNX file of ``network`` (``benchmarks/insightface_torch_export.py`` in
    ``torch_python``); its JSON report."""
    import json
    import subprocess

    script = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          "insightface_torch_export.py")
    cmd = [torch_python, script, "--insightface-src", insightface_src, "--network", network,
           "--output", output] + (["--dynamic-batch"] if dynamic_batch else []) + (
               ["--trained-like", *map(str, gamma)] if gamma else []) + (
               ["--weights", weights] if weights else [])
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n"
                           f"{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def runs_at(path: str, batch: int, threads: int) -> bool:
    """Whether onnxruntime runs the file at ``batch`` (a fixed-batch trace does not)."""
    session = ort_session(path, threads)
    x = np.zeros((batch, 3, 112, 112), np.float32)
    try:
        session.run(None, {session.get_inputs()[0].name: x})
    except Exception:
        return False
    return True


def anchor(args, tmp: str) -> int:
    """The side-by-side table: insightface's torch.onnx file vs this package's to_onnx file."""
    import json

    import keras

    import keras_facemargin.backbones as bb
    from keras_facemargin.export.onnx import to_onnx

    have_torch = bool(args.torch_python and args.insightface_src)
    if not have_torch:
        print("insightface's side is skipped: --torch-python and --insightface-src are needed."
              "\n" + TORCH_HELP, file=sys.stderr)
    rng = np.random.default_rng(0)
    rows, params, ops, profiles, meta = [], [], {}, {}, {}
    load = [os.getloadavg()]
    for name in args.anchor_backbones:
        network, builder, kwargs = ANCHORS[name]
        keras.utils.set_random_seed(0)
        model = trained_like(getattr(bb, builder)(**kwargs), GAMMA[name])
        weights = os.path.join(tmp, f"weights_{name}.npz")
        np.savez(weights, **{f"w{i:04d}": a
                             for i, a in enumerate(torch_layout_weights(model))})
        ours = os.path.join(tmp, f"ours_{name}.onnx")
        if not (args.reuse and os.path.exists(ours)):
            print(f"{name}: to_onnx ...", file=sys.stderr, flush=True)
            to_onnx(model, ours, verify=False, embedding_layer="embedding")
        ours_params = {"trainable": sum(int(np.prod(w.shape)) for w in model.trainable_weights),
                       "non_trainable": sum(int(np.prod(w.shape))
                                            for w in model.non_trainable_weights)}
        theirs = {}
        if have_torch:
            print(f"{name}: insightface get_model({network!r}) + torch.onnx.export",
                  file=sys.stderr, flush=True)
            try:
                path = os.path.join(tmp, f"theirs_{name}.onnx")
                if args.reuse and os.path.exists(path + ".json"):
                    with open(path + ".json") as f:
                        meta[name] = json.load(f)
                else:
                    meta[name] = torch_export(args.torch_python, args.insightface_src, network,
                                              path, weights=weights)
                    with open(path + ".json", "w") as f:
                        json.dump(meta[name], f)
                theirs[1] = (path, "torch2onnx.py")
                for batch in args.batch_sizes:
                    if batch == 1:
                        continue
                    if runs_at(path, batch, args.threads):
                        theirs[batch] = (path, "torch2onnx.py")
                    else:
                        dyn = os.path.join(tmp, f"theirs_{name}_dynamic.onnx")
                        if not (args.reuse and os.path.exists(dyn)):
                            torch_export(args.torch_python, args.insightface_src, network, dyn,
                                         dynamic_batch=True, weights=weights)
                        theirs[batch] = (dyn, "torch2onnx.py + dynamic_axes")
            except (RuntimeError, OSError, ValueError) as err:
                print(f"insightface's side failed for {name}: {err}\n{TORCH_HELP}",
                      file=sys.stderr)
                theirs = {}
        if 1 in theirs:  # same weights: the same embeddings (ours maps 127.5 / 128 inside)
            x = rng.uniform(-1, 1, (2, 3, 112, 112)).astype(np.float32)
            a, b = (ort_session(p, args.threads) for p in (theirs[1][0], ours))
            ya = np.concatenate([a.run(None, {"data": x[i:i + 1] * 127.5 / 128})[0]
                                 for i in range(2)])
            yb = b.run(None, {b.get_inputs()[0].name: x})[0]
            ya, yb = (y / np.linalg.norm(y, axis=1, keepdims=True) for y in (ya, yb))
            ours_params["cosine"] = float(np.min(np.sum(ya * yb, axis=1)))
        params.append((name, network, builder, kwargs, ours_params, meta.get(name),
                       onnx_weights(ours), onnx_weights(theirs[1][0]) if 1 in theirs else None))
        ops[name] = (op_counts(ours), op_counts(theirs[1][0]) if 1 in theirs else None)
        for batch in args.batch_sizes:
            x = rng.standard_normal((batch, 3, 112, 112)).astype(np.float32)
            sessions = {"ours": ort_session(ours, args.threads)}
            if batch in theirs:
                sessions["theirs"] = ort_session(theirs[batch][0], args.threads)
            fns = {key: (lambda s=s: s.run(None, {s.get_inputs()[0].name: x}))
                   for key, s in sessions.items()}
            times = alternate(fns, args.repeats)
            if "theirs" in times:
                row = side_by_side(times["theirs"], times["ours"], batch)
                row["their_file"] = theirs[batch][1]
            else:
                row = {"ours_ms": statistics.median(times["ours"]) / batch}
            row.update(backbone=name, batch=batch)
            rows.append(row)
            print(f"{name} @{batch}: {row}", file=sys.stderr, flush=True)
            if args.profile:
                profiles[(name, batch)] = {
                    key: profile_ops(path, x, args.threads, args.profile,
                                     os.path.join(tmp, f"{key}_{name}_{batch}"))
                    for key, path in [("ours", ours)] + ([("theirs", theirs[batch][0])]
                                                         if batch in theirs else [])}
            del sessions, fns
        del model
        keras.backend.clear_session()
    load.append(os.getloadavg())
    import onnxruntime as ort

    versions = next(iter(meta.values()), None) if meta else None
    if not versions:
        print("\ninsightface's side was not run (see the message above): our rows only.")
    print(f"\nSide by side with insightface's route. CPU: {os.cpu_count()} cores, onnxruntime "
          f"{ort.__version__} (CPUExecutionProvider, {args.threads} intra-op thread(s), 1 "
          f"inter-op, sequential, ORT_ENABLE_ALL) for both files in this process; median of "
          f"{args.repeats} alternating rounds (theirs / ours, order reversed every round) after "
          f"2 untimed; load average {load[0][0]:.2f} before, {load[1][0]:.2f} after; the same "
          f"untrained weights on both sides (this package's initialization with trained-like BN "
          f"and PReLU values, so no converter folds a trivial BN away, copied into "
          f"insightface's module: the two files give the same embeddings, last table); "
          f"112x112 -> 512, input [N, 3, 112, 112] float32 for both.")
    if versions:
        print(f"insightface arcface_torch {versions.get('insightface_commit') or '(commit ?)'}, "
              f"torch {versions['torch']} (torch.onnx.export, TorchScript exporter, opset "
              f"{versions['opset']}); ours: to_onnx (tf2onnx, opset 17).")
    print()
    print("\n".join(anchor_table(rows)))
    print("\n| backbone | insightface | ours | trainable params insightface | trainable params "
          "ours | BN running stats insightface / ours | numbers in the ONNX file insightface / "
          "ours | same weights: min cosine of the two files |")
    print("|---|---|---|---|---|---|---|---|")
    for name, network, builder, kwargs, mine, theirs_meta, ours_w, theirs_w in params:
        args_txt = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        t_train = f"{theirs_meta['trainable_params']:,}" if theirs_meta else "-"
        t_stats = f"{theirs_meta['bn_running_stats']:,}" if theirs_meta else "-"
        t_w = f"{theirs_w:,}" if theirs_w is not None else "-"
        cosine = f"{mine['cosine']:.7f}" if "cosine" in mine else "-"
        print(f"| {name} | get_model({network!r}) | {builder}({args_txt}) | {t_train} | "
              f"{mine['trainable']:,} | {t_stats} / {mine['non_trainable']:,} | "
              f"{t_w} / {ours_w:,} | {cosine} |")
    print("\nONNX op types in the files (before onnxruntime's fusions), insightface / ours:\n")
    for name, (mine, theirs_ops) in ops.items():
        keys = sorted(set(mine) | set(theirs_ops or {}))
        print(f"- {name}: " + ", ".join(
            f"{k} {(theirs_ops or {}).get(k, 0) if theirs_ops is not None else '-'}/"
            f"{mine.get(k, 0)}" for k in keys))
    for (name, batch), per_key in profiles.items():
        print(f"\nonnxruntime profile, {name} @ batch {batch} (ms per call by op type of the "
              f"optimized graph; nodes per call):\n")
        print("| op | insightface ms | ours ms | insightface nodes | ours nodes |")
        print("|---|---|---|---|---|")
        mine, theirs_p = per_key["ours"], per_key.get("theirs", {})
        for op in sorted(set(mine) | set(theirs_p),
                         key=lambda o: -max(mine.get(o, (0, 0))[1], theirs_p.get(o, (0, 0))[1])):
            tn, tm = theirs_p.get(op, (0, 0.0))
            on, om = mine.get(op, (0, 0.0))
            print(f"| {op} | {tm:.2f} | {om:.2f} | {tn:.0f} | {on:.0f} |")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["mobilefacenet", "iresnet50"],
                        choices=["mobilefacenet", "iresnet18", "iresnet50"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--torch-python", help="a Python with torch and onnx, for "
                        "insightface's route (benchmarks/insightface_torch_export.py)")
    parser.add_argument("--insightface-src", help="a checkout of deepinsight/insightface (or "
                        "its recognition/arcface_torch folder)")
    parser.add_argument("--anchor-backbones", nargs="+", default=["mbf", "r50"],
                        choices=sorted(ANCHORS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--anchor-only", action="store_true",
                        help="only the side-by-side table with insightface's route")
    parser.add_argument("--no-anchor", action="store_true",
                        help="only the size / latency table")
    parser.add_argument("--profile", type=int, default=0, metavar="RUNS",
                        help="also profile RUNS calls of each file with onnxruntime's profiler")
    parser.add_argument("--save-dir", help="write the files there (default: a temp dir)")
    parser.add_argument("--reuse", action="store_true",
                        help="time the side-by-side files already in --save-dir")
    args = parser.parse_args(argv)
    if args.anchor_only and args.no_anchor:
        parser.error("--anchor-only and --no-anchor exclude each other")

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras_facemargin.backbones as bb
    from keras_facemargin.export import strip_head  # noqa: F401 (registers layers)
    from keras_facemargin.export.onnx import to_onnx
    from keras_facemargin.export.tflite import to_tflite
    from keras_facemargin.runtime import Embedder

    tmp = args.save_dir or tempfile.mkdtemp()
    os.makedirs(tmp, exist_ok=True)
    if args.anchor_only:
        anchor(args, tmp)
        print("\ncommand: python benchmarks/export.py " + " ".join(argv or sys.argv[1:]))
        return 0
    rng = np.random.default_rng(0)
    calib = rng.integers(0, 256, (16, 112, 112, 3)).astype(np.uint8)
    x1 = rng.integers(0, 256, (1, 112, 112, 3)).astype(np.uint8)
    x32 = rng.integers(0, 256, (32, 112, 112, 3)).astype(np.uint8)
    rows = []
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
    if not args.no_anchor:
        anchor(args, tmp)
    print("\ncommand: python benchmarks/export.py " + " ".join(argv or sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
