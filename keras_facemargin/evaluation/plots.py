"""Figures (matplotlib, PNG): ROC curves of several models on one chart, 2-D / 3-D feature plots
in the style of ArcFace's Fig. 3 (one, or several panels on one figure), and grouped bar charts
of a results table. matplotlib is imported on first use; every figure is written atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from keras_facemargin._io import atomic_path
from keras_facemargin.evaluation.verification import l2_normalize


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:  # pragma: no cover - matplotlib is in the examples/test extras
        raise ImportError("Plots need matplotlib: pip install 'keras_facemargin[examples]'") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> str:
    path = os.path.abspath(os.fspath(path))
    if not path.lower().endswith(".png"):
        raise ValueError(f"`path` must end in .png. Received: path={path!r}")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return path


def plot_roc(curves: Mapping, path: str | os.PathLike, title: str = "ROC",
             log_far: bool = True) -> str:
    """ROC curves of several models (or sets) on one chart, saved as a PNG.

    Args:
        curves: ``{label: (fpr, tpr)}`` or ``{label: VerificationReport}``.
        path: output ``.png``; written to a temporary file and renamed.
        title: chart title. Defaults to `"ROC"`.
        log_far: logarithmic false-accept axis (from 1e-4). Defaults to `True`.

    Returns:
        The absolute path written.

    Example:

    >>> from keras_facemargin.evaluation import plot_roc, roc_curve
    >>> fpr, tpr, _ = roc_curve([0.9, 0.2, 0.7, 0.4], [True, False, True, False])
    >>> plot_roc({"model": (fpr, tpr)}, "roc.png")  # doctest: +SKIP
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError(f"`curves` must be a non-empty dict {{label: (fpr, tpr)}}. Received: {curves!r}")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    for label, curve in curves.items():
        fpr, tpr = (curve.fpr, curve.tpr) if hasattr(curve, "fpr") else curve
        fpr, tpr = np.asarray(fpr, float), np.asarray(tpr, float)
        if fpr.shape != tpr.shape or fpr.ndim != 1:
            raise ValueError(f"`curves[{label!r}]` must be two 1-D arrays of equal length. "
                             f"Received: shapes {fpr.shape} and {tpr.shape}")
        ax.plot(np.maximum(fpr, 1e-5) if log_far else fpr, tpr, label=str(label), lw=1.5)
    if log_far:
        ax.set_xscale("log")
        ax.set_xlim(1e-4, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false accept rate (FAR)")
    ax.set_ylabel("true accept rate (TAR)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def _check_features(e: np.ndarray, y: np.ndarray, name: str) -> None:
    if e.ndim != 2 or e.shape[1] not in (2, 3) or y.shape != (len(e),):
        raise ValueError(f"`{name}` must be (N, 2) or (N, 3) embeddings with (N,) labels. "
                         f"Received: embeddings with shape {e.shape}, labels with shape {y.shape}")


def _draw_features(plt, ax, e: np.ndarray, y: np.ndarray, weights, title: str,
                   weight_alpha: float = 1.0) -> None:
    """One panel: normalized points coloured by label value (label c: colour c of tab10), the
    class centres (column j: colour j) as spokes from the origin."""
    dim = e.shape[1]
    e = l2_normalize(e)
    colors = plt.get_cmap("tab10").colors
    for c in np.unique(y):
        pts = e[y == c]
        ax.scatter(*pts.T, s=8, alpha=0.6, color=colors[int(c) % 10], label=str(c),
                   edgecolors="none")
    if weights is not None:
        w = l2_normalize(np.asarray(weights, float).T)
        if w.shape[1] != dim:
            raise ValueError(f"`weights` must have {dim} rows. Received: weights with shape "
                             f"{np.asarray(weights).shape}")
        for n, v in enumerate(w):
            ax.plot(*np.stack([np.zeros(dim), 1.2 * v]).T, color=colors[n % 10], lw=1.2,
                    alpha=weight_alpha)
    if dim == 2:
        ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, color="0.8"))
        ax.set_aspect("equal")
        ax.set_xlim(-1.3, 1.3)
        ax.set_ylim(-1.3, 1.3)
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=7, markerscale=2)


