"""Image-folder tf.data pipeline: labels, preprocessing, flips, determinism, sharding, skips."""

import warnings

import numpy as np
import pytest

from keras_facemargin.data import image_folder_dataset, standardize

from data_helpers import color_of, face_jpeg, identity_of


def _folder(tmp_path, counts=(3, 2, 3), half=False, corrupt=0):
    root = tmp_path / "faces"
    for ident, n in enumerate(counts):
        d = root / f"person_{ident}"
        d.mkdir(parents=True)
        for k in range(n):
            (d / f"{k}.jpg").write_bytes(face_jpeg(ident, half=half))
    for k in range(corrupt):
        (root / "person_1" / f"bad{k}.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (root / "person_0" / "notes.txt").write_text("not an image")
    return root


def _all(data):
    xs, ys = zip(*data.dataset.as_numpy_iterator(), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def test_labels_and_standardization(tmp_path):
    data = image_folder_dataset(_folder(tmp_path), batch_size=3, image_size=(16, 16),
                                training=False)
    x, y = _all(data)
    assert data.num_classes == 3 and data.num_images == 8
    assert y.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert [identity_of(im) for im in x] == y.tolist()
    # closed form: grey g -> (g - 127.5) / 128 (JPEG of a flat image is within 1 level)
    for im, label in zip(x, y, strict=True):
        assert np.allclose(im, (color_of(label) - 127.5) / 128, atol=1.5 / 128)



def test_standardize_numpy():
    assert standardize(np.array([127.5, 255.0])).tolist() == [0.0, 127.5 / 128]


def test_training_flips_shuffles_deterministically(tmp_path):
    root = _folder(tmp_path, counts=(10, 10), half=True)
    a = _all(image_folder_dataset(root, batch_size=4, image_size=(16, 16), seed=3))
    b = _all(image_folder_dataset(root, batch_size=4, image_size=(16, 16), seed=3))
    c = _all(image_folder_dataset(root, batch_size=4, image_size=(16, 16), seed=4))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert len(a[1]) == 20  # 20 images, batches of 4, drop remainder: 20
    assert not (np.array_equal(a[1], c[1]) and np.array_equal(a[0], c[0]))
    flipped = a[0][:, :, 0, 0] > a[0][:, :, -1, 0]  # bright left column: mirrored
    assert 0 < int(flipped[:, 0].sum()) < 20
    assert a[1].tolist() != sorted(a[1].tolist())  # shuffled


def test_shards_partition_the_images(tmp_path):
    root = _folder(tmp_path, counts=(4, 3, 2))
    seen = []
    for index in range(3):
        data = image_folder_dataset(root, batch_size=2, image_size=(16, 16), training=False,
                                    num_shards=3, shard_index=index)
        seen.append(_all(data)[1])
        assert data.num_images == 3
    assert sorted(np.concatenate(seen).tolist()) == [0] * 4 + [1] * 3 + [2] * 2
    with pytest.raises(ValueError, match="shard_index"):
        image_folder_dataset(root, num_shards=2, shard_index=2)


def test_distribute_input_context(tmp_path):
    import tensorflow as tf

    root = _folder(tmp_path, counts=(4, 4))
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                     num_replicas_in_sync=2)
    data = image_folder_dataset(root, batch_size=4, image_size=(16, 16), training=False,
                                input_context=ctx)
    x, y = next(iter(data.dataset))
    assert x.shape[0] == 2  # global batch 4 over 2 replicas
    assert data.num_images == 4


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    root = _folder(tmp_path, corrupt=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = image_folder_dataset(root, batch_size=4, image_size=(16, 16), training=False)
        x, y = _all(data)
    assert len(y) == 8 and int(data.skipped) == 2
    assert sum("skipped undecodable" in str(w.message) for w in caught) == 2


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="directory"):
        image_folder_dataset(tmp_path / "nope")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no image"):
        image_folder_dataset(tmp_path / "empty")
    with pytest.raises(ValueError, match="batch_size"):
        image_folder_dataset(_folder(tmp_path), batch_size=0)


DISTRIBUTED = """
import sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from keras_facemargin.data import image_folder_dataset
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
dist = strategy.distribute_datasets_from_function(
    lambda ctx: image_folder_dataset(sys.argv[1], batch_size=4, image_size=(16, 16),
                                     training=False, input_context=ctx).dataset)
labels = []
for x, y in dist:
    parts = strategy.experimental_local_results(y)
    print("replica batch sizes", [int(p.shape[0]) for p in parts])
    labels += [int(v) for p in parts for v in p.numpy()]
print("labels", sorted(labels))
"""


def test_under_mirrored_strategy(tmp_path):
    """Two replicas: each gets half of the global batch of 4, every image once per epoch."""
    import os
    import subprocess
    import sys

    root = _folder(tmp_path, counts=(4, 4))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", DISTRIBUTED, str(root)], capture_output=True,
                          text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replica batch sizes [2, 2]" in proc.stdout
    assert "labels [0, 0, 0, 0, 1, 1, 1, 1]" in proc.stdout
