"""Margin heads on scikit-learn's bundled digits: closed-set accuracy and open-set verification.

Classes 0-6 are the training identities; classes 7-9 are never seen in training and serve as
"new faces" for verification, as in the face-recognition protocol of LFW:

1. an MLP backbone (64 -> 128 -> 64 -> embedding + BatchNorm) is trained with each head
   (Softmax, NormFace, CosFace, ArcFace, combined margin) on 80% of the images of classes 0-6,
   through the library's public API (``keras.Sequential([backbone, head])``, ``loss=head.loss``);
2. closed-set accuracy: argmax of the head's inference scores on the remaining 20% of 0-6;
3. verification on the unseen classes 7-9 with the library's protocol: 6000 LFW-style pairs
   (:func:`keras_facemargin.data.lfw_like_pairs`: 10 folds of 300 same + 300 different pairs,
   no pair twice)
   scored by :func:`keras_facemargin.evaluation.evaluate_pairs` (squared L2 distance of the
   L2-normalized embeddings). Each number is named for what it is:

   * "verification acc (10-fold)": insightface's LFW accuracy, the threshold chosen on 9 folds
     and tested on the 10th (mean ± std over the folds);
   * "AUC" and "TAR@FAR (one ROC)": read on one ROC over all pairs (no folds);
   * "VAL@FAR (10-fold, insightface)": insightface's ``calculate_val``, the threshold chosen
     at the target FAR on 9 folds; the FAR it actually reaches on the 10th is printed next to it.

What to expect: every head reaches about 99% closed-set accuracy, but with only 7 training
identities of 8x8 images none of them beats the cosine of raw pixels on the unseen digits. The
gains of the paper need thousands of identities; this demo shows the pipeline and the geometry,
not them. The table's ± is the spread over the 10 folds, not over seeds.

A second, 2-D-embedding run of Softmax and ArcFace draws the learned features on the unit
circle, one colour per class (the style of Fig. 3 of the ArcFace paper;
:func:`keras_facemargin.evaluation.plot_feature_panels`), with the angle statistics of
:func:`keras_facemargin.evaluation.angle_statistics` in the titles.

``examples/compare_losses.py`` imports its data, backbone, training and verification from here.

Usage::

    python examples/train_digits.py                  # full run, writes out/
    python examples/train_digits.py --quick --out /tmp/demo   # smoke test (seconds)

Reference: Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition",
CVPR 2019, Fig. 3 and Sec. 3 (LFW verification protocol).
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

TRAIN_CLASSES = 7  # identities 0-6 are trained on; 7-9 are unseen
NUM_PAIRS = 6000  # LFW's size: 10 folds of 300 same + 300 different pairs
FAR = 1e-2  # of TAR@FAR (one ROC) and VAL@FAR (10-fold, insightface): 300 impostor pairs a fold
BATCH_SIZE = 64
LEARNING_RATE = 3e-3


# ----------------------------------------------------------------------------- data
@dataclass
class Data:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray  # held-out images of the training identities (closed set)
    y_test: np.ndarray
    x_open: np.ndarray  # every image of the unseen identities 7-9 (open set)
    y_open: np.ndarray


def load_data(seed: int, holdout: float = 0.2) -> Data:
    """Digits scaled to [0, 1], flattened to 64 values; classes 0-6 split ``1 - holdout`` /
    ``holdout`` (stratified; ``holdout=0``: all of them for training), classes 7-9 held out."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    seen = y < TRAIN_CLASSES
    if holdout == 0:
        x_train, y_train = x[seen], y[seen]
        x_test, y_test = x[:0], y[:0]
    else:
        x_train, x_test, y_train, y_test = train_test_split(
            x[seen], y[seen], test_size=holdout, stratify=y[seen], random_state=seed)
    return Data(x_train, y_train, x_test, y_test, x[~seen], y[~seen])


def verify(embeddings: np.ndarray, labels: np.ndarray, seed: int):
    """The library's verification of ``embeddings``: :func:`keras_facemargin.data.lfw_like_pairs`
    pairs (``NUM_PAIRS``, seeded, each pair once as in LFW) scored by
    :func:`keras_facemargin.evaluation.evaluate_pairs`.
    Returns its ``VerificationReport`` (TAR / VAL at ``FAR``)."""
    from keras_facemargin.data import lfw_like_pairs
    from keras_facemargin.evaluation import evaluate_pairs

    index, issame = lfw_like_pairs(labels, NUM_PAIRS, seed, repeats=False)
    return evaluate_pairs(np.asarray(embeddings)[index.reshape(-1)], issame, fars=(FAR,))


