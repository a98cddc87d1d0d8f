"""The shape of ArcFace's Tables 2 and 3 on scikit-learn's bundled digits (open-set protocol).

Identities 0-6 train a small MLP (64 -> 128 -> 64 -> 32-D embedding + BatchNorm) with each loss;
identities 7-9 are never seen and play the role of LFW: a fixed random sample of same / different
pairs is verified with insightface's 10-fold protocol (squared L2 distance of normalized
embeddings, threshold chosen on 9 folds). Every loss is trained with several seeds; the tables
give the mean and the std over seeds.

* Table 2 shape: verification accuracy per loss (Softmax, NormFace, SphereFace, CosFace,
  ArcFace, combined margin, Triplet, ArcFace + Intra, Center loss).
* Table 3 shape: angle statistics per loss in degrees: W-EC and W-Inter of the class weights,
  Intra1 / Inter1 on the training identities (CASIA's role), Intra2 / Inter2 on the unseen ones
  (LFW's role).

Usage::

    python examples/compare_losses.py --out out                    # full run (a few minutes)
    python examples/compare_losses.py --quick --out /tmp/cmp       # smoke test

Reference: Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition",
CVPR 2019, Tables 2 and 3.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
if __name__ == "__main__":  # TensorFlow's native log lines off unless --verbose: importing
    # keras_facemargin (before anything imports TensorFlow) reads this (keras_facemargin/quiet.py)
    os.environ.setdefault("FACEMARGIN_QUIET_NATIVE", "0" if "--verbose" in sys.argv[1:] else "1")
    import keras_facemargin  # noqa: E402, F401

import numpy as np  # noqa: E402

TRAIN_CLASSES = 7
NUM_PAIRS = 3000  # same and different pairs each
ALL_LOSSES = ("Softmax", "NormFace", "SphereFace", "CosFace", "ArcFace", "Combined", "Triplet",
              "ArcFace + Intra", "Center loss")


# ----------------------------------------------------------------------------- data
@dataclass
class Digits:
    x_train: np.ndarray  # every image of identities 0-6
    y_train: np.ndarray
    x_open: np.ndarray  # every image of the unseen identities 7-9
    y_open: np.ndarray


def load_digits_open_set() -> Digits:
    """Digits scaled to [0, 1]; identities 0-6 for training, 7-9 held out."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype("float32")
    y = d.target.astype("int32")
    seen = y < TRAIN_CLASSES
    return Digits(x[seen], y[seen], x[~seen], y[~seen] - TRAIN_CLASSES)


