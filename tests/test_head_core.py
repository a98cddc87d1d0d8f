"""Issue 13: one head core, an explicit label path, nothing trains silently wrong.

Each test names the row of the issue's table it covers. References are numpy re-derivations
(``_np_margin_ce``), never values the code under test produced.
"""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_facemargin as kf
from keras_facemargin import margins as M

D, C, B = 8, 12, 6


def _data(seed=0, batch=B, classes=C):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, 5)).astype("float32")
    y = (np.arange(batch) * 5 + 1) % classes
    return x, y.astype("int64")


def _backbone(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(D)])


def _np_cos(e, w_rows):
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    w = w_rows / np.linalg.norm(w_rows, axis=1, keepdims=True)
    return e @ w.T


def _np_ce(logits, y):
    logits = logits - logits.max(axis=1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(y)), y]


def _np_arcface_ce(e, w_rows, y, m=0.5, s=64.0):
    cos = _np_cos(e.astype("float64"), w_rows.astype("float64"))
    logits = cos.copy()
    theta = np.arccos(np.clip(cos[np.arange(len(y)), y], -1, 1))
    logits[np.arange(len(y)), y] = np.cos(theta + m)  # theta + m < pi for these inputs
    return _np_ce(s * logits, y)


HEADS = {
    "arcface": lambda **k: kf.ArcMarginLayer(C, **k),
    "cosface": lambda **k: kf.CosMarginLayer(C, **k),
    "combined": lambda **k: kf.CombinedMarginLayer(C, **k),
    "normface": lambda **k: kf.NormSoftmaxLayer(C, **k),
    "sphereface": lambda **k: kf.SphereMarginLayer(C, **k),
    "lsoftmax": lambda **k: kf.LargeMarginSoftmaxLayer(C, margin=2, **k),
    "subcenter": lambda **k: kf.SubCenterArcMarginLayer(C, **k),
    "curricular": lambda **k: kf.CurricularMarginLayer(C, **k),
    "adaface": lambda **k: kf.AdaMarginLayer(C, **k),
    "magface": lambda **k: kf.MagMarginLayer(C, **k),
    "elastic": lambda **k: kf.ElasticMarginLayer(C, std=0.0, **k),
    "softmax": lambda **k: kf.SoftmaxLayer(C, **k),
    "partial_fc_r1": lambda **k: kf.PartialFCHead(C, M.AdaMargin(), sample_rate=1.0, **k),
}


def _three_paths(make_head):
    """Loss and gradients of the Sequential path, FaceRecognizer and a custom loop."""
    x, y = _data()
    results = []
    reference = None
    for path in ("sequential", "recognizer", "loop"):
        backbone, head = _backbone(), make_head()
        backbone.build((None, 5))
        head.build((None, D))
        if reference is None:
            reference = [w.numpy() for w in backbone.weights + head.weights]
        for var, value in zip(backbone.weights + head.weights, reference, strict=False):
            var.assign(value)
        if path == "sequential":
            model = keras.Sequential([keras.Input((5,)), backbone, head])
            loss_fn = head.loss
            with tf.GradientTape() as tape:
                out = model(x, training=True)
                loss = loss_fn(y, out) + sum(model.losses)
            weights = model.trainable_weights
        elif path == "recognizer":
            model = kf.FaceRecognizer(backbone, head)
            model.compile(optimizer="sgd")
            loss, _, _, grads = model.forward_backward(x, y, None)
            results.append((float(loss), [np.asarray(g) for g in grads]))
            continue
        else:
            with tf.GradientTape() as tape:
                logits = head(backbone(x, training=True), y, training=True)
                loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                    y, logits, from_logits=True)) + sum(head.losses)
            weights = backbone.trainable_weights + head.trainable_weights
        grads = tape.gradient(loss, weights)
        results.append((float(loss), [np.asarray(tf.convert_to_tensor(g)) for g in grads]))
    return results


@pytest.mark.parametrize("name", sorted(HEADS))
def test_every_path_gives_the_same_loss_and_gradients(name):
    """Sequential + head.loss == FaceRecognizer == head(x, y) + plain cross-entropy."""
    (l1, g1), (l2, g2), (l3, g3) = _three_paths(HEADS[name])
    assert math.isfinite(l1)
    for loss, grads in ((l2, g2), (l3, g3)):
        assert loss == pytest.approx(l1, rel=1e-5)
        assert len(grads) == len(g1)
        for a, b in zip(grads, g1, strict=False):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * max(1.0, np.abs(b).max()))


