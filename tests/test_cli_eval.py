"""``facemargin eval`` end to end on a tiny saved model and .bin files built here."""

import pickle

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_facemargin import CosMarginLayer
from keras_facemargin.cli import main


def _brute_kfold(dist, issame):
    thresholds = np.arange(0, 4, 0.01)
    accs = []
    for test in np.array_split(np.arange(len(dist)), 10):
        train = np.setdiff1d(np.arange(len(dist)), test)
        t = thresholds[np.argmax([np.mean((dist[train] < t) == issame[train]) for t in thresholds])]
        accs.append(np.mean((dist[test] < t) == issame[test]))
    return 100 * np.mean(accs), 100 * np.std(accs)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(8), CosMarginLayer(num_classes=4)])
    path = tmp / "m.keras"
    model.save(path)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (5, 16, 16, 3))
    a = rng.integers(0, 5, 30)
    b = np.where(np.arange(30) % 2 == 0, a, (a + 1) % 5)
    imgs = np.clip(np.stack([base[a], base[b]], 1).reshape(-1, 16, 16, 3)
                   + rng.normal(0, 60, (60, 16, 16, 3)), 0, 255).astype(np.uint8)
    jpegs = [tf.io.encode_png(im).numpy() for im in imgs]  # lossless: exact pixels known
    (tmp / "toy.bin").write_bytes(pickle.dumps((jpegs, (a == b).tolist()), protocol=2))
    return tmp, model, imgs, a == b


def test_eval_prints_table_matching_brute_force(setup, capsys):
    tmp, model, imgs, issame = setup
    rc = main(["eval", "--model", str(tmp / "m.keras"), "--bin", str(tmp / "toy.bin"),
               "--roc", str(tmp / "roc.png")])
    out = capsys.readouterr().out
    assert rc == 0, out
    row = [line for line in out.splitlines() if line.startswith("| toy ")][0].split("|")
    body = keras.Sequential(model.layers[:-1])
    x = (imgs.astype("float32") - 127.5) / 128
    e = np.asarray(body(x)) + np.asarray(body(x[:, :, ::-1]))
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    mean, std = _brute_kfold(np.sum((e[0::2] - e[1::2]) ** 2, 1), issame)
    assert int(row[2]) == 30
    assert float(row[3]) == pytest.approx(mean, abs=0.006)
    assert float(row[4]) == pytest.approx(std, abs=0.006)
    assert (tmp / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "TAR@FAR=0.001" in out


def test_eval_no_flip(setup, capsys):
    tmp, model, imgs, issame = setup
    assert main(["eval", "--model", str(tmp / "m.keras"), "--bin", str(tmp / "toy.bin"),
                 "--no-flip"]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| toy ")][0]
    body = keras.Sequential(model.layers[:-1])
    e = np.asarray(body((imgs.astype("float32") - 127.5) / 128))
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    mean, _ = _brute_kfold(np.sum((e[0::2] - e[1::2]) ** 2, 1), issame)
    assert float(row.split("|")[3]) == pytest.approx(mean, abs=0.006)


@pytest.mark.parametrize("extra,match", [
    (["--model", "missing.keras", "--bin", "x.bin"], "--model"),
    (["--model", "{tmp}/toy.bin", "--bin", "{tmp}/toy.bin"], "must end in"),
    (["--model", "{tmp}/m.keras"], "at least one"),
    (["--model", "{tmp}/m.keras", "--bin", "{tmp}/nope.bin"], "existing"),
    (["--model", "{tmp}/m.keras", "--bin", "{tmp}/toy.bin", "--roc", "r.jpg"], "--roc"),
])
def test_eval_bad_input(setup, capsys, extra, match):
    tmp = setup[0]
    assert main(["eval", *[e.format(tmp=tmp) for e in extra]]) == 2
    assert match in capsys.readouterr().err