# ----------------------------------------------------------------------------- models
def head_factories(scale: float, low_dim: bool = False) -> dict[str, Callable]:
    """The heads compared, by table name. ``low_dim`` picks the smaller margins used in 2-D."""
    import keras_facemargin as kfm

    c = TRAIN_CLASSES
    if low_dim:
        return {
            "Softmax": lambda: kfm.SoftmaxLayer(num_classes=c),
            "ArcFace (m=0.3, s=10)": lambda: kfm.ArcMarginLayer(num_classes=c, margin=0.3,
                                                                scale=scale),
        }
    return {
        "Softmax": lambda: kfm.SoftmaxLayer(num_classes=c),
        "NormFace": lambda: kfm.NormSoftmaxLayer(num_classes=c, scale=scale),
        "CosFace (m=0.35)": lambda: kfm.CosMarginLayer(num_classes=c, margin=0.35, scale=scale),
        "ArcFace (m=0.5)": lambda: kfm.ArcMarginLayer(num_classes=c, margin=0.5, scale=scale),
        "Combined (1, 0.3, 0.2)": lambda: kfm.CombinedMarginLayer(
            num_classes=c, m1=1.0, m2=0.3, m3=0.2, scale=scale),
    }


def build_backbone(embedding_dim: int):
    """MLP 64 -> 128 -> 64 -> ``embedding_dim``, then the BatchNorm of ArcFace's output block."""
    import keras

    return keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(embedding_dim),
        keras.layers.BatchNormalization(),
    ], name="backbone")


@dataclass
class Compiled:
    """What a model builder returns: the compiled model, its margin head (or None) and how
    integer labels become the model's fit targets (None: the labels themselves)."""

    model: object
    head: object | None
    targets: Callable | None = None


def sequential(make_head: Callable) -> Callable:
    """A model builder for :func:`train`: ``keras.Sequential([backbone, head])`` compiled with
    ``loss=head.loss`` (the library's Sequential path)."""
    import keras

    def build(backbone, optimizer) -> Compiled:
        head = make_head()
        model = keras.Sequential([backbone, head])
        model.compile(optimizer=optimizer, loss=head.loss)
        return Compiled(model, head)

    return build


@dataclass
class Trained:
    backbone: object
    head: object | None
    seconds: float


def train(build: Callable, data: Data, embedding_dim: int, epochs: int, seed: int) -> Trained:
    """``build(backbone, optimizer) -> Compiled`` on a fresh backbone (same initial state for
    every model, whatever the order), then ``model.fit`` on the training images (Adam 3e-3,
    batch 64, shuffled)."""
    import keras

    keras.utils.set_random_seed(seed)
    backbone = build_backbone(embedding_dim)
    compiled = build(backbone, keras.optimizers.Adam(LEARNING_RATE))
    y = data.y_train if compiled.targets is None else compiled.targets(data.y_train)
    start = time.perf_counter()
    compiled.model.fit(data.x_train, y, batch_size=BATCH_SIZE, epochs=epochs, shuffle=True,
                       verbose=0)
    return Trained(backbone, compiled.head, time.perf_counter() - start)


def embed(trained: Trained, x: np.ndarray) -> np.ndarray:
    """The embedding (the input of the head), inference mode; a direct call, no retracing."""
    import keras

    return np.asarray(keras.ops.convert_to_numpy(trained.backbone(x, training=False)))


def closed_set_accuracy(trained: Trained, data: Data) -> float:
    """Argmax of the head's inference scores (the head called without labels: W_j . x for
    softmax, cos(theta_j) otherwise) on the held-out images of the training identities."""
    import keras

    scores = keras.ops.convert_to_numpy(trained.head(embed(trained, data.x_test)))
    return float(np.mean(np.argmax(scores, axis=1) == data.y_test))