def plot_features(embeddings, labels, path: str | os.PathLike, weights=None,
                  title: str = "") -> str:
    """Normalized 2-D or 3-D features, one colour per class, class centres as spokes.

    Args:
        embeddings: (N, 2) or (N, 3) embeddings (normalized here onto the circle / sphere).
        labels: (N,) integer classes (class c is drawn in colour c of matplotlib's tab10).
        path: output ``.png``.
        weights: optional class centres (D, C), drawn as lines from the origin. Defaults to `None`.
        title: figure title. Defaults to `""`.

    Returns:
        The absolute path written.

    Example:

    >>> import numpy as np
    >>> from keras_facemargin.evaluation import plot_features
    >>> plot_features(np.random.randn(50, 2), np.arange(50) % 5, "features.png")  # doctest: +SKIP
    """
    e = np.asarray(embeddings, float)
    y = np.asarray(labels)
    _check_features(e, y, "embeddings")
    plt = _pyplot()
    fig = plt.figure(figsize=(6, 6))
    ax = fig.add_subplot(111, projection="3d" if e.shape[1] == 3 else None)
    _draw_features(plt, ax, e, y, weights, title)
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_feature_panels(panels, path: str | os.PathLike, ncols: int | None = None,
                        title: str = "") -> str:
    """Several 2-D feature plots on one figure (e.g. Softmax next to ArcFace, ArcFace Fig. 3).

    Each panel is drawn as :func:`plot_features` draws its one: normalized points on the unit
    circle coloured by label value, the class centres as spokes (faded on a panel whose labels
    are not columns of its weights, e.g. unseen identities).

    Args:
        panels: sequence of ``(title, embeddings (N, 2), labels (N,), weights (2, C) or None)``,
            laid out row by row.
        path: output ``.png``; written to a temporary file and renamed.
        ncols: panels per row. Defaults to `None` (all panels in one row).
        title: figure title. Defaults to `""`.

    Returns:
        The absolute path written.

    Example:

    >>> import numpy as np
    >>> from keras_facemargin.evaluation import plot_feature_panels
    >>> e, y = np.random.randn(50, 2), np.arange(50) % 5
    >>> plot_feature_panels([("a", e, y, None), ("b", -e, y, None)], "f.png")  # doctest: +SKIP
    """
    panels = list(panels) if not isinstance(panels, (str, bytes)) else []
    if not panels or not all(isinstance(p, (tuple, list)) and len(p) == 4 for p in panels):
        raise ValueError("`panels` must be a non-empty sequence of (title, embeddings, labels, "
                         f"weights) tuples. Received: panels={panels!r:.200}")
    if ncols is None:
        ncols = len(panels)
    if isinstance(ncols, bool) or not isinstance(ncols, (int, np.integer)) or ncols < 1:
        raise ValueError(f"`ncols` must be a positive integer. Received: ncols={ncols!r}")
    data = []
    for k, (name, embeddings, labels, weights) in enumerate(panels):
        e, y = np.asarray(embeddings, float), np.asarray(labels)
        _check_features(e, y, f"panels[{k}]")
        if e.shape[1] != 2:
            raise ValueError(f"`panels[{k}]` must hold 2-D embeddings. Received: shape {e.shape}")
        data.append((str(name), e, y, weights))
    nrows = -(-len(data) // ncols)
    plt = _pyplot()
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.0 * ncols, 5.2 * nrows), squeeze=False)
    for ax in axes.flat[len(data):]:
        ax.set_visible(False)
    for ax, (name, e, y, weights) in zip(axes.flat, data, strict=False):
        seen = weights is None or np.all(np.isin(y, np.arange(np.asarray(weights).shape[-1])))
        _draw_features(plt, ax, e, y, weights, name, weight_alpha=1.0 if seen else 0.35)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def _mean_std(value, where: str) -> tuple[float, float]:
    pair = value if isinstance(value, (tuple, list)) else (value, 0.0)
    try:
        mean, std = (float(v) for v in pair)
    except (TypeError, ValueError):
        raise ValueError(f"`{where}` must be a number or a (mean, std) pair. Received: "
                         f"{value!r}") from None
    return mean, std


def plot_bars(values: Mapping, path: str | os.PathLike, ylabel: str = "", title: str = "",
              reference: Mapping | None = None, ylim=None) -> str:
    """Grouped bar chart of a results table: one group per row, one bar per column, ± as error bars.

    Args:
        values: ``{row: {column: value or (mean, std)}}``, e.g. ``{"ArcFace": {"W-EC": (17.6,
            0.9), ...}, ...}``; a NaN value leaves its bar out.
        path: output ``.png``; written to a temporary file and renamed.
        ylabel: label of the value axis. Defaults to `""`.
        title: chart title. Defaults to `""`.
        reference: ``{label: value}`` drawn as dashed horizontal lines (e.g. a baseline).
            Defaults to `None`.
        ylim: ``(bottom, top)`` of the value axis. Defaults to `None` (matplotlib's).

    Returns:
        The absolute path written.

    Example:

    >>> from keras_facemargin.evaluation import plot_bars
    >>> plot_bars({"Softmax": {"acc": (66.9, 1.7)}, "ArcFace": {"acc": (64.0, 1.4)}},
    ...           "acc.png", ylabel="%", reference={"raw pixels": 74.3})  # doctest: +SKIP
    """
    if not isinstance(values, Mapping) or not values or not all(
            isinstance(v, Mapping) and v for v in values.values()):
        raise ValueError("`values` must be a non-empty dict {row: {column: value}} with a "
                         f"non-empty dict per row. Received: values={values!r:.200}")
    columns = list(dict.fromkeys(c for row in values.values() for c in row))
    table = {(r, c): _mean_std(v, f"values[{r!r}][{c!r}]")
             for r, row in values.items() for c, v in row.items()}
    lines = {str(k): _mean_std(v, f"reference[{k!r}]")[0] for k, v in (reference or {}).items()}
    plt = _pyplot()
    rows = list(values)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) * max(1, len(columns) / 2)), 4.8))
    width = 0.8 / len(columns)
    for k, column in enumerate(columns):
        cells = [table.get((r, column), (np.nan, np.nan)) for r in rows]
        x = np.arange(len(rows)) + (k - (len(columns) - 1) / 2) * width
        ax.bar(x, [m for m, _ in cells], width, yerr=[s for _, s in cells], capsize=3,
               label=str(column))
    for n, (label, y) in enumerate(lines.items()):
        ax.axhline(y, color=f"{0.2 + 0.2 * (n % 3):.1f}", ls="--", lw=1, label=label)
    ax.set_xticks(range(len(rows)), [str(r) for r in rows], rotation=35, ha="right")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(columns) > 1 or lines:
        ax.legend(fontsize=8, ncol=min(3, len(columns) + len(lines)))
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)