def test_row1_cli_first_loss_is_the_arcface_loss(tmp_path, capsys):
    """Row 1: facemargin train applied the margin twice (1080 vs 40). The first logged loss of a
    one-step epoch over the whole data set equals numpy ArcFace on the initial weights."""
    from keras_facemargin.cli import build_parser, main
    from keras_facemargin.cli import train as cli_train

    root = tmp_path / "faces"
    rng = np.random.default_rng(0)
    for p in range(4):
        (root / f"id{p}").mkdir(parents=True)
        for i in range(4):
            img = rng.integers(0, 255, (32, 32, 3)).astype("uint8")
            (root / f"id{p}" / f"{i}.png").write_bytes(tf.io.encode_png(img).numpy())
    argv = ["train", "--data", str(root), "--backbone", "tiny", "--image-size", "32",
            "--embedding-size", "16", "--batch-size", "16", "--epochs", "1",
            "--steps-per-epoch", "1", "--checkpoint-dir", str(tmp_path / "ckpt"),
            "--verbose", "2", "--seed", "3"]
    assert main(argv) == 0
    logged = capsys.readouterr().out
    line = [s for s in logged.splitlines() if " loss: " in s][0]
    loss = float(line.split(" loss: ")[1].split()[0])
    # the same initial weights and first batch, rebuilt as run() builds them
    args = build_parser().parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    data = cli_train._data(args, None)
    model = cli_train._build_model(args, data.num_classes)
    images, labels = next(iter(data.dataset))
    emb = np.asarray(model.backbone(images, training=True))
    w = np.asarray(model.head.kernel)
    expected = _np_arcface_ce(emb, w, np.asarray(labels)).mean()
    assert loss == pytest.approx(expected, rel=2e-3, abs=1e-3)


def test_row2_magface_regularizer_with_partial_fc():
    """Row 2: PartialFCHead(C, MagMargin()) never added g(a). Its loss is CE + lambda_g mean g."""
    x, y = _data()
    head = kf.PartialFCHead(C, M.MagMargin(lambda_g=35.0), sample_rate=1.0)
    model = kf.FaceRecognizer(_backbone(), head)
    model.compile(optimizer="sgd")
    loss, logits, labels, _ = model.forward_backward(x, y, None)
    emb = np.asarray(model.backbone(x))
    a = np.clip(np.linalg.norm(emb, axis=1), 10.0, 110.0)
    g = 35.0 * np.mean(1.0 / a + a / 110.0**2)
    ce = _np_ce(np.asarray(logits, "float64"), np.asarray(labels)).mean()
    assert float(loss) == pytest.approx(ce + g, rel=1e-5)
    assert g > 1.0  # the term is not negligible here


def test_row3_evaluate_partial_fc_reports_the_margin_loss():
    """Row 3: evaluate on a Partial FC model gave CE on unscaled cosines (about log C)."""
    x, y = _data(batch=8, classes=40)
    head = kf.ArcMarginLayer(40, sample_rate=0.25, seed=1)
    model = kf.FaceRecognizer(_backbone(), head)
    model.compile(optimizer="sgd")
    reported = model.evaluate(x, y, batch_size=8, verbose=0)
    emb = np.asarray(model.backbone(x))
    expected = _np_arcface_ce(emb, np.asarray(head.kernel), y).mean()
    assert reported == pytest.approx(expected, rel=1e-4)
    assert expected > 2 * math.log(40)


