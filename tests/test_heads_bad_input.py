"""Bad input: a clear error naming the argument and the allowed values, eagerly and in fit."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_facemargin as kf


def _built(head, dim=4):
    head.build((None, dim))
    return head


EMB = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")


@pytest.mark.parametrize("labels,match", [
    (np.array([0, 1, 5]), r"`labels` must be integer class ids in \[0, 5\).*\[5\]"),
    (np.array([0, -1, 2]), r"`labels` must be integer class ids.*\[-1\]"),
    (np.array([0.0, 1.5, 2.0]), r"`labels` must be integer class ids.*\[1.5\]"),
    (np.array([[0, 1], [1, 2], [2, 3]]), r"`labels` must be integer class ids of shape"),
])
def test_bad_labels_eager(labels, match):
    head = _built(kf.ArcMarginLayer(5))
    with pytest.raises(ValueError, match=match):
        head(EMB, labels)


def test_bad_labels_in_loss_eager():
    head = _built(kf.CosMarginLayer(5))
    with pytest.raises(ValueError, match=r"`y_true` must be integer class ids in \[0, 5\)"):
        head.loss(np.array([0, 7]), head(EMB[:2]))


def test_out_of_range_label_in_fit_is_an_error_not_a_zero_row():
    """tf.one_hot gives a zero row for label 9 of 4 classes; the head refuses in model.fit."""
    head = kf.ArcMarginLayer(4)
    model = keras.Sequential([keras.Input((4,)), head])
    model.compile(optimizer="sgd", loss=head.loss)
    x = np.random.rand(8, 4).astype("float32")
    y = np.array([0, 1, 2, 3, 0, 1, 2, 9])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`y_true` must be integer class ids"):
        model.fit(x, y, verbose=0, batch_size=8)


def test_out_of_range_label_under_xla_gives_nan_not_silence():
    """XLA drops assertions; the loss of the batch is NaN and its gradient zero (SGD: no change)."""
    head = kf.ArcMarginLayer(4, check_inputs=False)
    model = keras.Sequential([keras.Input((4,)), head])
    model.compile(optimizer="sgd", loss=head.loss, jit_compile=True)
    x = np.random.rand(8, 4).astype("float32")
    before = head.kernel.numpy().copy()
    hist = model.fit(x, np.array([0, 1, 2, 3, 0, 1, 2, 9]), verbose=0, batch_size=8).history
    assert np.isnan(hist["loss"][0])
    np.testing.assert_array_equal(head.kernel.numpy(), before)


def test_nan_embeddings():
    head = _built(kf.ArcMarginLayer(5))
    bad = EMB.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"`embeddings` must be finite.*1 NaN"):
        head(bad, np.array([0, 1, 2]))
    model = keras.Sequential([keras.Input((4,)), kf.ArcMarginLayer(5)])
    model.compile(optimizer="sgd", loss=model.layers[-1].loss)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`embeddings` must be finite"):
        model.fit(bad, np.array([0, 1, 2]), verbose=0)


def test_wrong_embedding_dimension():
    head = _built(kf.ArcMarginLayer(5), dim=4)
    with pytest.raises(ValueError, match=r"built for embeddings of shape \(batch, 4\).*\(3, 6\)"):
        head(np.zeros((3, 6), "float32"))
    with pytest.raises(ValueError, match=r"flat embeddings of shape \(batch, embedding_dim\)"):
        kf.ArcMarginLayer(5).build((None, 4, 4))


@pytest.mark.parametrize("factory,match", [
    (lambda: kf.ArcMarginLayer(5, scale=0.0), r"`scale` must be > 0.0. Received: scale=0.0"),
    (lambda: kf.ArcMarginLayer(5, scale=-3), r"`scale` must be > 0.0"),
    (lambda: kf.ArcMarginLayer(5, margin=-0.1), r"`margin` must be >= 0.0. Received: margin=-0.1"),
    (lambda: kf.ArcMarginLayer(5, margin=3.2), r"`margin` must be < 3.14159"),
    (lambda: kf.CosMarginLayer(5, margin=-1), r"`margin` must be >= 0.0"),
    (lambda: kf.CombinedMarginLayer(5, m1=0), r"`m1` must be > 0.0"),
    (lambda: kf.CombinedMarginLayer(5, m3=-0.2), r"`m3` must be >= 0.0"),
    (lambda: kf.SphereMarginLayer(5, margin=2.5), r"`margin` must be an integer"),
    (lambda: kf.SphereMarginLayer(5, margin=0), r"`margin` must be an integer >= 1"),
    (lambda: kf.SubCenterArcMarginLayer(5, sub_centers=0), r"`sub_centers` must be an integer >= 1"),
    (lambda: kf.ArcMarginLayer(0), r"`num_classes` must be an integer >= 1"),
    (lambda: kf.ArcMarginLayer(5, boundary="wrap"), r"`boundary` must be one of"),
    (lambda: kf.ArcMarginLayer(5, margin_gradient="none"), r"`margin_gradient` must be one of"),
    (lambda: kf.ArcMarginLayer(5, scale=float("nan")), r"`scale` must be a finite real number"),
    (lambda: kf.CurricularMarginLayer(5, momentum=0), r"`momentum` must be > 0.0"),
    (lambda: kf.ElasticMarginLayer(5, kind="sin"), r"`kind` must be one of \['arc', 'cos'\]"),
    (lambda: kf.ElasticMarginLayer(5, std=-1), r"`std` must be >= 0.0"),
    (lambda: kf.MagMarginLayer(5, upper_norm=5.0), r"`upper_norm` must be > 10.0"),
    (lambda: kf.NormSoftmaxLayer(5, margin=0.2), r"takes no `margin` argument"),
    (lambda: kf.LargeMarginSoftmaxLayer(5, sub_centers=2), r"undefined with sub-centres"),
    (lambda: kf.ArcFaceLoss(margin=-1), r"`margin` must be >= 0.0"),
    (lambda: kf.MarginHead(5, margin=0.5), r"`margin` must be a keras_facemargin.margins.Margin"),
])
def test_bad_hyper_parameters(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_margin_loss_without_its_head_says_what_to_do():
    """A margin loss refuses a y_pred that is not the untouched output of a head without labels."""
    cos = np.zeros((2, 5), "float32")
    match = r"SphereFaceLoss applies the margin to the untouched output of a margin head"
    with pytest.raises(ValueError, match=match):
        kf.SphereFaceLoss()(np.array([0, 1]), cos)
    head = _built(kf.SphereMarginLayer(5))
    with pytest.raises(ValueError, match=match):  # already called with labels: margin applied
        kf.SphereFaceLoss()(np.array([0, 1]), head(EMB[:2], np.array([0, 1])))
    with pytest.raises(ValueError, match=r"one head, one margin"):  # another margin than the head's
        kf.SphereFaceLoss(margin=2)(np.array([0, 1]), head(EMB[:2]))
