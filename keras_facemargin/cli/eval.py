"""``facemargin eval``: verification accuracy of a model on insightface ``.bin`` pair sets.

    facemargin eval --model M.keras|M.tflite|M.onnx --bin lfw.bin [--bin cfp_fp.bin ...]
                    [--pairs pairs.txt --images lfw/] [--roc roc.png] [--no-flip]

Prints a Markdown table (10-fold accuracy mean and std as insightface computes it, AUC, EER,
"TAR@FAR (one ROC)" at FAR 1e-2, 1e-3, 1e-4 and insightface's "VAL@FAR (10-fold)" at the same
FARs) and optionally draws the ROC curves. ``.keras`` models are
loaded with Keras (a Sequential model ending in a margin head is evaluated without the head);
``.tflite`` / ``.onnx`` go through ``keras_facemargin.runtime.Embedder``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import numpy as np

MODEL_SUFFIXES = (".keras", ".tflite", ".onnx")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``eval`` on the ``facemargin`` sub-command parser."""
    p = subparsers.add_parser("eval", help="verification accuracy on .bin pair sets",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model file: .keras, .tflite or .onnx")
    p.add_argument("--bin", action="append", default=[], metavar="SET.bin",
                   help="insightface verification .bin (repeatable)")
    p.add_argument("--pairs", help="LFW pairs.txt (with --images)")
    p.add_argument("--images", help="image folder of --pairs (one sub-folder per person)")
    p.add_argument("--roc", help="write the ROC curves to this .png")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    p.add_argument("--no-flip", action="store_true", help="skip the flip test")
    p.add_argument("--folds", type=int, default=10, help="folds of the protocol (default 10)")
    p.set_defaults(func=run)
    return p


class _UsageError(ValueError):
    pass


def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional
        class _Plain:
            def __init__(self):
                self.n = 0

            def update(self, k):
                self.n += k
                print(f"\r{desc}: {self.n}/{total}", end="", file=sys.stderr, flush=True)

            def close(self):
                print(file=sys.stderr)
        return _Plain()
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, leave=False)


def _check_model_path(path: str) -> str:
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in MODEL_SUFFIXES:
        raise _UsageError(f"`--model` must end in one of {', '.join(MODEL_SUFFIXES)}. "
                          f"Received: --model {path!r}")
    if not os.path.isfile(path):
        raise _UsageError(f"`--model` must be an existing file. Received: --model {path!r}")
    return suffix


def load_embedder(path: str) -> tuple[Callable[[np.ndarray], np.ndarray], tuple[int, int]]:
    """``(embed, image_size)``: ``embed`` maps uint8 images (N, H, W, 3) to (N, D) embeddings."""
    suffix = _check_model_path(path)
    if suffix == ".keras":
        import keras

        import keras_facemargin  # noqa: F401  (registers the heads for load_model)
        from keras_facemargin.evaluation.callback import _standardize
        from keras_facemargin.export._pipeline import embedding_model
        from keras_facemargin.export.strip import margin_heads

        model = keras.models.load_model(path, compile=False)
        # everything up to the input of the one margin head (Sequential or functional); a model
        # without a head is the embedding model (refused if it ends in a softmax)
        net, _ = embedding_model(model, bool(margin_heads(model)), l2_normalize=False)
        shape = model.inputs[0].shape if getattr(model, "inputs", None) else (None, 112, 112, 3)
        size = (int(shape[1] or 112), int(shape[2] or 112))

        def embed(images: np.ndarray) -> np.ndarray:
            return np.asarray(keras.ops.convert_to_numpy(net(_standardize(images), training=False)))
        return embed, size
    try:
        from keras_facemargin.runtime import Embedder
    except ImportError as err:
        raise _UsageError(f"{suffix} models need keras_facemargin.runtime (the TF-free embedder), "
                          f"which is not available in this build ({err}). Evaluate the .keras "
                          "model instead.") from None
    embedder = Embedder.open(path)
    size = tuple(getattr(embedder, "image_size", (112, 112)))
    return (lambda images: np.asarray(embedder.embed(images))), size