@pytest.mark.parametrize("cls", [kf.SoftmaxLayer, kf.LargeMarginSoftmaxLayer])
def test_row5_softmax_predict_argmax_is_the_training_logits_argmax(cls):
    """Row 5: predict returned cosines while the head trains on W.x (71.5% agreement)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, D)).astype("float32")
    head = cls(C)
    model = keras.Sequential([keras.Input((D,)), head])
    w = rng.normal(size=(C, D)).astype("float32") * rng.uniform(0.1, 3.0, size=(C, 1))
    head.kernel.assign(w)
    model.compile(optimizer="sgd", loss=head.loss, metrics=["accuracy"])
    scores = model.predict(x, verbose=0)
    np.testing.assert_allclose(scores, x @ w.T, rtol=1e-4, atol=1e-4)
    y = np.argmax(x @ w.T, axis=1)
    _, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy == 1.0


@pytest.mark.parametrize("dtype", ["mixed_float16", "mixed_bfloat16", "float16"])
@pytest.mark.parametrize("name", ["arcface", "adaface", "sphereface", "elastic", "softmax",
                                  "subcenter", "curricular"])
def test_row6_half_precision_dtype_computes_in_float32(name, dtype):
    """Row 6: head(x, labels) raised for 9 of 12 heads with a half dtype."""
    x, y = _data()
    emb = np.asarray(_backbone()(x))
    half, full = HEADS[name](dtype=dtype), HEADS[name]()
    half.build((None, D))
    full.build((None, D))
    for a, b in zip(half.weights, full.weights, strict=False):
        a.assign(b)
    out = half(emb.astype("float16"), y, training=False)
    assert out.dtype == "float32"
    np.testing.assert_allclose(np.asarray(out), np.asarray(full(emb, y, training=False)),
                               rtol=1e-2, atol=1e-2)
    model = keras.Sequential([keras.Input((D,)), HEADS[name](dtype=dtype)])
    model.compile(optimizer="sgd", loss=model.layers[-1].loss)
    history = model.fit(emb, y, epochs=1, verbose=0)
    assert math.isfinite(history.history["loss"][0])


def test_row7_layer_after_head_refused():
    """Row 7: ArcFace treated whatever arrived as cosines."""
    x, y = _data()
    head = kf.ArcMarginLayer(C)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(D), head,
                              keras.layers.Dense(C)])
    model.compile(optimizer="sgd", loss=head.loss)
    with pytest.raises(ValueError, match="untouched output of a margin head"):
        model.fit(x, y, verbose=0)


def test_head_called_with_labels_refused_by_margin_loss():
    """A head already called with labels has its margin: head.loss must not add another."""
    x, y = _data()
    head = kf.ArcMarginLayer(C)
    logits = head(np.asarray(_backbone()(x)), y)
    with pytest.raises(ValueError, match="untouched output of a margin head"):
        head.loss(y, logits)
    with pytest.raises(ValueError, match="untouched output"):
        head.loss(y, np.zeros((B, C), "float32"))


def _snapshot(model):
    return {v.path: np.array(v.numpy()) for v in model.variables + model.optimizer.variables
            if "seed_generator" not in v.path}


@pytest.mark.parametrize("bad", [43, 3.5, -0.5, -1])
@pytest.mark.parametrize("head_name", ["adaface", "curricular", "partial_fc"])
def test_rows8_9_invalid_label_under_xla_changes_nothing(bad, head_name):
    """Rows 8, 9: under XLA one bad label NaN'd every weight, or trained 3.5 as 3, -0.5 as 0,
    -1 as some sampled class. Now: NaN loss, no weight, slot or margin state changes."""
    x, y = _data(batch=8, classes=40)
    make = {"adaface": lambda: kf.AdaMarginLayer(40),
            "curricular": lambda: kf.CurricularMarginLayer(40),
            "partial_fc": lambda: kf.ArcMarginLayer(40, sample_rate=0.5, seed=0)}[head_name]
    model = kf.FaceRecognizer(_backbone(), make())
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), jit_compile=True)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # slots and state become non-trivial
    before = _snapshot(model)
    y_bad = y.astype("float32")
    y_bad[2] = bad
    history = model.fit(x, y_bad, batch_size=8, epochs=1, verbose=0)
    assert math.isnan(history.history["loss"][0])
    after = _snapshot(model)
    changed = [k for k in before if not np.array_equal(before[k], after[k])
               and "iteration" not in k]
    assert not changed
    stop = keras.callbacks.TerminateOnNaN()
    model.fit(x, y_bad, batch_size=8, epochs=3, verbose=0, callbacks=[stop])
    assert model.stop_training


def test_row8_sequential_head_loss_under_xla_keeps_weights():
    """Row 8, Sequential path: a NaN loss with a zero gradient (plain SGD: no weight moves)."""
    x, y = _data()
    emb = np.asarray(_backbone()(x))
    head = kf.ArcMarginLayer(C)
    model = keras.Sequential([keras.Input((D,)), head])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=head.loss, jit_compile=True)
    before = head.kernel.numpy().copy()
    y_bad = y.copy()
    y_bad[0] = C + 5
    history = model.fit(emb, y_bad, batch_size=B, epochs=1, verbose=0)
    assert math.isnan(history.history["loss"][0])
    np.testing.assert_array_equal(head.kernel.numpy(), before)


@pytest.mark.parametrize("head_name", ["adaface", "curricular", "sphereface"])
def test_row10_empty_batch_leaves_margin_state(head_name):
    """Row 10: an empty (per-replica) batch made the EMA state NaN for good."""
    head = HEADS[head_name]()
    head.build((None, D))
    state = [np.array(v.numpy()) for v in head.non_trainable_weights]
    out = head.compute_logits(np.zeros((0, D), "float32"), np.zeros((0,), "int32"))
    assert out.logits.shape[0] == 0
    for value, var in zip(state, head.non_trainable_weights, strict=False):
        np.testing.assert_array_equal(var.numpy(), value)
    # and a normal batch does update it
    x, y = _data()
    head.compute_logits(np.asarray(_backbone()(x)), y)
    assert any(not np.array_equal(v.numpy(), s) for v, s in zip(head.non_trainable_weights,
                                                                  state, strict=False))


def test_row11_label_batch_mismatch_raises():
    """Row 11: 1 embedding, 4 labels broadcast to a finite loss."""
    head = kf.ArcMarginLayer(C)
    with pytest.raises(ValueError, match="one class id per embedding"):
        head(np.ones((1, D), "float32"), np.array([0, 1, 2, 3]))


def test_partial_fc_is_an_option_of_every_head_and_serializes(tmp_path):
    x, y = _data(batch=8, classes=40)
    head = kf.CurricularMarginLayer(40, sample_rate=0.3, seed=2)
    model = kf.FaceRecognizer(_backbone(), head)
    model.compile(optimizer="sgd", jit_compile=True)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert head.num_sampled == 12
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, kf.FaceRecognizer)
    assert loaded.head.sample_rate == pytest.approx(0.3)
    assert isinstance(loaded.optimizer, kf.SkipNonFiniteSteps)  # recompiled on load
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)
    emb = loaded.embedding_model.predict(x, verbose=0)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert math.isfinite(loaded.fit(x, y, batch_size=8, verbose=0).history["loss"][0])


@pytest.mark.slow
def test_row4_sharded_centres_with_stateful_margins_equal_the_full_head():
    """Row 4: ShardedMarginTrainer never called margin.context (AdaFace, annealed SphereFace)."""
    import json
    import os
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "scripts", "sharded_stateful.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 2
    for row in rows:
        assert row["loss_err"] < 1e-5
        assert row["centre_err"] < 1e-5
        np.testing.assert_allclose(row["sharded_state"], row["state"], rtol=1e-5)
    assert rows[0]["state"] != [20.0, 100.0]  # AdaFace's statistics moved from their init
    assert rows[1]["state"] == [4.0]  # four annealing steps counted


@pytest.mark.slow
def test_row10_empty_replica_batch_under_mirrored_strategy():
    """Row 10: 2 replicas, 9 samples, batch 4: AdaFace's / CurricularFace's EMA became NaN for
    good. Now every loss is finite and the state is finite and identical on both replicas."""
    import json
    import os
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "scripts", "empty_replica_batch.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    assert len(result) == 4
    for run in result.values():
        assert all(math.isfinite(v) for v in run["loss"])
        for replicas in run["state"]:
            assert len(replicas) == 2
            assert np.isfinite(replicas).all()
            np.testing.assert_array_equal(replicas[0], replicas[1])


def test_face_recognizer_exports_and_evaluates_through_the_shared_strip(tmp_path):
    """Export, the verification callback and strip_head take a FaceRecognizer's backbone."""
    from keras_facemargin.evaluation.callback import _embedding_part
    from keras_facemargin.export import strip_head, to_tflite

    backbone = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                                 keras.layers.Dense(D)])
    model = kf.FaceRecognizer(backbone, kf.ArcMarginLayer(C))
    images = np.random.default_rng(0).uniform(-1, 1, (6, 8, 8, 3)).astype("float32")
    raw = np.asarray(backbone(images))
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(strip_head(model)(images)), unit, atol=1e-6)
    flipped = np.asarray(backbone(images[:, :, ::-1]))
    fused = (raw + flipped) / np.linalg.norm(raw + flipped, axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(strip_head(model, flip_fusion=True)(images)), fused,
                               atol=1e-6)
    np.testing.assert_allclose(np.asarray(_embedding_part(model)(images)), raw, atol=1e-6)
    pixels = np.random.default_rng(1).integers(0, 256, (6, 8, 8, 3)).astype("uint8")
    report = to_tflite(model, tmp_path / "m.tflite", verification_data=pixels)
    assert report.passed
