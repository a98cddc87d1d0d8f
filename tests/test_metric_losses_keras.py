"""Metric losses inside Keras: model.fit (XLA), joint supervision, state, serialization, bad input."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_facemargin as kf

from helpers import centres
from metric_reference import center_step


def loss_id(loss):
    """A stable test id (xdist workers must collect the same ids)."""
    config = loss.get_config()
    return type(loss).__name__ + "".join(
        f"-{k}={v}" for k, v in sorted(config.items()) if k not in ("name", "reduction", "losses"))


RNG = np.random.default_rng(3)
X = RNG.normal(size=(48, 6)).astype("float32")
Y = RNG.integers(0, 4, 48)


def embedder(dim=5):
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(dim, name="emb")])


@pytest.mark.parametrize("loss", [
    kf.TripletLoss(mining="semihard"), kf.TripletLoss(mining="semihard_all"),
    kf.TripletLoss(mining="all", distance="l2"), kf.TripletLoss(mining="hard"),
    kf.TripletLoss(distance="angular", margin=0.3), kf.ContrastiveLoss()], ids=loss_id)
@pytest.mark.parametrize("jit_compile", [True, False])
def test_metric_losses_train_in_fit(loss, jit_compile):
    keras.utils.set_random_seed(0)
    model = embedder()
    model.compile(keras.optimizers.SGD(0.05), loss=loss, jit_compile=jit_compile)
    before = float(loss(Y, model(X)))
    model.fit(X, Y, batch_size=48, epochs=15, shuffle=False, verbose=0)
    after = float(loss(Y, model(X)))
    assert np.isfinite(after) and after < before


def test_center_loss_fit_step_follows_the_paper_rule():
    inputs = keras.Input((6,))
    emb = keras.layers.Dense(5, name="emb")(inputs)
    centers = kf.CenterLossLayer(4, alpha=0.3, centers_initializer="random_normal",
                                 name="centers")
    head = kf.SoftmaxLayer(4, name="head")
    model = keras.Model(inputs, {"head": head(emb), "centers": centers(emb)})
    model.compile(keras.optimizers.SGD(0.0), loss={"head": head.loss, "centers": centers.loss},
                  loss_weights={"head": 1.0, "centers": 0.1}, jit_compile=True)
    c0 = centers.centers.numpy().copy()
    e = keras.Model(inputs, emb)(X[:16]).numpy().astype(np.float64)
    history = model.fit(X[:16], {"head": Y[:16], "centers": Y[:16]}, batch_size=16, epochs=1,
                        verbose=0).history
    want, want_loss = center_step(c0, e, Y[:16], 0.3)
    np.testing.assert_allclose(centers.centers.numpy(), want, rtol=1e-5, atol=1e-6)
    assert history["centers_loss"][0] == pytest.approx(want_loss, rel=1e-5)
    # evaluation does not move the centres
    after_fit = centers.centers.numpy().copy()
    model.evaluate(X, {"head": Y, "centers": Y}, verbose=0)
    np.testing.assert_array_equal(centers.centers.numpy(), after_fit)


def test_center_loss_gradient_reaches_embeddings_only():
    layer = kf.CenterLossLayer(3, centers_initializer="random_normal")
    x = tf.Variable(RNG.normal(size=(6, 4)).astype("float32"))
    y = np.array([0, 1, 2, 0, 1, 2])
    with tf.GradientTape() as tape:
        loss = layer.loss(y, layer(x))
    grad = tape.gradient(loss, x).numpy()
    c = layer.centers.numpy()
    np.testing.assert_allclose(grad, (x.numpy() - c[y]) / 6, rtol=1e-5, atol=1e-7)
    assert not layer.trainable_weights


def test_center_state_is_saved_with_the_model(tmp_path):
    inputs = keras.Input((6,))
    centers = kf.CenterLossLayer(4, name="centers")
    model = keras.Model(inputs, centers(keras.layers.Dense(5)(inputs)))
    model.compile("sgd", loss=centers.loss)
    model.fit(X, Y, epochs=1, verbose=0)
    assert np.abs(centers.centers.numpy()).max() > 0
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.get_layer("centers").centers.numpy(),
                                  centers.centers.numpy())
    assert loaded.get_layer("centers").alpha == 0.5


def test_intra_and_inter_losses_match_numpy():
    head = kf.ArcMarginLayer(5)
    x = RNG.normal(size=(8, 4)).astype("float32")
    y = RNG.integers(0, 5, 8)
    cos = head(x)
    w = centres(head).astype(np.float64)  # (D, C): one column per centre
    wn = w / np.linalg.norm(w, axis=0)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    intra = np.mean([math.acos(np.clip(xn[i] @ wn[:, y[i]], -1, 1)) for i in range(8)]) / math.pi
    inter = -np.mean([sum(math.acos(np.clip(wn[:, y[i]] @ wn[:, j], -1, 1))
                          for j in range(5) if j != y[i]) for i in range(8)]) / (math.pi * 4)
    assert float(kf.IntraLoss()(y, cos)) == pytest.approx(intra, rel=1e-5)
    assert float(kf.InterLoss()(y, cos)) == pytest.approx(inter, rel=1e-5)


def test_joint_loss_is_the_weighted_sum_and_trains_arcface_plus_intra(tmp_path):
    keras.utils.set_random_seed(0)
    head = kf.ArcMarginLayer(4, scale=16.0, name="head")
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5), head])
    joint = kf.JointLoss([head.loss, kf.IntraLoss()], weights=[1.0, 2.0])
    cos = model(X)
    assert float(joint(Y, cos)) == pytest.approx(
        float(head.loss(Y, cos)) + 2.0 * float(kf.IntraLoss()(Y, cos)), rel=1e-6)
    model.compile(keras.optimizers.SGD(0.05), loss=joint, jit_compile=True)
    intra_before = float(kf.IntraLoss()(Y, model(X)))
    model.fit(X, Y, epochs=10, verbose=0)
    assert float(kf.IntraLoss()(Y, model(X))) < intra_before
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(X, verbose=0), model.predict(X, verbose=0))


def test_discrepancy_loss_matches_closed_form_and_trains_the_basis():
    head = kf.SoftmaxLayer(4, displacement_basis=True)
    x = RNG.normal(size=(8, 6)).astype("float32")
    y = RNG.integers(0, 4, 8)
    out = head(x)
    head.xi.assign(RNG.normal(size=6).astype("float32") * 0.1)
    out = head(x)
    w = centres(head)  # (D, C): one column per centre
    eps = x / np.linalg.norm(x, axis=1, keepdims=True) - (w / np.linalg.norm(w, axis=0))[:, y].T
    want = np.mean(np.linalg.norm(eps - head.xi.numpy(), axis=1))
    assert float(kf.DiscrepancyLoss()(y, out)) == pytest.approx(want, rel=1e-5)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5), head2 := kf.SoftmaxLayer(
        4, displacement_basis=True)])
    model.compile(keras.optimizers.SGD(0.1),
                  loss=kf.JointLoss([head2.loss, kf.DiscrepancyLoss()], [1.0, 0.5]),
                  jit_compile=True)
    model.fit(X, Y, epochs=2, verbose=0)
    assert np.abs(head2.xi.numpy()).max() > 0  # the basis is learned by the optimizer


def test_arcface_plus_triplet_two_outputs():
    inputs = keras.Input((6,))
    emb = keras.layers.Dense(5)(inputs)
    head = kf.ArcMarginLayer(4, scale=16.0, name="head")
    embedding = keras.layers.Identity(name="embedding")(emb)
    model = keras.Model(inputs, {"head": head(emb), "embedding": embedding})
    model.compile(keras.optimizers.SGD(0.05),
                  loss={"head": head.loss, "embedding": kf.TripletLoss(mining="semihard")},
                  loss_weights={"head": 1.0, "embedding": 0.5}, jit_compile=True)
    history = model.fit(X, {"head": Y, "embedding": Y}, batch_size=48, epochs=5,
                        verbose=0).history
    assert history["loss"][-1] < history["loss"][0]


@pytest.mark.parametrize("loss", [
    kf.TripletLoss(margin=0.3, distance="angular", mining="hard", average="all",
                   global_mining=True),
    kf.ContrastiveLoss(pos_margin=0.1, neg_margin=0.8, squared=True, average="all"),
    kf.CenterLoss(), kf.IntraLoss(), kf.InterLoss(), kf.DiscrepancyLoss(),
    kf.JointLoss([kf.ArcFaceLoss(margin=0.3), kf.IntraLoss()], [1.0, 0.5])], ids=loss_id)
def test_losses_serialize(loss):
    config = keras.saving.serialize_keras_object(loss)
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is type(loss)
    assert clone.get_config() == loss.get_config()


@pytest.mark.parametrize("make,match", [
    (lambda: kf.TripletLoss(margin=-0.1), "margin"),
    (lambda: kf.TripletLoss(mining="easy"), "mining"),
    (lambda: kf.TripletLoss(distance="cosine"), "distance"),
    (lambda: kf.TripletLoss(average="max"), "average"),
    (lambda: kf.ContrastiveLoss(neg_margin=-1.0), "neg_margin"),
    (lambda: kf.ContrastiveLoss(pos_margin=-0.5), "pos_margin"),
    (lambda: kf.CenterLossLayer(4, alpha=1.5), "alpha"),
    (lambda: kf.CenterLossLayer(4, alpha=-0.1), "alpha"),
    (lambda: kf.CenterLossLayer(0), "num_classes"),
    (lambda: kf.ArcMarginLayer(4, sub_centers=3, displacement_basis=True), "displacement_basis"),
    (lambda: kf.JointLoss([kf.IntraLoss()], weights=[1.0, 2.0]), "weights"),
    (lambda: kf.JointLoss(["not a loss"]), "losses"),
])
def test_bad_hyper_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("labels,emb,match", [
    (np.zeros((4, 2)), np.zeros((4, 3)), "y_true"),
    (np.array([0, 1, 0.5, 1]), np.ones((4, 3)), "y_true"),
    (np.array([0, -1, 0, 1]), np.ones((4, 3)), "y_true"),
    (np.array([0, 1, 0]), np.ones((4, 3)), "same number"),
    (np.array([0, 1, 0, 1]), np.ones((4, 3, 1)), "embeddings of shape"),
])
def test_bad_data_for_pair_losses(labels, emb, match):
    for loss in (kf.TripletLoss(), kf.ContrastiveLoss()):
        with pytest.raises(ValueError, match=match):
            loss(labels, emb.astype("float32"))


def test_context_losses_say_which_layer_they_need():
    y, e = np.array([0, 1]), np.ones((2, 3), "float32")
    with pytest.raises(ValueError, match="CenterLossLayer"):
        kf.CenterLoss()(y, e)
    with pytest.raises(ValueError, match="displacement_basis=True"):
        kf.DiscrepancyLoss()(y, kf.SoftmaxLayer(3)(e))
    with pytest.raises(ValueError, match="margin head"):
        kf.InterLoss()(y, e)


def test_center_loss_rejects_out_of_range_labels_and_nan():
    layer = kf.CenterLossLayer(3)
    e = np.ones((2, 4), "float32")
    with pytest.raises(ValueError, match=r"y_true.*\[0, 3\)"):
        layer.loss(np.array([0, 3]), layer(e))
    with pytest.raises(ValueError, match="finite"):
        layer.loss(np.array([0, 1]), layer(np.array([[np.nan] * 4, [0] * 4], "float32")))


def test_out_of_range_labels_never_train_silently_under_xla():
    """Under jit_compile the label assertions may be compiled away: then the loss is NaN."""
    layer = kf.CenterLossLayer(3, centers_initializer="random_normal")
    head = kf.ArcMarginLayer(3)
    e = tf.constant(RNG.normal(size=(4, 5)).astype("float32"))
    bad = tf.constant([0, 1, 7, 2])
    layer.build((None, 5))
    head.build((None, 5))
    for loss in (lambda y: layer.loss(y, layer(e, training=True)),
                 lambda y: kf.IntraLoss()(y, head(e)), lambda y: kf.InterLoss()(y, head(e))):
        try:
            value = float(tf.function(loss, jit_compile=True)(bad))
        except tf.errors.InvalidArgumentError as err:  # the assertion survived: also fine
            assert "y_true" in str(err)
        else:
            assert np.isnan(value)
    # a bad label never corrupts the centres (it is left out of the update)
    np.testing.assert_array_equal(np.isfinite(layer.centers.numpy()), True)