def deterministic() -> None:
    """Deterministic TensorFlow kernels: a seed gives the same table on every run."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


# ----------------------------------------------------------------------------- outputs
def percent(x: float) -> str:
    return f"{100 * x:.2f}%"


def verification_cells(report) -> list[str]:
    """The table cells of one ``VerificationReport``, in :data:`VERIFICATION_COLUMNS` order."""
    val = report.val.get(FAR)
    return [f"{percent(report.accuracy)} ± {100 * report.accuracy_std:.2f}",
            f"{report.auc:.4f}", percent(report.tar[FAR]),
            "-" if val is None else f"{percent(val.val)} ± {100 * val.val_std:.2f} "
                                    f"(FAR {val.far:.4f})"]


VERIFICATION_COLUMNS = ["verification acc (10-fold)", "AUC (one ROC)",
                        f"TAR@FAR={FAR:g} (one ROC)", f"VAL@FAR={FAR:g} (10-fold, insightface)"]


def format_table(rows: list[dict]) -> str:
    """Markdown table: one row per ``{"loss", "closed", "report", "seconds"}``."""
    columns = ["loss", "closed-set acc", *VERIFICATION_COLUMNS, "train time"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = [r["loss"], percent(r["closed"]), *verification_cells(r["report"]),
                 f"{r['seconds']:.1f} s"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_2d(panels: list[tuple[str, Trained]], data: Data, path: pathlib.Path) -> list[str]:
    """The 2-D features through :func:`keras_facemargin.evaluation.plot_feature_panels`: the
    training identities 0-6 (top row) and the unseen digits 7-9 (bottom row), class centres as
    spokes. Returns one line of angle statistics per model."""
    from keras_facemargin.evaluation import angle_statistics, plot_feature_panels

    top, bottom, lines = [], [], []
    for title, trained in panels:
        w = np.asarray(trained.head.centres())
        e_train, e_open = embed(trained, data.x_train), embed(trained, data.x_open)
        stats = angle_statistics(e_train, data.y_train, w)
        top.append((f"{title}\ntrained digits 0-6: Intra {stats.intra:.1f}°, "
                    f"W-Inter {stats.w_inter:.1f}°", e_train, data.y_train, w))
        bottom.append((f"{title}\nunseen digits 7-9 (never trained on)", e_open, data.y_open, w))
        lines.append(f"{title} (2-D): W-EC {stats.w_ec:.1f}°, W-Inter {stats.w_inter:.1f}°, "
                     f"Intra {stats.intra:.1f}°, Inter {stats.inter:.1f}° (training digits 0-6, "
                     "keras_facemargin.evaluation.angle_statistics)")
    plot_feature_panels(top + bottom, path, ncols=len(panels),
                        title="L2-normalized 2-D embeddings (lines: class centres W_j of digits 0-6)")
    return lines


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=40,
                        help="epochs per model (default 40; --quick uses 2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("out"),
                        help="output folder for digits_table.md and digits_features.png")
    parser.add_argument("--scale", type=float, default=16.0,
                        help="logit scale s of the normalized heads, 32-D run (default 16)")
    parser.add_argument("--embedding-dim", type=int, default=32, help="embedding size (default 32)")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's native log lines (silenced by default)")
    parser.add_argument("--quick", action="store_true", help="2 epochs: a smoke test")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    epochs = 2 if args.quick else args.epochs
    if epochs < 1:
        print(f"--epochs must be >= 1. Received: epochs={epochs}", file=sys.stderr)
        return 2
    from keras_facemargin._io import atomic_path

    deterministic()
    args.out.mkdir(parents=True, exist_ok=True)
    data = load_data(args.seed)
    total = time.perf_counter()
    print(f"digits: {len(data.y_train)} train / {len(data.y_test)} test images of classes 0-6, "
          f"{len(data.y_open)} images of unseen classes 7-9; {epochs} epochs per model")

    rows = []
    for name, make_head in head_factories(args.scale).items():
        trained = train(sequential(make_head), data, args.embedding_dim, epochs, args.seed)
        rows.append({"loss": name, "closed": closed_set_accuracy(trained, data),
                     "report": verify(embed(trained, data.x_open), data.y_open, args.seed),
                     "seconds": trained.seconds})
        print(f"  {name:<24s} trained in {trained.seconds:5.1f} s", flush=True)
    raw = verify(data.x_open, data.y_open, args.seed)

    panels = []
    for name, make_head in head_factories(scale=10.0, low_dim=True).items():
        trained = train(sequential(make_head), data, 2, epochs, args.seed)
        panels.append((name, trained))
        print(f"  {name + ' (2-D)':<24s} trained in {trained.seconds:5.1f} s", flush=True)
    png_path = args.out / "digits_features.png"
    angles = plot_2d(panels, data, png_path)

    header = (f"Digits, train classes 0-6, verification on unseen 7-9 ({NUM_PAIRS} LFW-style "
              f"pairs, keras_facemargin.evaluation.evaluate_pairs: 10 folds; ± over the folds); "
              f"embedding {args.embedding_dim}-D, s={args.scale:g}, {epochs} epochs, "
              f"seed {args.seed}\n\n")
    reference = ", ".join(f"{column} {cell}" for column, cell in
                          zip(VERIFICATION_COLUMNS, verification_cells(raw), strict=True))
    table = (format_table(rows) + f"\nReference without training (raw pixels): {reference}.\n\n"
             + "\n".join(f"- {line}" for line in angles) + "\n")
    table_path = args.out / "digits_table.md"
    with atomic_path(table_path) as tmp:
        pathlib.Path(tmp).write_text(header + table)
    print()
    print(table)
    print(f"wrote {table_path} and {png_path} in {time.perf_counter() - total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
