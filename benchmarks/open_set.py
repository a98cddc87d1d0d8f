"""Open-set benchmark on CJK glyph identities: what the margins buy on unseen identities.

    python benchmarks/open_set.py --quick        # Softmax / CosFace / ArcFace, 500 identities
    python benchmarks/open_set.py --train-ids 2000 --train-images 10 --epochs 6 --seeds 0 1

Data: :func:`keras_facemargin.data.glyphs.write_glyph_benchmark` (CJK characters as identities,
every installed CJK font design as looks, seeded augmentation; ``make fonts`` first), written to
``--data`` as ``train.rec``/``.idx``, ``test.rec``/``.idx`` and ``pairs.bin`` (6000 LFW-style
pairs on the unseen identities) and read back through the library's readers
(``RecordIOReader``, ``load_bin`` + ``decode_pairs``). The same files train with
``facemargin train`` (``--rec train.rec``) and evaluate with ``facemargin eval --bin pairs.bin``.

Each head trains the same small CNN (grey glyph as RGB, ``--size`` pixels, embedding ``--dim``)
from the same seed on P x K batches (``--ids-per-batch`` identities x ``--images-per-id``
images, so that the triplet rows see positives), insightface's SGD recipe (momentum 0.9,
weight decay 5e-4, lr 0.1 with a one-epoch warm-up and cosine decay; ``--optimizer adam``
under-trains the normalized heads in short runs), ``model.fit`` with the
public head API (``keras.Sequential([backbone, head])``, ``loss=head.loss``; the joint rows as
in the README). Then, on the unseen identities:

* verification on ``pairs.bin``: 10-fold accuracy (flip test), "TAR@FAR (one ROC)" and
  "VAL@FAR (10-fold, insightface)" at FAR 1e-3 (:func:`keras_facemargin.evaluation.evaluate_pairs`);
* 1:N identification: half the unseen identities enrolled with one image each, the other
  images of those identities as mated probes, every image of the other half as non-mated probes:
  rank-1 and TPIR at FPIR 1e-2 (:func:`keras_facemargin.evaluation.identification`);
* closed-set top-1 on 4000 training images and the final training loss (is the head trained?);
* angle statistics (ArcFace Table 3, degrees): W-EC, W-Inter, Intra1, Inter1 on the training
  identities, Intra2, Inter2 on the unseen ones (:func:`keras_facemargin.evaluation.angle_statistics`).

Prints Markdown tables (mean ± std over seeds) and the command line that made them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

HEADS = ("Softmax", "NormFace", "SphereFace", "CosFace", "ArcFace", "Combined",
         "SubCenter ArcFace", "Softmax + Center", "Triplet", "ArcFace + Intra",
         "ArcFace + Inter", "ArcFace + Triplet")
# Partial FC (issue 16, item 3): the same ArcFace through FaceRecognizer, all centres or a 10% sample
PARTIAL_FC = ("ArcFace r=1.0", "ArcFace r=0.1")
QUICK = dict(train_ids=500, test_ids=300, train_images=12, test_images=10, epochs=20, seeds=[0],
             heads=["Softmax", "CosFace", "ArcFace"])


@dataclass
class Built:
    """A compiled model and how to feed and read it."""

    model: object
    embed: Callable          # images -> embeddings
    targets: Callable        # labels -> fit targets
    head: object | None      # the margin head (for W-EC / W-Inter), or None


def small_cnn(size: int, dim: int):
    """Three conv stages (32, 64, 128 channels, BN, ReLU, max-pool), then Dense(dim) + BN."""
    import keras
    from keras import layers

    x = inputs = keras.Input((size, size, 3))
    for filters in (32, 64, 128):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(dim, use_bias=False)(x)
    x = layers.BatchNormalization(name="embedding_bn")(x)  # insightface's feature BN
    return keras.Model(inputs, x, name="backbone")


def build(name: str, num_classes: int, args) -> Built:
    """The model of one row of the table (hyper-parameters as in the papers, scale ``--scale``)."""
    import keras

    import keras_facemargin as kfm

    backbone = small_cnn(args.size, args.dim)
    s = args.scale
    heads = {
        "Softmax": lambda: kfm.SoftmaxLayer(num_classes),
        "NormFace": lambda: kfm.NormSoftmaxLayer(num_classes, scale=s),
        "SphereFace": lambda: kfm.SphereMarginLayer(num_classes, margin=4),
        "CosFace": lambda: kfm.CosMarginLayer(num_classes, margin=0.35, scale=s),
        "ArcFace": lambda: kfm.ArcMarginLayer(num_classes, margin=0.5, scale=s),
        "Combined": lambda: kfm.CombinedMarginLayer(num_classes, m1=1.0, m2=0.3, m3=0.2, scale=s),
        "SubCenter ArcFace": lambda: kfm.SubCenterArcMarginLayer(num_classes, margin=0.5, scale=s),
    }
    embed = backbone
    opt = make_optimizer(args)
    same = lambda y: y  # noqa: E731
    if name in heads:
        head = heads[name]()
        model = keras.Sequential([backbone, head])
        model.compile(optimizer=opt, loss=head.loss, jit_compile=False)
        return Built(model, embed, same, head)
    if name in PARTIAL_FC:  # the task model: labels reach the head explicitly
        rate = float(name.split("r=")[1])
        head = kfm.ArcMarginLayer(num_classes, margin=0.5, scale=s, sample_rate=rate,
                                  seed=args.data_seed)
        model = kfm.FaceRecognizer(backbone, head)
        model.compile(optimizer=opt, jit_compile=False)
        return Built(model, embed, same, head)
    if name in ("ArcFace + Intra", "ArcFace + Inter"):
        head = heads["ArcFace"]()
        extra = kfm.IntraLoss() if name.endswith("Intra") else kfm.InterLoss()
        model = keras.Sequential([backbone, head])
        model.compile(optimizer=opt, loss=kfm.JointLoss([head.loss, extra], weights=[1.0, 1.0]),
                      jit_compile=False)
        return Built(model, embed, same, head)
    if name == "Triplet":  # ArcFace paper's triplet row: angular margin 0.35, semi-hard
        model = keras.Sequential([backbone])
        model.compile(optimizer=opt, loss=kfm.TripletLoss(margin=0.35, distance="angular"),
                      jit_compile=False)
        return Built(model, embed, same, None)
    inputs = keras.Input((args.size, args.size, 3))
    emb = backbone(inputs)
    if name == "Softmax + Center":  # Wen et al.: L_S + lambda L_C, lambda 0.003, alpha 0.5
        head = kfm.SoftmaxLayer(num_classes, name="head")
        centers = kfm.CenterLossLayer(num_classes, alpha=0.5, name="centers")
        model = keras.Model(inputs, {"head": head(emb), "centers": centers(emb)})
        model.compile(optimizer=opt, loss={"head": head.loss, "centers": centers.loss},
                      loss_weights={"head": 1.0, "centers": 0.003}, jit_compile=False)
        return Built(model, embed, lambda y: {"head": y, "centers": y}, head)
    if name == "ArcFace + Triplet":
        head = kfm.ArcMarginLayer(num_classes, margin=0.5, scale=s, name="head")
        out = keras.layers.Identity(name="embedding")(emb)
        model = keras.Model(inputs, {"head": head(emb), "embedding": out})
        model.compile(optimizer=opt, loss={"head": head.loss, "embedding": kfm.TripletLoss(
            margin=0.35, distance="angular")}, loss_weights={"head": 1.0, "embedding": 1.0},
            jit_compile=False)
        return Built(model, embed, lambda y: {"head": y, "embedding": y}, head)
    raise ValueError(f"`--heads` must name rows of {HEADS}. Received: {name!r}")


def lr_schedule(args):
    """Cosine decay of ``--lr`` over the run after a linear warm-up of ``--warmup`` epochs."""
    import keras

    total = args.epochs * args.steps_per_epoch
    warm = int(args.warmup * args.steps_per_epoch)
    lr = keras.optimizers.schedules.CosineDecay(
        args.lr if warm == 0 else 0.0, max(1, total - warm),
        warmup_target=args.lr if warm else None, warmup_steps=warm)
    return lr


def make_optimizer(args):
    """``--optimizer``: Adam, or insightface's SGD (momentum 0.9), ``--weight-decay``."""
    import keras

    lr = lr_schedule(args)
    if args.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, weight_decay=args.weight_decay or None)
    return keras.optimizers.Adam(lr, weight_decay=args.weight_decay or None)