def _embed_all(embed, images: np.ndarray, batch_size: int, flip: bool, desc: str):
    bar = _progress(len(images) * (2 if flip else 1), desc)
    outs, flips = [], []
    try:
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            outs.append(embed(batch))
            bar.update(len(batch))
            if flip:
                flips.append(embed(np.ascontiguousarray(batch[:, :, ::-1])))
                bar.update(len(batch))
    finally:
        bar.close()
    return np.concatenate(outs), (np.concatenate(flips) if flip else None)


def format_table(rows: list[tuple[str, int, object]]) -> str:
    """Markdown table of ``(set name, pairs, VerificationReport)`` rows.

    Each number is named for what it is: accuracy with the threshold chosen on 9 folds;
    "TAR@FAR (one ROC)": the best TPR on one ROC over all pairs; "VAL@FAR (10-fold,
    insightface)": insightface's ``calculate_val`` (threshold interpolated on 9 folds, VAL read on
    the 10th), with the FAR it reached.
    """
    fars = sorted({far for _, _, r in rows for far in r.tar}, reverse=True)
    vfars = sorted({far for _, _, r in rows for far in r.val}, reverse=True)
    head = ("| set | pairs | accuracy (10-fold, %) | std | AUC | EER (%) | "
            + "".join(f"TAR@FAR={f:g} (one ROC, %) | " for f in fars)
            + "".join(f"VAL@FAR={f:g} (10-fold, insightface, %) | reached FAR | " for f in vfars))
    lines = [head.rstrip(), "|" + "---|" * (6 + len(fars) + 2 * len(vfars))]
    for name, n, r in rows:
        vals = "".join(f"{100 * r.val[f].val:.2f} | {r.val[f].far:.2g} | " if f in r.val
                       else "- | - | " for f in vfars)
        lines.append(f"| {name} | {n} | {100 * r.accuracy:.2f} | {100 * r.accuracy_std:.2f} | "
                     f"{r.auc:.4f} | {100 * r.eer:.2f} | "
                     + "".join(f"{100 * r.tar[f]:.2f} | " for f in fars) + vals.rstrip())
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Evaluate; 0 on success, 2 on bad input (message on stderr)."""
    try:
        if not args.bin and not args.pairs:
            raise _UsageError("Give at least one `--bin SET.bin` or `--pairs pairs.txt --images DIR`.")
        if bool(args.pairs) != bool(args.images):
            raise _UsageError("`--pairs` and `--images` go together. Received: "
                              f"--pairs {args.pairs!r}, --images {args.images!r}")
        if args.batch_size < 1:
            raise _UsageError(f"`--batch-size` must be >= 1. Received: --batch-size {args.batch_size}")
        _check_model_path(args.model)
        if args.roc and not args.roc.lower().endswith(".png"):
            raise _UsageError(f"`--roc` must end in .png. Received: --roc {args.roc!r}")
        from keras_facemargin.data import load_bin, load_pairs_txt
        from keras_facemargin.data.pipeline import decode_pairs
        from keras_facemargin.evaluation import evaluate_pairs

        sets = [load_bin(path) for path in args.bin]
        if args.pairs:
            sets.append(load_pairs_txt(args.pairs, args.images))
        embed, size = load_embedder(args.model)
        rows = []
        for pairs in sets:
            images, issame = decode_pairs(pairs, size)
            emb, flipped = _embed_all(embed, images, args.batch_size, not args.no_flip, pairs.name)
            rows.append((pairs.name, len(issame),
                         evaluate_pairs(emb, issame, flipped, n_folds=args.folds)))
    except (_UsageError, ValueError, FileNotFoundError) as err:
        print(f"facemargin eval: error: {err}", file=sys.stderr)
        return 2
    flip = "without" if args.no_flip else "with"
    print(f"{os.path.basename(args.model)}: {args.folds}-fold verification, {flip} flip test")
    print(format_table(rows))
    if args.roc:
        from keras_facemargin.evaluation.plots import plot_roc

        path = plot_roc({name: rep for name, _, rep in rows}, args.roc,
                        title=f"ROC of {os.path.basename(args.model)}")
        print(f"wrote {path}")
    return 0
