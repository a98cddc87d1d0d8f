"""VerificationCallback in model.fit (History, best model, steps, TensorBoard) and the plots."""

import keras
import numpy as np
import pytest

from keras_facemargin import ArcMarginLayer
from keras_facemargin.evaluation import (
    VerificationCallback,
    embed_images,
    plot_bars,
    plot_feature_panels,
    plot_features,
    plot_roc,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _brute_kfold(dist, issame):
    """insightface: contiguous 10 folds, thresholds 0..4 step 0.01, first best on 9 folds."""
    thresholds = np.arange(0, 4, 0.01)
    folds = np.array_split(np.arange(len(dist)), 10)
    accs = []
    for test in folds:
        train = np.setdiff1d(np.arange(len(dist)), test)
        t = thresholds[np.argmax([np.mean((dist[train] < t) == issame[train]) for t in thresholds])]
        accs.append(np.mean((dist[test] < t) == issame[test]))
    return np.mean(accs)


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 256, size=(6, 4, 4, 3))
    y = np.repeat(np.arange(6), 8)
    x = np.clip(centres[y] + rng.normal(0, 20, size=(48, 4, 4, 3)), 0, 255).astype(np.uint8)
    a = rng.integers(0, 6, 40)
    b = np.where(np.arange(40) % 2 == 0, a, (a + 1 + rng.integers(0, 5, 40)) % 6)
    pair_imgs = np.clip(np.stack([centres[a], centres[b]], 1).reshape(-1, 4, 4, 3)
                        + rng.normal(0, 110, size=(80, 4, 4, 3)), 0, 255).astype(np.uint8)
    return x, y, pair_imgs, a == b


def _model():
    keras.utils.set_random_seed(0)
    head = ArcMarginLayer(num_classes=6, margin=0.2, scale=8.0)
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(8), head])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=head.loss)
    return model


def test_callback_logs_history_and_keeps_best(tmp_path):
    x, y, pimgs, issame = _problem()
    model = _model()
    best = tmp_path / "best.keras"
    cb = VerificationCallback({"toy": (pimgs, issame)}, every_n_epochs=1, every_n_steps=3,
                              best_model_path=str(best), log_dir=str(tmp_path / "tb"), verbose=0)
    hist = model.fit((x.astype("float32") - 127.5) / 128, y, batch_size=16, epochs=2, verbose=0,
                     callbacks=[cb])
    for key in ("toy_accuracy", "toy_accuracy_std", "toy_auc", "toy_tar@far=0.01"):
        assert len(hist.history[key]) == 2, key
    # independent recomputation of the last epoch's accuracy with the flip test
    body = keras.Sequential(model.layers[:-1])
    std = (pimgs.astype("float32") - 127.5) / 128
    e = np.asarray(body(std)) + np.asarray(body(std[:, :, ::-1]))
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    dist = np.sum((e[0::2] - e[1::2]) ** 2, axis=1)
    assert hist.history["toy_accuracy"][-1] == pytest.approx(_brute_kfold(dist, issame))
    assert 0.5 < hist.history["toy_accuracy"][-1] < 1.0  # not a trivial value
    # 48 images / 16 = 3 steps per epoch: step evaluations at 3 and 6, plus 2 epoch ends
    assert [h["step"] for h in cb.history] == [3, 3, 6, 6]
    assert best.is_file() and not list(tmp_path.glob(".best-*"))
    reloaded = keras.models.load_model(best)
    assert isinstance(reloaded.layers[-1], ArcMarginLayer)
    import tensorflow as tf

    events = list((tmp_path / "tb" / "verification").glob("events.out.tfevents.*"))
    written = {}
    for event in tf.compat.v1.train.summary_iterator(str(events[0])):
        for v in event.summary.value:
            written[(v.tag, event.step)] = float(tf.make_ndarray(v.tensor))
            assert v.metadata.plugin_data.plugin_name == "scalars"
    for h in cb.history:
        assert written[("toy_accuracy", h["step"])] == pytest.approx(h["toy_accuracy"])


def test_embed_images_flip_matches_manual():
    net = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
    imgs = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 3)).astype(np.uint8)
    e, f = embed_images(net, imgs, batch_size=2, flip=True)
    x = (imgs.astype("float32") - 127.5) / 128
    w, b = (np.asarray(v) for v in net.layers[-1].weights)
    np.testing.assert_allclose(e, x.reshape(5, -1) @ w + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(f, x[:, :, ::-1].reshape(5, -1) @ w + b, rtol=1e-5, atol=1e-5)


def test_callback_bad_input():
    _, _, pimgs, issame = _problem()
    with pytest.raises(ValueError, match="pairs"):
        VerificationCallback({})
    with pytest.raises(ValueError, match="2 images per pair"):
        VerificationCallback({"x": (pimgs[:5], issame)})
    with pytest.raises(ValueError, match="every_n_epochs"):
        VerificationCallback({"x": (pimgs, issame)}, every_n_epochs=-1)
    with pytest.raises(ValueError, match="best_model_path"):
        VerificationCallback({"x": (pimgs, issame)}, best_model_path="best.h5")
    cb = VerificationCallback({"x": (pimgs, issame)})
    cb.set_model(keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten()]))
    with pytest.raises(ValueError, match="embedding_model"):
        cb.evaluate()