def sample_pairs(labels: np.ndarray, num_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``num_pairs`` same and ``num_pairs`` different index pairs (i < j, no repeats), shuffled.
    Returns (pairs (2n, 2), issame (2n,))."""
    rng = np.random.default_rng(seed)
    i, j = np.triu_indices(len(labels), k=1)
    same = labels[i] == labels[j]
    chosen = np.concatenate([rng.choice(np.flatnonzero(m), size=min(num_pairs, int(m.sum())),
                                        replace=False) for m in (same, ~same)])
    chosen = chosen[rng.permutation(len(chosen))]
    return np.stack([i[chosen], j[chosen]], axis=1), same[chosen]


# ----------------------------------------------------------------------------- losses
@dataclass
class Recipe:
    """How one row of the table is trained: a head (or none) and a loss on (emb, labels)."""

    make: Callable  # (num_classes, scale) -> (head | None, state)
    loss: Callable  # (emb, labels, head, state) -> scalar


def recipes(scale: float) -> dict[str, Recipe | str]:
    """Every loss of the table; a string instead of a recipe says why the row is missing."""
    import keras

    import keras_facemargin as kfm

    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def head_recipe(factory):
        return Recipe(lambda c, s: (factory(c, s), None),
                      lambda emb, y, head, state: ce(y, head(emb, y, training=True)))

    def arc_intra_loss(emb, y, head, state):
        # L_intra = L_arcface + theta_y / pi (ArcFace paper), on the head's margin-free cosines
        return ce(y, head(emb, y, training=True)) + kfm.IntraLoss()(y, head(emb))

    table: dict[str, Recipe | str] = {
        "Softmax": head_recipe(lambda c, s: kfm.SoftmaxLayer(num_classes=c)),
        "NormFace": head_recipe(lambda c, s: kfm.NormSoftmaxLayer(num_classes=c, scale=s)),
        "SphereFace": head_recipe(lambda c, s: kfm.SphereMarginLayer(num_classes=c, margin=4)),
        "CosFace": head_recipe(lambda c, s: kfm.CosMarginLayer(num_classes=c, margin=0.35, scale=s)),
        "ArcFace": head_recipe(lambda c, s: kfm.ArcMarginLayer(num_classes=c, margin=0.5, scale=s)),
        "Combined": head_recipe(lambda c, s: kfm.CombinedMarginLayer(
            num_classes=c, m1=1.0, m2=0.3, m3=0.2, scale=s)),
        "ArcFace + Intra": Recipe(
            lambda c, s: (kfm.ArcMarginLayer(num_classes=c, margin=0.5, scale=s), None),
            arc_intra_loss),
    }
    table["Triplet"] = Recipe(lambda c, s: (None, kfm.TripletLoss(margin=0.2)),
                              lambda emb, y, head, state: state(y, emb))

    def center_make(c, s):
        centers = kfm.CenterLossLayer(num_classes=c, alpha=0.5)
        return kfm.SoftmaxLayer(num_classes=c), centers

    def center_loss(emb, y, head, centers):  # Wen et al.: L_S + lambda L_C, lambda = 0.01
        return (ce(y, head(emb, y, training=True))
                + 0.01 * centers.loss(y, centers(emb, training=True)))

    table["Center loss"] = Recipe(center_make, center_loss)
    return {name: table[name] for name in ALL_LOSSES}


# ----------------------------------------------------------------------------- training
def build_backbone(embedding_dim: int):
    import keras

    return keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(embedding_dim),
        keras.layers.BatchNormalization(),
    ])


def train_one(recipe: Recipe, data: Digits, embedding_dim: int, epochs: int, scale: float,
              seed: int):
    """Train backbone (+ head, + loss state) with a plain GradientTape loop; returns them."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    backbone = build_backbone(embedding_dim)
    head, state = recipe.make(TRAIN_CLASSES, scale)
    for layer in (head, state):
        if isinstance(layer, keras.layers.Layer) and not layer.built:
            layer.build((None, embedding_dim))
    variables = list(backbone.trainable_variables)
    for obj in (head, state):
        variables += list(getattr(obj, "trainable_variables", []))
    opt = keras.optimizers.Adam(3e-3)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            emb = backbone(x, training=True)
            loss = recipe.loss(emb, y, head, state)
        grads = tape.gradient(loss, variables)
        opt.apply_gradients([(g, v) for g, v in zip(grads, variables, strict=True) if g is not None])
        return loss

    rng = np.random.default_rng(seed)
    n, batch = len(data.y_train), 64
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n - batch + 1, batch):
            idx = order[start:start + batch]
            step(tf.constant(data.x_train[idx]), tf.constant(data.y_train[idx]))
    return backbone, head


def evaluate(backbone, head, data: Digits, seed: int) -> dict[str, float]:
    """Open-set verification accuracy (10-fold) and the angle statistics."""
    from keras_facemargin.evaluation import angle_statistics, evaluate_pairs

    e_train = np.asarray(backbone(data.x_train, training=False))
    e_open = np.asarray(backbone(data.x_open, training=False))
    pairs, issame = sample_pairs(data.y_open, NUM_PAIRS, seed)
    rep = evaluate_pairs(e_open[pairs.reshape(-1)], issame)
    w = None if head is None else np.asarray(head.centres())
    closed = angle_statistics(e_train, data.y_train, w)
    open_set = angle_statistics(e_open, data.y_open)
    return {"acc": rep.accuracy, "auc": rep.auc, "w_ec": closed.w_ec, "w_inter": closed.w_inter,
            "intra1": closed.intra, "inter1": closed.inter, "intra2": open_set.intra,
            "inter2": open_set.inter}


