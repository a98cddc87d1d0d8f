"""Keras citizenship: Sequential fit with the margin, XLA, mixed precision, save/load, configs."""

import inspect
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_facemargin as kf

import reference as R
from helpers import centres

NAMES = ["ArcMarginLayer", "CosMarginLayer", "SphereMarginLayer", "CombinedMarginLayer",
         "NormSoftmaxLayer", "LargeMarginSoftmaxLayer", "SubCenterArcMarginLayer",
         "CurricularMarginLayer", "AdaMarginLayer", "MagMarginLayer", "ElasticMarginLayer",
         "SoftmaxLayer"]
SMALL_SCALE = {"scale": 8.0}


def _head(name, **kwargs):
    cls = getattr(kf, name)
    if "scale" in inspect.signature(cls).parameters and name not in (
            "SphereMarginLayer", "LargeMarginSoftmaxLayer"):
        kwargs = {**SMALL_SCALE, **kwargs}
    return cls(num_classes=4, **kwargs)


def _blobs(seed=0, n=128):
    """Four separable identities in 8-d."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    centres = rng.normal(size=(4, 8)) * 3
    return (centres[y] + rng.normal(size=(n, 8))).astype("float32"), y


def _model(head):
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(6), head])


@pytest.mark.parametrize("jit", [True, False], ids=["xla", "no_xla"])
@pytest.mark.parametrize("name", NAMES)
def test_sequential_fit_trains_with_the_margin(name, jit):
    x, y = _blobs()
    head = _head(name)
    model = _model(head)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=head.loss, metrics=["accuracy"],
                  jit_compile=jit)
    hist = model.fit(x, y, epochs=6, batch_size=32, verbose=0).history
    assert hist["loss"][-1] < hist["loss"][0]
    assert np.all(np.isfinite(hist["loss"]))
    # the reported loss is the margin loss, not plain softmax on the cosines
    emb = model.layers[-2](model.layers[-3](x))
    margin_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
        y, head(emb, y)) + (sum(head.losses) if head.losses else 0)
    evaluated = model.evaluate(x, y, verbose=0, batch_size=len(x))[0]
    if name != "ElasticMarginLayer":  # its inference margin is the mean margin on both sides
        assert evaluated == pytest.approx(float(margin_loss), rel=1e-4)
    pred = model.predict(x, verbose=0)
    assert pred.shape == (len(x), 4)
    if name in ("SoftmaxLayer", "LargeMarginSoftmaxLayer"):
        # heads whose logits keep the norms predict the logits W.x they classify with
        np.testing.assert_allclose(pred, np.asarray(emb, np.float64) @ centres(head),
                                   rtol=1e-4, atol=1e-4)
    else:
        assert np.all(np.abs(pred) <= 1.0)


def test_predict_is_plain_cosine():
    x, y = _blobs(1)
    head = kf.ArcMarginLayer(4, margin=0.5)
    model = keras.Sequential([keras.Input((8,)), head])
    np.testing.assert_allclose(model.predict(x, verbose=0),
                               R.cosines(x, centres(head)), atol=1e-5)


def test_save_and_load_in_a_fresh_process(tmp_path):
    """model.save then keras.models.load_model with only `import keras_facemargin`: same outputs."""
    x, y = _blobs(2, n=32)
    for name in NAMES:
        head = _head(name)
        model = _model(head)
        model.compile(optimizer="adam", loss=head.loss)
        model.fit(x, y, epochs=1, verbose=0)
        model.save(tmp_path / f"{name}.keras")
        np.save(tmp_path / f"{name}.npy", model.predict(x, verbose=0))
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import numpy as np, keras, keras_facemargin
        x = np.load(r"{tmp_path}/x.npy")
        for name in {NAMES!r}:
            m = keras.models.load_model(r"{tmp_path}/" + name + ".keras")
            assert type(m.layers[-1]).__name__ == name, name
            assert type(m.loss).__module__.startswith("keras_facemargin"), name
            np.testing.assert_array_equal(m.predict(x, verbose=0),
                                          np.load(r"{tmp_path}/" + name + ".npy"))
        print("OK")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK" in out.stdout


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name):
    head = _head(name)
    clone = type(head).from_config(head.get_config())
    assert clone.get_config() == head.get_config()
    loss = head.loss
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss) and restored.get_config() == loss.get_config()
    assert restored.margin.get_config() == head.margin.get_config()


def test_generic_margin_head_serializes_its_margin():
    from keras_facemargin.margins import CombinedMargin

    head = kf.MarginHead(5, margin=CombinedMargin(m1=1.1, m2=0.2, m3=0.1, scale=10.0))
    clone = kf.MarginHead.from_config(head.get_config())
    assert clone.margin.get_config() == head.margin.get_config()
    loss = head.loss
    assert isinstance(loss, kf.MarginLoss) and loss.margin is head.margin


def test_state_is_saved_with_the_model(tmp_path):
    x, y = _blobs(3)
    head = kf.CurricularMarginLayer(4, scale=8.0)
    model = _model(head)
    model.compile(optimizer="adam", loss=head.loss)
    model.fit(x, y, epochs=2, verbose=0)
    t = float(head.margin_state["t"])
    assert t != 0.0
    model.save(tmp_path / "c.keras")
    loaded = keras.models.load_model(tmp_path / "c.keras")
    assert float(loaded.layers[-1].margin_state["t"]) == t


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_training_s64_has_no_nan(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        x, y = _blobs(4, n=256)
        head = kf.ArcMarginLayer(4, margin=0.5, scale=64.0)
        model = _model(head)
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=head.loss,
                      jit_compile=True)
        assert model.layers[0].compute_dtype != "float32"
        assert head.compute_dtype == "float32"
        hist = model.fit(x, y, epochs=25, batch_size=32, verbose=0).history  # 200 steps
        assert np.all(np.isfinite(hist["loss"]))
        assert hist["loss"][-1] < hist["loss"][0]
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_signatures_list_the_margin_arguments():
    params = inspect.signature(kf.ArcMarginLayer).parameters
    assert {"num_classes", "margin", "scale", "easy_margin", "boundary"} <= set(params)
    # the common head arguments (sub_centers, sample_rate...) are keywords of every named head
    assert kf.ArcMarginLayer(3, sub_centers=2).sub_centers == 2
    assert "sub_centers" in inspect.signature(kf.MarginHead).parameters
    assert inspect.signature(kf.SubCenterArcMarginLayer).parameters["sub_centers"].default == 3
    assert {"margin", "scale"} <= set(inspect.signature(kf.ArcFaceLoss).parameters)
