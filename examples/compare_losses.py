"""The shape of ArcFace's Tables 2 and 3 on scikit-learn's bundled digits (open-set protocol).

Identities 0-6 train a small MLP (64 -> 128 -> 64 -> 32-D embedding + BatchNorm) with each loss;
identities 7-9 are never seen and play the role of LFW. Data, backbone, training (``model.fit``
through the library's public API) and verification (6000 LFW-style pairs of
:func:`keras_facemargin.data.lfw_like_pairs` scored by
:func:`keras_facemargin.evaluation.evaluate_pairs`: insightface's 10-fold accuracy, AUC,
"TAR@FAR (one ROC)" and "VAL@FAR (10-fold, insightface)") are those of ``train_digits.py`` in
this folder, imported from it. Every loss is trained with several seeds; the tables give the
mean and the std over seeds.

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

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
if __name__ == "__main__":  # TensorFlow's native log lines off unless --verbose: importing
    # keras_facemargin (before anything imports TensorFlow) reads this (keras_facemargin/quiet.py)
    os.environ.setdefault("FACEMARGIN_QUIET_NATIVE", "0" if "--verbose" in sys.argv[1:] else "1")
    import keras_facemargin  # noqa: E402, F401

import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # train_digits, imported
import train_digits as digits  # noqa: E402

ALL_LOSSES = ("Softmax", "NormFace", "SphereFace", "CosFace", "ArcFace", "Combined", "Triplet",
              "ArcFace + Intra", "Center loss")


# ----------------------------------------------------------------------------- losses
def builders(scale: float) -> dict[str, Callable]:
    """Every loss of the table as a model builder for :func:`train_digits.train`:
    ``build(backbone, optimizer) -> Compiled``, through the library's public API (the Sequential
    path, :class:`~keras_facemargin.JointLoss`, a two-output model for the Center loss)."""
    import keras

    import keras_facemargin as kfm

    c = digits.TRAIN_CLASSES
    heads = {
        "Softmax": lambda: kfm.SoftmaxLayer(num_classes=c),
        "NormFace": lambda: kfm.NormSoftmaxLayer(num_classes=c, scale=scale),
        "SphereFace": lambda: kfm.SphereMarginLayer(num_classes=c, margin=4),
        "CosFace": lambda: kfm.CosMarginLayer(num_classes=c, margin=0.35, scale=scale),
        "ArcFace": lambda: kfm.ArcMarginLayer(num_classes=c, margin=0.5, scale=scale),
        "Combined": lambda: kfm.CombinedMarginLayer(num_classes=c, m1=1.0, m2=0.3, m3=0.2,
                                                    scale=scale),
    }
    table = {name: digits.sequential(make) for name, make in heads.items()}

    def triplet(backbone, optimizer):  # no class weights: the loss on the embeddings
        model = keras.Sequential([backbone])
        model.compile(optimizer=optimizer, loss=kfm.TripletLoss(margin=0.2))
        return digits.Compiled(model, None)

    def arc_intra(backbone, optimizer):  # L_intra = L_arcface + theta_y / pi (ArcFace paper)
        head = heads["ArcFace"]()
        model = keras.Sequential([backbone, head])
        model.compile(optimizer=optimizer, loss=kfm.JointLoss([head.loss, kfm.IntraLoss()]))
        return digits.Compiled(model, head)

    def center(backbone, optimizer):  # Wen et al.: L_S + lambda L_C, lambda = 0.01, alpha 0.5
        head = kfm.SoftmaxLayer(num_classes=c, name="head")
        centers = kfm.CenterLossLayer(num_classes=c, alpha=0.5, name="centers")
        inputs = keras.Input((64,))
        emb = backbone(inputs)
        model = keras.Model(inputs, {"head": head(emb), "centers": centers(emb)})
        model.compile(optimizer=optimizer, loss={"head": head.loss, "centers": centers.loss},
                      loss_weights={"head": 1.0, "centers": 0.01})
        return digits.Compiled(model, head, lambda y: {"head": y, "centers": y})

    table.update({"Triplet": triplet, "ArcFace + Intra": arc_intra, "Center loss": center})
    return {name: table[name] for name in ALL_LOSSES}


def evaluate(trained, data, seed: int) -> dict[str, float]:
    """Open-set verification (:func:`train_digits.verify`, its report under ``"report"``) and
    the angle statistics."""
    from keras_facemargin.evaluation import angle_statistics

    e_train, e_open = digits.embed(trained, data.x_train), digits.embed(trained, data.x_open)
    rep = digits.verify(e_open, data.y_open, seed)
    w = None if trained.head is None else np.asarray(trained.head.centres())
    closed = angle_statistics(e_train, data.y_train, w)
    open_set = angle_statistics(e_open, data.y_open)
    val = rep.val.get(digits.FAR)
    return {"report": rep, "acc": rep.accuracy, "auc": rep.auc, "tar": rep.tar[digits.FAR],
            "val": float("nan") if val is None else val.val,
            "w_ec": closed.w_ec, "w_inter": closed.w_inter, "intra1": closed.intra,
            "inter1": closed.inter, "intra2": open_set.intra, "inter2": open_set.inter}


# ----------------------------------------------------------------------------- outputs
def _ms(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    v = np.asarray(values, float) * scale
    if np.all(np.isnan(v)):
        return "-"
    return f"{np.nanmean(v):.{digits}f} ± {np.nanstd(v):.{digits}f}"


def raw_pixel_baseline(data, seeds: int) -> dict:
    """No training: the same protocol on the raw 64 pixels (a floor every loss should beat)."""
    from keras_facemargin.evaluation import angle_statistics

    reports = [digits.verify(data.x_open, data.y_open, seed) for seed in range(seeds)]
    stats = angle_statistics(data.x_open, data.y_open)
    return {"acc": [r.accuracy for r in reports], "auc": [r.auc for r in reports],
            "tar": [r.tar[digits.FAR] for r in reports],
            "val": [r.val[digits.FAR].val if r.val else float("nan") for r in reports],
            "intra2": stats.intra, "inter2": stats.inter}


VERIFICATION = (("acc", 100, 2), ("auc", 1, 4), ("tar", 100, 2), ("val", 100, 2))
ANGLES = (("w_ec", "W-EC"), ("w_inter", "W-Inter"), ("intra1", "Intra1"), ("inter1", "Inter1"),
          ("intra2", "Intra2"), ("inter2", "Inter2"))


def format_tables(results: dict[str, list[dict]], header: str, baseline: dict | None = None) -> str:
    far = f"{digits.FAR:g}"
    lines = [header, "", "### Verification on unseen digits 7-9 (shape of ArcFace Table 2)", "",
             f"| loss | verification acc (10-fold, %) | AUC (one ROC) | TAR@FAR={far} (one ROC, %) "
             f"| VAL@FAR={far} (10-fold, insightface, %) |", "|---|---|---|---|---|"]
    for name, runs in results.items():
        cells = [_ms([r[key] for r in runs], scale, n) for key, scale, n in VERIFICATION]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if baseline is not None:
        cells = [_ms(baseline[key], scale, n) for key, scale, n in VERIFICATION]
        lines.append("| (no training: raw pixels) | " + " | ".join(cells) + " |")
    lines += ["", "### Angle statistics in degrees (shape of ArcFace Table 3)", "",
              "| loss | W-EC | W-Inter | Intra1 (0-6) | Inter1 (0-6) | Intra2 (7-9) | Inter2 (7-9) |",
              "|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        cells = [_ms([r[k] for r in runs], 1, 1) for k, _ in ANGLES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if baseline is not None:
        lines.append(f"| (no training: raw pixels) | - | - | - | - | {baseline['intra2']:.1f} | "
                     f"{baseline['inter2']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, list[dict]], out: pathlib.Path, baseline: dict) -> list[pathlib.Path]:
    """Both tables as bar charts (mean ± std over seeds) and the ROC of seed 0 of every loss,
    through :mod:`keras_facemargin.evaluation.plots`. Returns the paths written."""
    from keras_facemargin.evaluation import plot_bars, plot_roc

    def mean_std(runs, key, scale=1.0):
        v = scale * np.asarray([r[key] for r in runs], float)
        return (np.nan, np.nan) if np.all(np.isnan(v)) else (np.nanmean(v), np.nanstd(v))

    acc = {name: {"verification acc (10-fold)": mean_std(runs, "acc", 100)}
           for name, runs in results.items()}
    base = 100 * float(np.mean(baseline["acc"]))
    low = min(m for row in acc.values() for m, _ in row.values())
    top = max(max(m for row in acc.values() for m, _ in row.values()), base) + 3
    paths = [out / "compare_losses.png", out / "compare_losses_angles.png",
             out / "compare_losses_roc.png"]
    plot_bars(acc, paths[0], ylabel="verification acc (10-fold, %)",
              title="Unseen digits 7-9 (mean ± std over seeds)",
              reference={"no training (raw pixels)": base}, ylim=(low - 5, min(100, top)))
    plot_bars({name: {label: mean_std(runs, key) for key, label in ANGLES}
               for name, runs in results.items()}, paths[1], ylabel="degrees",
              title="Angle statistics (ArcFace Table 3)")
    plot_roc({name: runs[0]["report"] for name, runs in results.items()}, paths[2],
             title="Unseen digits 7-9, seed 0 (one ROC over all pairs)")
    return paths


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
    from keras_facemargin._io import atomic_path

    digits.deterministic()
    args.out.mkdir(parents=True, exist_ok=True)
    data = digits.load_data(seed=0, holdout=0.0)  # every image of 0-6 trains
    table = builders(args.scale)
    results: dict[str, list[dict]] = {}
    start = time.perf_counter()
    for name in chosen:
        runs = []
        for seed in range(seeds):
            trained = digits.train(table[name], data, args.embedding_dim, epochs, seed)
            runs.append(evaluate(trained, data, seed))
        results[name] = runs
        print(f"  {name:<16s} acc {100 * np.mean([r['acc'] for r in runs]):.2f}% "
              f"({time.perf_counter() - start:.0f} s so far)", flush=True)
    command = "python examples/compare_losses.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = (f"Digits open set: train identities 0-6 ({len(data.y_train)} images), verify on "
              f"unseen 7-9 ({digits.NUM_PAIRS} LFW-style pairs, "
              "keras_facemargin.evaluation.evaluate_pairs); "
              f"{args.embedding_dim}-D embedding, s={args.scale:g}, {epochs} epochs, "
              f"{seeds} seed(s), mean ± std over seeds. Command: `{command.strip()}` "
              f"({time.perf_counter() - start:.0f} s)")
    baseline = raw_pixel_baseline(data, seeds)
    text = format_tables(results, header, baseline)
    md = args.out / "compare_losses.md"
    with atomic_path(md) as tmp:
        pathlib.Path(tmp).write_text(text)
    paths = plot(results, args.out, baseline)
    print()
    print(text)
    print(f"wrote {md}, " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
