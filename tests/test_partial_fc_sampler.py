"""Partial FC sampler vs independent NumPy checks."""
import numpy as np
import pytest

from keras_facemargin.ops.sampling import num_sampled_classes, sample_classes


def test_positives_kept_and_labels_remapped():
    labels = np.array([5, 17, 5, 99, 0], dtype="int32")
    index, new = sample_classes(labels, 100, 0.1, seed=1)
    index, new = np.asarray(index), np.asarray(new)
    assert index.shape == (10,)
    assert len(np.unique(index)) == 10
    assert set(labels.tolist()) <= set(index.tolist())
    np.testing.assert_array_equal(index[new], labels)


def test_rate_one_is_identity():
    labels = np.array([3, 1, 4], dtype="int32")
    index, new = sample_classes(labels, 8, 1.0, seed=0)
    np.testing.assert_array_equal(np.asarray(index), np.arange(8))
    np.testing.assert_array_equal(np.asarray(new), labels)


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5])
def test_bad_rate(rate):
    with pytest.raises(ValueError, match="sample_rate"):
        num_sampled_classes(100, rate)


def test_more_distinct_classes_than_the_sample_is_refused():
    with pytest.raises(ValueError, match="more distinct classes than the 2 class centres"):
        sample_classes(np.arange(5), 20, 0.1)
    # a P x K batch larger than the sample is fine while its classes fit
    labels = np.array([3, 3, 3, 17, 17, 17])
    index, new = sample_classes(labels, 20, 0.1, seed=0)
    np.testing.assert_array_equal(np.asarray(index)[np.asarray(new)], labels)


def test_more_distinct_classes_than_the_sample_in_a_graph_and_under_xla():
    """A graph asserts; XLA (assertions dropped) marks the rows left out invalid: the head never
    trains them against another class (before: a wrong or out-of-range remapped label)."""
    import tensorflow as tf

    import keras_facemargin as kfm

    labels = tf.constant([0, 1, 2, 3, 4, 5, 6, 7], tf.int32)  # 8 classes, sample of 3
    graph = tf.function(lambda y: sample_classes(y, 30, 0.1, seed=1))
    with pytest.raises(tf.errors.InvalidArgumentError, match="more distinct classes"):
        graph(labels)
    head = kfm.ArcMarginLayer(30, sample_rate=0.1, seed=1)
    x = tf.random.normal((8, 4), seed=0)
    head.build(x.shape)
    out = tf.function(lambda x, y: head.compute_logits(x, y, training=True),
                      jit_compile=True)(x, labels)
    valid = np.asarray(out.valid)
    assert out.logits.shape == (8, 3) and valid.sum() == 3  # only 3 of the 8 classes sampled
    safe = np.asarray(out.labels)
    assert np.all((safe >= 0) & (safe < 3))  # every gather in range


def test_sampler_compiles_under_xla():
    """The sampler has static shapes: it runs inside a jit_compile function."""
    import tensorflow as tf

    fn = tf.function(lambda y: sample_classes(y, 50, 0.2, seed=3), jit_compile=True)
    labels = tf.constant([2, 40, 2], tf.int32)
    hlo = fn.experimental_get_compiler_ir(labels)(stage="hlo")
    assert "HloModule" in hlo
    index, new = (np.asarray(t) for t in fn(labels))
    assert index.shape == (10,)
    np.testing.assert_array_equal(index[new], labels.numpy())
