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


def test_batch_larger_than_sample():
    with pytest.raises(ValueError, match="batch_size=5"):
        sample_classes(np.arange(5), 20, 0.1)


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