def pk_batches(labels: np.ndarray, p: int, k: int, steps: int, seed: int):
    """Index batches of ``p`` identities x ``k`` images (with replacement inside an identity)."""
    rng = np.random.default_rng(seed)
    by_id = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)]
    order = rng.permutation(len(by_id))
    pos = 0
    for _ in range(steps):
        if pos + p > len(order):
            order, pos = rng.permutation(len(by_id)), 0
        ids = order[pos:pos + p]
        pos += p
        yield np.concatenate([rng.choice(by_id[c], k, replace=len(by_id[c]) < k) for c in ids])


def read_rec(path: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """All images and labels of a ``.rec`` through the library's reader and decoder."""
    from keras_facemargin.data import RecordIOReader
    from keras_facemargin.data.pipeline import decode_image

    reader = RecordIOReader(path)
    images = np.stack([decode_image(reader.read_image(k)[1], (size, size))
                       for k in reader.image_keys])
    return images, np.asarray(reader.labels(), np.int64)


def standardize(images: np.ndarray) -> np.ndarray:
    """The library's one pixel normalization (``keras_facemargin.preprocessing``)."""
    from keras_facemargin.preprocessing import get_normalization

    return get_normalization().apply(images).astype(np.float32)


def embed_all(fn, images: np.ndarray, flip: bool = False, batch: int = 512) -> np.ndarray:
    out = []
    for i in range(0, len(images), batch):
        x = standardize(images[i:i + batch])
        if flip:
            x = x[:, :, ::-1]
        out.append(np.asarray(fn(x, training=False)))
    return np.concatenate(out)


def evaluate(built: Built, data: dict, num_classes: int) -> dict[str, float]:
    from keras_facemargin.evaluation import angle_statistics, evaluate_pairs, identification

    f = built.embed
    rep = evaluate_pairs(embed_all(f, data["pair_images"]), data["issame"],
                         embed_all(f, data["pair_images"], flip=True), fars=(1e-2, 1e-3))
    t_emb, t_lab = embed_all(f, data["test_images"]), data["test_labels"]
    ids = np.unique(t_lab)
    enrolled = np.isin(t_lab, ids[: len(ids) // 2])
    first = np.r_[True, t_lab[1:] != t_lab[:-1]]  # the first image of each identity
    gallery = enrolled & first
    probes = ~gallery
    ident = identification(t_emb[gallery], t_lab[gallery], t_emb[probes], t_lab[probes],
                           fpirs=(1e-2,))
    tr_idx = data["angle_subset"]
    kernel, k = None, 1
    if built.head is not None:
        kernel = np.asarray(built.head.centres())  # (D, C * K)
        k = int(getattr(built.head, "sub_centers", 1))
    closed = angle_statistics(embed_all(f, data["train_images"][tr_idx]),
                              data["train_labels"][tr_idx], kernel, sub_centers=k)
    open_ = angle_statistics(t_emb, t_lab)
    return {"acc": rep.accuracy, "acc_std": rep.accuracy_std, "auc": rep.auc,
            "tar": rep.tar[1e-3], "val": rep.val[1e-3].val if rep.val else float("nan"),
            "val_far": rep.val[1e-3].far if rep.val else float("nan"),
            "rank1": ident.rank1, "tpir": ident.tpir.get(1e-2, float("nan")),
            "w_ec": closed.w_ec, "w_inter": closed.w_inter, "intra1": closed.intra,
            "inter1": closed.inter, "intra2": open_.intra, "inter2": open_.inter}


def run_one(name: str, seed: int, data: dict, args, keep: list | None = None
            ) -> dict[str, float]:
    import keras

    keras.utils.set_random_seed(seed)
    num_classes = int(data["train_labels"].max()) + 1
    built = build(name, num_classes, args)
    x, y = data["train_images"], data["train_labels"]

    def batches():
        for idx in pk_batches(y, args.ids_per_batch, args.images_per_id,
                              args.epochs * args.steps_per_epoch, seed):
            yield standardize(x[idx]), built.targets(y[idx])

    start = time.perf_counter()
    hist = built.model.fit(batches(), steps_per_epoch=args.steps_per_epoch, epochs=args.epochs,
                           verbose=0, shuffle=False)
    train_s = time.perf_counter() - start
    out = evaluate(built, data, num_classes)
    out["train_s"] = train_s
    out["loss"] = float(hist.history["loss"][-1])
    out["top1"] = float("nan")
    if built.head is not None:  # closed-set top-1 on training images (is the head trained?)
        sub = data["angle_subset"]
        logits = built.model.predict(standardize(x[sub]), batch_size=512, verbose=0)
        logits = logits["head"] if isinstance(logits, dict) else logits
        out["top1"] = float(np.mean(np.argmax(np.asarray(logits), -1) == y[sub]))
    if keep is not None:
        keep.append(built)
    return out


EXPORTS = (  # (row, format, keyword arguments of the exporter)
    ("TFLite float32", "tflite", {}),
    ("TFLite float16", "tflite", {"quantization": "float16"}),
    ("TFLite dynamic-range int8", "tflite", {"quantization": "dynamic"}),
    ("TFLite int8, uint8 I/O, batch 1", "tflite",
     {"quantization": "int8", "io_dtype": "uint8", "batch_size": 1}),
    ("ONNX float32 (insightface NCHW)", "onnx", {}),
    ("ONNX int8 (QDQ)", "onnx", {"quantization": "int8"}),
)


def export_rows(built: Built, data: dict, folder: str) -> list[dict]:
    """Export the trained model in every variant, then verify on the unseen pairs via Embedder.

    Each file is written by :mod:`keras_facemargin.export` (head stripped, verified there against
    Keras on held-out training images) and read back with the TensorFlow-free
    :class:`keras_facemargin.runtime.Embedder` from uint8 pixels: the minimum cosine to the
    Keras embeddings over the 12000 pair images and the 10-fold verification accuracy (flip test).
    """
    from keras_facemargin.evaluation import evaluate_pairs
    from keras_facemargin.export import to_onnx, to_tflite
    from keras_facemargin.runtime import Embedder

    pairs, issame = data["pair_images"], data["issame"]
    ref = embed_all(built.embed, pairs)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    rng = np.random.default_rng(1)
    n = len(data["train_images"])
    calib = data["train_images"][rng.choice(n, min(n, 256), replace=False)]
    rows = []
    for name, fmt, kwargs in EXPORTS:
        slug = "".join(c if c.isalnum() else "_" for c in name.split(" (")[0])
        path = os.path.join(folder, f"{slug}.{fmt}")
        kwargs = dict(kwargs)
        if kwargs.get("quantization") == "int8":
            kwargs["representative_data" if fmt == "tflite" else "calibration_data"] = calib
        exporter = to_tflite if fmt == "tflite" else to_onnx
        start = time.perf_counter()
        exporter(built.model, path, **kwargs)
        export_s = time.perf_counter() - start
        face = Embedder.open(path)
        batch = 1 if kwargs.get("batch_size") == 1 else 256
        start = time.perf_counter()
        emb = face.embed(pairs, batch_size=batch)
        embed_ms = 1000 * (time.perf_counter() - start) / len(pairs)
        # the runtime's flip test: each embedding plus its mirror's, summed by Embedder
        fused = face.embed(pairs, flip=True, batch_size=batch)
        unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        rep = evaluate_pairs(fused, issame, fars=(1e-3,))
        rows.append({"variant": name, "bytes": os.path.getsize(path),
                     "min_cos": float(np.min(np.sum(unit * ref, axis=1))),
                     "acc": rep.accuracy, "val": rep.val[1e-3].val if rep.val else float("nan"),
                     "backend": face.backend, "export_s": export_s, "embed_ms": embed_ms})
        print(f"export {name}: min cos {rows[-1]['min_cos']:.6f}, acc {100 * rep.accuracy:.2f}%",
              file=sys.stderr, flush=True)
        if fmt == "tflite" and not kwargs or name.startswith("ONNX float32"):
            rows[-1]["cli"] = cli_eval(path, data["pairs_bin"])
    return rows


def cli_eval(model_path: str, pairs_bin: str) -> str:
    """``facemargin eval --model FILE --bin pairs.bin``: the command line on the same files."""
    import contextlib
    import io

    from keras_facemargin.cli import main as cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli(["eval", "--model", model_path, "--bin", pairs_bin])
    if rc != 0:
        raise RuntimeError(f"facemargin eval failed with exit code {rc}: {out.getvalue()}")
    return out.getvalue().strip()


def format_exports(rows: list[dict], keras_acc: float, head: str) -> str:
    lines = [f"Exports of the {head} model (first seed), read back with `keras_facemargin.runtime."
             f"Embedder` from uint8 pixels; Keras: verification acc {100 * keras_acc:.2f}%.", "",
             "| file | backend | size (KB) | min cosine to Keras (12000 images) | "
             "verification acc (10-fold, %) | VAL@FAR=1e-3 (10-fold, insightface, %) | "
             "ms / image |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['backend']} | {r['bytes'] / 1024:.0f} | "
                     f"{r['min_cos']:.6f} | {100 * r['acc']:.2f} | {100 * r['val']:.2f} | "
                     f"{r['embed_ms']:.3f} |")
    for r in rows:
        if "cli" in r:
            lines += ["", f"`facemargin eval --model <{r['variant']} file> --bin pairs.bin`:", "",
                      "```", r["cli"], "```"]
    return "\n".join(lines)


def describe_optimizer(args) -> str:
    name = "SGD (momentum 0.9)" if args.optimizer == "sgd" else "Adam"
    extra = f", weight decay {args.weight_decay:g}" if args.weight_decay else ""
    warm = f", {args.warmup:g} warm-up epochs" if args.warmup else ""
    return f"{name} lr {args.lr:g} cosine{warm}{extra}"


def load_runs(path: str) -> dict[tuple[str, int], dict]:
    """The runs already recorded in ``--runs`` (JSON lines), by (head, seed)."""
    runs = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    r = json.loads(line)
                    runs[r.pop("head"), r.pop("seed")] = r
    return runs


def _ms(values, scale=100.0, digits=2) -> str:
    v = np.asarray(values, float) * scale
    if np.all(np.isnan(v)):
        return "-"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{np.mean(v):.{digits}f} ± {np.std(v):.{digits}f}"


def _col(runs: list[dict], key: str, scale: float = 100.0, digits: int = 2) -> str:
    return _ms([r[key] for r in runs], scale, digits)


def format_tables(results: dict[str, list[dict]], header: str) -> str:
    lines = [header, "",
             "| head | verification acc (10-fold, %) | TAR@FAR=1e-3 (one ROC, %) | "
             "VAL@FAR=1e-3 (10-fold, insightface, %) | rank-1 (%) | TPIR@FPIR=1e-2 (%) | "
             "train top-1 (%) | final loss | train s |", "|---|---|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        lines.append(f"| {name} | {_col(runs, 'acc')} | {_col(runs, 'tar')} | "
                     f"{_col(runs, 'val')} | {_col(runs, 'rank1')} | {_col(runs, 'tpir')} | "
                     f"{_col(runs, 'top1')} | {_col(runs, 'loss', 1.0, 3)} | "
                     f"{_col(runs, 'train_s', 1.0, 0)} |")
    lines += ["", "Angle statistics (degrees; ArcFace Table 3): W-EC and W-Inter of the class "
              "weights, Intra1 / Inter1 on the training identities, Intra2 / Inter2 on the "
              "unseen ones.", "",
              "| head | W-EC | W-Inter | Intra1 | Inter1 | Intra2 | Inter2 |",
              "|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        cells = " | ".join(_col(runs, k, 1.0, 1) for k in
                           ("w_ec", "w_inter", "intra1", "inter1", "intra2", "inter2"))
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def load_data(args) -> dict:
    from keras_facemargin.data import load_bin
    from keras_facemargin.data.glyphs import write_glyph_benchmark
    from keras_facemargin.data.pipeline import decode_pairs

    settings = {"num_train": args.train_ids, "num_test": args.test_ids,
                "train_images": args.train_images, "test_images": args.test_images,
                "num_pairs": args.pairs, "size": args.size, "seed": args.data_seed}
    manifest = os.path.join(args.data, "manifest.json")
    have = None
    if os.path.exists(manifest):
        with open(manifest, encoding="utf-8") as fh:
            m = json.load(fh)
        have = {"num_train": len(m["train_chars"]), "num_test": len(m["test_chars"]),
                **{k: m[k] for k in ("train_images", "test_images", "num_pairs", "size", "seed")}}
    start = time.perf_counter()
    if have != settings:
        write_glyph_benchmark(args.data, **settings)
    with open(manifest, encoding="utf-8") as fh:
        fonts = json.load(fh)["fonts"]
    x, y = read_rec(os.path.join(args.data, "train.rec"), args.size)
    tx, ty = read_rec(os.path.join(args.data, "test.rec"), args.size)
    pair_images, issame = decode_pairs(load_bin(os.path.join(args.data, "pairs.bin")),
                                       (args.size, args.size))
    rng = np.random.default_rng(0)
    subset = np.sort(rng.choice(len(y), min(len(y), 4000), replace=False))
    print(f"data: {len(y)} train images of {args.train_ids} identities, {len(ty)} test images of "
          f"{args.test_ids} unseen identities, {len(issame)} pairs, {len(fonts)} font designs "
          f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    return {"train_images": x, "train_labels": y, "test_images": tx, "test_labels": ty,
            "pair_images": pair_images, "issame": issame, "angle_subset": subset,
            "pairs_bin": os.path.join(args.data, "pairs.bin"),
            "fonts": fonts}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="500 train identities, 300 unseen, 20 epochs, seed 0, Softmax / CosFace / "
                        "ArcFace (about 10 minutes on 2 CPU cores)")
    p.add_argument("--data", default="out/open_set_data", help="data folder (reused if settings match)")
    p.add_argument("--train-ids", type=int, default=2000)
    p.add_argument("--test-ids", type=int, default=500)
    p.add_argument("--train-images", type=int, default=20, help="images per training identity")
    p.add_argument("--test-images", type=int, default=10, help="images per unseen identity")
    p.add_argument("--pairs", type=int, default=6000)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--dim", type=int, default=128, help="embedding size")
    p.add_argument("--scale", type=float, default=32.0, help="s of the normalized heads")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="sgd",
                   help="sgd: momentum 0.9 (insightface's recipe, the default), or adam")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--warmup", type=float, default=1.0, help="linear warm-up, in epochs")
    p.add_argument("--ids-per-batch", type=int, default=32)
    p.add_argument("--images-per-id", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--heads", nargs="+", default=list(HEADS), metavar="HEAD")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--export", metavar="HEAD",
                   help="export this row's model (first seed) to TFLite fp32/fp16/dynamic/int8 "
                        "and ONNX fp32/int8 and verify through the runtime's Embedder")
    p.add_argument("--runs", help="append each finished run to this JSON-lines file and reuse the "
                                  "runs it already holds (resume a cut-short benchmark)")
    p.add_argument("--out", help="also write the tables to this .md file")
    args = p.parse_args(argv)
    if args.quick:
        given = set(a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:]))
        for k, v in QUICK.items():
            if "--" + k.replace("_", "-") not in given:
                setattr(args, k, v)
    bad = [h for h in args.heads if h not in HEADS + PARTIAL_FC]
    if bad:
        p.error(f"--heads must be among {', '.join(HEADS + PARTIAL_FC)}. Received: {bad}")
    for name in set(args.heads) & set(PARTIAL_FC):
        rate = float(name.split("r=")[1])
        if math.ceil(args.train_ids * rate) < args.ids_per_batch:
            p.error(f"{name!r} samples ceil({args.train_ids} * {rate:g}) class centres, fewer than "
                    f"the {args.ids_per_batch} identities of a batch: raise --train-ids or lower "
                    f"--ids-per-batch. Received: --ids-per-batch {args.ids_per_batch}")
    if args.export and args.export not in args.heads:
        p.error(f"--export must name one of --heads. Received: {args.export!r}")
    images = args.train_ids * args.train_images
    args.steps_per_epoch = max(1, images // (args.ids_per_batch * args.images_per_id))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    except RuntimeError:  # TensorFlow already running in this process (e.g. under pytest)
        pass
    data = load_data(args)
    results: dict[str, list[dict]] = {name: [] for name in args.heads}
    done = load_runs(args.runs) if args.runs else {}
    kept: list = []
    for seed in args.seeds:  # every head once before the next seed: a cut-short run stays usable
        for name in args.heads:
            keep = kept if (name == args.export and not kept) else None
            if (name, seed) in done and keep is None:
                results[name].append(done[name, seed])
                continue
            r = run_one(name, seed, data, args, keep)
            results[name].append(r)
            if args.runs:
                with open(args.runs, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"head": name, "seed": seed, **r}) + "\n")
            print(f"{name} seed {seed}: acc {100 * r['acc']:.2f}%, VAL@1e-3 {100 * r['val']:.2f}%,"
                  f" rank-1 {100 * r['rank1']:.2f}%, {r['train_s']:.0f} s", file=sys.stderr,
                  flush=True)
    command = "python benchmarks/open_set.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    header = (f"`{command}` ({time.strftime('%Y-%m-%d')}, {platform.machine()}, "
              f"{os.cpu_count()} CPUs, TF {tf.__version__}): {args.train_ids} training "
              f"identities x {args.train_images} images, {args.test_ids} unseen x "
              f"{args.test_images}, {args.pairs} pairs, {args.size}x{args.size} grey glyphs of "
              f"{len(data['fonts'])} font designs, small CNN -> {args.dim}-d, {args.epochs} epochs "
              f"of {args.steps_per_epoch} P x K steps ({args.ids_per_batch} x "
              f"{args.images_per_id}), {describe_optimizer(args)}, s = {args.scale:g}, seeds "
              f"{' '.join(map(str, args.seeds))}")
    text = format_tables(results, header)
    if kept:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            rows = export_rows(kept[0], data, folder)
        text += "\n\n" + format_exports(rows, results[args.export][0]["acc"], args.export)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