# ----------------------------------------------------------------------------- outputs
def _atomic_write(path: pathlib.Path, write: Callable[[str], None]) -> None:
    from keras_facemargin._io import atomic_path

    with atomic_path(path) as tmp:
        write(tmp)


def _ms(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    v = np.asarray(values, float) * scale
    if np.all(np.isnan(v)):
        return "-"
    return f"{np.nanmean(v):.{digits}f} ± {np.nanstd(v):.{digits}f}"


def raw_pixel_baseline(data: Digits, seeds: int) -> dict[str, float]:
    """No training: the same protocol on the raw 64 pixels (a floor every loss should beat)."""
    from keras_facemargin.evaluation import angle_statistics, evaluate_pairs

    accs = []
    for seed in range(seeds):
        pairs, issame = sample_pairs(data.y_open, NUM_PAIRS, seed)
        accs.append(evaluate_pairs(data.x_open[pairs.reshape(-1)], issame).accuracy)
    stats = angle_statistics(data.x_open, data.y_open)
    return {"acc": accs, "intra2": stats.intra, "inter2": stats.inter}


def format_tables(results: dict[str, list[dict] | str], header: str,
                  baseline: dict | None = None) -> str:
    lines = [header, "", "### Verification on unseen digits 7-9 (shape of ArcFace Table 2)", "",
             "| loss | verification acc. (%) | AUC |", "|---|---|---|"]
    for name, runs in results.items():
        if isinstance(runs, str):
            lines.append(f"| {name} | missing: {runs} | - |")
        else:
            lines.append(f"| {name} | {_ms([r['acc'] for r in runs], 100)} | "
                         f"{_ms([r['auc'] for r in runs], 1, 4)} |")
    if baseline is not None:
        lines.append(f"| (no training: raw pixels) | {_ms(baseline['acc'], 100)} | - |")
    lines += ["", "### Angle statistics in degrees (shape of ArcFace Table 3)", "",
              "| loss | W-EC | W-Inter | Intra1 (0-6) | Inter1 (0-6) | Intra2 (7-9) | Inter2 (7-9) |",
              "|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        if isinstance(runs, str):
            lines.append(f"| {name} | missing | | | | | |")
            continue
        cells = [_ms([r[k] for r in runs], 1, 1) for k in
                 ("w_ec", "w_inter", "intra1", "inter1", "intra2", "inter2")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if baseline is not None:
        lines.append(f"| (no training: raw pixels) | - | - | - | - | {baseline['intra2']:.1f} | "
                     f"{baseline['inter2']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, list[dict] | str], path: pathlib.Path,
         baseline: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, r in results.items() if not isinstance(r, str)]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    acc = [100 * np.mean([r["acc"] for r in results[n]]) for n in names]
    err = [100 * np.std([r["acc"] for r in results[n]]) for n in names]
    ax1.bar(range(len(names)), acc, yerr=err, color="tab:blue", capsize=3)
    ax1.set_xticks(range(len(names)), names, rotation=35, ha="right")
    top = max(acc) + 3
    if baseline is not None:
        base = 100 * float(np.mean(baseline["acc"]))
        ax1.axhline(base, color="0.3", ls="--", lw=1, label="no training (raw pixels)")
        ax1.legend(loc="upper right", fontsize=8)
        top = max(top, base + 3)
    ax1.set_ylim(min(acc) - 5, min(100, top))
    ax1.set_ylabel("10-fold verification accuracy (%)")
    ax1.set_title("Unseen digits 7-9 (mean ± std over seeds)")
    keys = ("w_ec", "w_inter", "intra1", "inter1", "intra2", "inter2")
    labels = ("W-EC", "W-Inter", "Intra1", "Inter1", "Intra2", "Inter2")
    width = 0.8 / len(keys)
    for k, (key, label) in enumerate(zip(keys, labels, strict=True)):
        vals = [np.nanmean([r[key] for r in results[n]]) if not all(
            np.isnan(r[key]) for r in results[n]) else 0.0 for n in names]
        ax2.bar(np.arange(len(names)) + (k - 2.5) * width, vals, width, label=label)
    ax2.set_xticks(range(len(names)), names, rotation=35, ha="right")
    ax2.set_ylabel("degrees")
    ax2.set_title("Angle statistics (ArcFace Table 3)")
    ax2.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    _atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5, help="seeds per loss (default 5)")
    p.add_argument("--epochs", type=int, default=30, help="epochs per model (default 30)")
    p.add_argument("--verbose", action="store_true",
                   help="show TensorFlow's native log lines (silenced by default)")
    p.add_argument("--scale", type=float, default=16.0, help="logit scale s (default 16)")
    p.add_argument("--embedding-dim", type=int, default=32, help="embedding size (default 32)")
    p.add_argument("--losses", default=",".join(ALL_LOSSES),
                   help="comma-separated subset of: " + ", ".join(ALL_LOSSES))
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("out"),
                   help="folder for compare_losses.md and compare_losses.png (default out/)")
    p.add_argument("--quick", action="store_true", help="1 seed, 1 epoch: a smoke test")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seeds, epochs = (1, 1) if args.quick else (args.seeds, args.epochs)
    chosen = [s.strip() for s in args.losses.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in ALL_LOSSES]
    if unknown or not chosen:
        print(f"--losses must be a subset of {', '.join(ALL_LOSSES)}. Received: {args.losses!r}",
              file=sys.stderr)
        return 2
    if seeds < 1 or epochs < 1:
        print(f"--seeds and --epochs must be >= 1. Received: seeds={seeds}, epochs={epochs}",
              file=sys.stderr)
        return 2
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    args.out.mkdir(parents=True, exist_ok=True)
    data = load_digits_open_set()
    table = recipes(args.scale)
    results: dict[str, list[dict] | str] = {}
    start = time.perf_counter()
    for name in chosen:
        recipe = table[name]
        if isinstance(recipe, str):
            results[name] = recipe
            print(f"  {name:<16s} missing: {recipe}", flush=True)
            continue
        runs = []
        for seed in range(seeds):
            backbone, head = train_one(recipe, data, args.embedding_dim, epochs, args.scale, seed)
            runs.append(evaluate(backbone, head, data, seed))
        results[name] = runs
        print(f"  {name:<16s} acc {100 * np.mean([r['acc'] for r in runs]):.2f}% "
              f"({time.perf_counter() - start:.0f} s so far)", flush=True)
    command = "python examples/compare_losses.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = (f"Digits open set: train identities 0-6 ({len(data.y_train)} images), verify on "
              f"unseen 7-9 ({2 * NUM_PAIRS} pairs, insightface 10-fold protocol); "
              f"{args.embedding_dim}-D embedding, s={args.scale:g}, {epochs} epochs, "
              f"{seeds} seed(s), mean ± std over seeds. Command: `{command.strip()}` "
              f"({time.perf_counter() - start:.0f} s)")
    baseline = raw_pixel_baseline(data, seeds)
    text = format_tables(results, header, baseline)
    md = args.out / "compare_losses.md"
    _atomic_write(md, lambda tmp: pathlib.Path(tmp).write_text(text))
    png = args.out / "compare_losses.png"
    if any(not isinstance(r, str) for r in results.values()):
        plot(results, png, baseline)
    print()
    print(text)
    print(f"wrote {md} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