def test_plots_write_png(tmp_path):
    out = plot_roc({"a": ([0, 0.001, 0.1, 1], [0, 0.5, 0.9, 1]), "b": ([0, 1], [0, 1])},
                   tmp_path / "roc.png")
    assert open(out, "rb").read(8) == PNG
    rng = np.random.default_rng(0)
    for dim in (2, 3):
        p = plot_features(rng.normal(size=(30, dim)), np.arange(30) % 3, tmp_path / f"f{dim}.png",
                          weights=rng.normal(size=(dim, 3)))
        assert open(p, "rb").read(8) == PNG
    assert not list(tmp_path.glob(".plot-*"))
    with pytest.raises(ValueError, match="png"):
        plot_roc({"a": ([0, 1], [0, 1])}, tmp_path / "roc.jpg")
    with pytest.raises(ValueError, match="embeddings"):
        plot_features(np.zeros((4, 5)), [0, 1, 2, 3], tmp_path / "x.png")


def test_feature_panels_grid(tmp_path):
    """Panels laid out row by row: a figure of 5 x 5.2 inches per panel at 100 dpi, so 3 panels
    in 2 columns make a 1000 x 1040 PNG (read from its IHDR chunk); bad panels are refused."""
    import struct

    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 3))
    panels = [("train", rng.normal(size=(30, 2)), np.arange(30) % 3, w),
              ("unseen", rng.normal(size=(20, 2)), 7 + np.arange(20) % 3, w),
              ("no weights", rng.normal(size=(10, 2)), np.arange(10) % 2, None)]
    path = plot_feature_panels(panels, tmp_path / "grid.png", ncols=2, title="t")
    data = open(path, "rb").read()
    assert data[:8] == PNG and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (1000, 1040)
    assert struct.unpack(">II", open(plot_feature_panels(panels[:2], tmp_path / "row.png"),
                                     "rb").read()[16:24]) == (1000, 520)  # default: one row
    assert not list(tmp_path.glob(".*"))
    with pytest.raises(ValueError, match="panels"):
        plot_feature_panels([], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"panels\[0\]"):
        plot_feature_panels([("3-D", rng.normal(size=(5, 3)), np.arange(5), None)],
                            tmp_path / "x.png")
    with pytest.raises(ValueError, match="ncols"):
        plot_feature_panels(panels, tmp_path / "x.png", ncols=0)
    with pytest.raises(ValueError, match="weights"):
        plot_feature_panels([("w", rng.normal(size=(5, 2)), np.arange(5), np.ones((3, 5)))],
                            tmp_path / "x.png")


def test_bar_chart(tmp_path):
    """A results table as grouped bars: 6 inches wide at least, 0.9 inch per row times half the
    columns beyond that, 4.8 inches high, at 100 dpi (read from the PNG header); a NaN cell
    (a row without class weights) is left out; values that are not numbers are refused."""
    import struct

    def size(path):
        data = open(path, "rb").read()
        assert data[:8] == PNG
        return struct.unpack(">II", data[16:24])

    angles = {name: {c: (10.0 * k + n, 1.0) for k, c in enumerate("ABCDEF")}
              for n, name in enumerate(("Softmax", "ArcFace"))}
    angles["Triplet"] = {"A": (np.nan, np.nan), **{c: 5.0 for c in "BCDEF"}}
    assert size(plot_bars(angles, tmp_path / "angles.png", ylabel="degrees")) == (810, 480)
    acc = {"Softmax": {"acc": (66.9, 1.7)}, "ArcFace": {"acc": 64.0}}
    assert size(plot_bars(acc, tmp_path / "acc.png", reference={"raw pixels": 74.3},
                          ylim=(55, 80))) == (600, 480)
    assert not list(tmp_path.glob(".*"))
    with pytest.raises(ValueError, match="values"):
        plot_bars({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="values"):
        plot_bars({"a": {}}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"values\['a'\]\['acc'\]"):
        plot_bars({"a": {"acc": "high"}}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="reference"):
        plot_bars(acc, tmp_path / "x.png", reference={"raw": (1, 2, 3)})
    with pytest.raises(ValueError, match="png"):
        plot_bars(acc, tmp_path / "x.jpg")
