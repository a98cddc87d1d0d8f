"""tf.data input pipelines for face recognition training and verification.

The field's standard preprocessing: RGB images of 112x112, pixels mapped by (x - mean) / std
(:mod:`keras_facemargin.preprocessing`: 127.5 / 128 by default, ``normalization="arcface_torch"``
for insightface's PyTorch 127.5 / 127.5),
a random horizontal flip for training. Pipelines are deterministic for a seed (shuffle order
and flips) and sharded per input pipeline under ``tf.distribute`` (pass the ``InputContext``
given to ``strategy.distribute_datasets_from_function``).

Corrupt or unreadable images are skipped and counted (a warning per skip, the running total in
:attr:`FaceData.skipped`): an epoch never stops on a bad file. An empty or missing dataset is a
``ValueError`` / ``FileNotFoundError`` at construction.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from keras_facemargin.data.recordio import RecordIOReader
from keras_facemargin.data.verification import VerificationPairs
from keras_facemargin.preprocessing import DEFAULT, Normalization, get_normalization

IMAGE_SIZE = (112, 112)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


class SkipCounter:
    """Thread-safe count of the images skipped because they could not be decoded.

    Args:
        name: the dataset's name, used in the warning.

    Returns:
        A counter; ``int(counter)`` is the number of skips so far.

    Example:

    >>> from keras_facemargin.data.pipeline import SkipCounter
    >>> int(SkipCounter("x"))
    0
    """

    def __init__(self, name: str):
        self.name = name
        self._count = 0
        self._items: set[str] = set()
        self._lock = threading.Lock()

    def add(self, what: str, err: Exception) -> None:
        """Count one skip of ``what`` (a file, or a file and record) that failed with ``err``."""
        with self._lock:
            self._count += 1
            self._items.add(what)
            n = self._count
        warnings.warn(f"{self.name}: skipped undecodable image {what}: {type(err).__name__}: "
                      f"{str(err)[:200]}; {n} skipped so far", RuntimeWarning, stacklevel=2)

    @property
    def distinct(self) -> int:
        """How many different images were skipped (``int(counter)`` counts every epoch's skips)."""
        return len(self._items)

    def __int__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"SkipCounter({self.name!r}, {self._count})"


@dataclass
class FaceData:
    """A training pipeline and what is known about it.

    Args:
        dataset: ``tf.data.Dataset`` of ``(images float32 (B, H, W, 3), labels int32 (B,))``.
        num_classes: number of identities.
        num_images: images in this shard (before skips).
        skipped: :class:`SkipCounter` of undecodable images met so far.
        normalization: the pixel normalization applied (pass it to the exporters).

    Returns:
        A plain record.

    Example:

    >>> from keras_facemargin.data import image_folder_dataset
    >>> data = image_folder_dataset("faces/", batch_size=128)  # doctest: +SKIP
    >>> model.fit(data.dataset, epochs=10)  # doctest: +SKIP
    """

    dataset: tf.data.Dataset
    num_classes: int
    num_images: int
    skipped: SkipCounter = field(repr=False)
    probe: Callable[[int], tuple[int, int, str]] | None = field(default=None, repr=False)
    normalization: Normalization = DEFAULT

    def unreadable(self, max_images: int = 64) -> tuple[int, int, str]:
        """Decode up to ``max_images`` images spread evenly over the data set, before training.

        Args:
            max_images: how many images to try at most. Defaults to `64`.

        Returns:
            ``(unreadable, tried, first_error)``; ``first_error`` names the file (and record)
            of the first failure, ``""`` if none failed.
        """
        if self.probe is None:
            return 0, 0, ""
        return self.probe(max_images)


def _check_size(image_size) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"`image_size` must be (height, width). Received: image_size={image_size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"`image_size` must be positive. Received: image_size={image_size!r}")
    return h, w


def decode_image(data: bytes, image_size=IMAGE_SIZE) -> np.ndarray:
    """Decode JPEG/PNG/BMP bytes to uint8 RGB (H, W, 3), resized (bilinear) when needed.

    Args:
        data: encoded image.
        image_size: (height, width) of the output. Defaults to `(112, 112)`.

    Returns:
        uint8 array (H, W, 3). Raises ``ValueError`` when the bytes are not a decodable image.

    Example:

    >>> import tensorflow as tf
    >>> from keras_facemargin.data import decode_image
    >>> jpeg = tf.io.encode_jpeg(tf.zeros((8, 8, 3), tf.uint8)).numpy()
    >>> decode_image(jpeg, (4, 4)).shape
    (4, 4, 3)
    """
    h, w = _check_size(image_size)
    try:
        img = tf.io.decode_image(bytes(data), channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError, ValueError) as err:
        raise ValueError(f"`data` is not a decodable image ({len(data)} bytes): "
                         f"{str(err).splitlines()[0][:200]}") from None
    if img.shape[0] != h or img.shape[1] != w:
        img = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(img, (h, w))), 0, 255), tf.uint8)
    return img.numpy()


def standardize(images, normalization: str | Normalization | None = None):
    """(x - mean) / std in float32: uint8 pixels to about [-1, 1].

    Args:
        images: uint8 or float pixels in [0, 255], NumPy array or tensor.
        normalization: see :func:`keras_facemargin.preprocessing.get_normalization`.
            Defaults to `None`: (x - 127.5) / 128.

    Returns:
        float32 of the same kind and shape.

    Example:

    >>> import numpy as np
    >>> from keras_facemargin.data import standardize
    >>> standardize(np.array([0, 255], np.uint8)).tolist()
    [-0.99609375, 0.99609375]
    """
    norm = get_normalization(normalization)
    if isinstance(images, np.ndarray):
        return norm.apply(images)
    return (tf.cast(images, tf.float32) - norm.mean) / norm.std


def _check_shard(input_context, num_shards, shard_index) -> tuple[int, int]:
    if input_context is not None:
        return int(input_context.num_input_pipelines), int(input_context.input_pipeline_id)
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError("`shard_index` must be in [0, num_shards) and `num_shards` >= 1. "
                         f"Received: num_shards={num_shards}, shard_index={shard_index}")
    return num_shards, shard_index


def _build(name: str, num_items: int, labels: Sequence[int], read: Callable[[int], bytes],
           num_classes: int, describe: Callable[[int], str], *, batch_size: int, image_size, training: bool, seed: int,
           shuffle_buffer: int, input_context, num_shards: int, shard_index: int,
           drop_remainder: bool | None,
           normalization: str | Normalization | None = None) -> FaceData:
    h, w = _check_size(image_size)
    norm = get_normalization(normalization)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an integer >= 1. Received: batch_size={batch_size!r}")
    shards, index = _check_shard(input_context, num_shards, shard_index)
    if input_context is not None:  # the global batch split over the replicas
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    skipped = SkipCounter(name)

    def load(i):
        i = int(i)
        try:
            img = decode_image(read(i), (h, w))
            return img, True
        except (ValueError, OSError, KeyError) as err:
            skipped.add(describe(i), err)
            return np.zeros((h, w, 3), np.uint8), False

    def probe(max_images: int) -> tuple[int, int, str]:
        picks = sorted(set(np.linspace(0, num_items - 1, min(max_images, num_items)).astype(int)))
        bad, first = 0, ""
        for i in picks:
            try:
                decode_image(read(int(i)), (h, w))
            except (ValueError, OSError, KeyError) as err:
                bad += 1
                first = first or f"{describe(int(i))}: {type(err).__name__}: {str(err)[:200]}"
        return bad, len(picks), first

    def load_tf(i, y):
        img, ok = tf.numpy_function(load, [i], [tf.uint8, tf.bool], stateful=False)
        img.set_shape((h, w, 3))
        ok.set_shape(())
        return img, tf.cast(y, tf.int32), ok

    ds = tf.data.Dataset.from_tensor_slices((np.arange(num_items, dtype=np.int64),
                                             np.asarray(labels, np.int64)))
    if shards > 1:
        ds = ds.shard(shards, index)
    shard_size = len(range(index, num_items, shards))
    if shard_size == 0:
        raise ValueError(f"{name}: shard {index} of {shards} is empty ({num_items} images)")
    if training:
        ds = ds.shuffle(min(shuffle_buffer, shard_size), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(load_tf, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    def decoded(img, y, ok):
        return ok

    def drop_flag(img, y, ok):
        return img, y

    def random_flip(pair, coin):
        img, y = pair
        return tf.cond(coin % 2 == 1, lambda: tf.reverse(img, [1]), lambda: img), y

    def finish(img, y):
        return standardize(img, norm), y

    ds = ds.filter(decoded).map(drop_flag)
    if training:
        coins = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, coins)).map(random_flip)
    ds = ds.map(finish)
    ds = ds.batch(batch_size, drop_remainder=training if drop_remainder is None else drop_remainder)
    options = tf.data.Options()
    options.deterministic = True
    ds = ds.with_options(options).prefetch(tf.data.AUTOTUNE)
    return FaceData(ds, num_classes, shard_size, skipped, probe=probe, normalization=norm)


def image_folder_dataset(directory: str | os.PathLike, *, batch_size: int = 128,
                         image_size=IMAGE_SIZE, training: bool = True, seed: int = 0,
                         shuffle_buffer: int = 10_000, input_context=None, num_shards: int = 1,
                         shard_index: int = 0, drop_remainder: bool | None = None,
                         normalization: str | Normalization | None = None) -> FaceData:
    """Training pipeline over a folder with one sub-folder per identity.

    Identities are the sorted sub-folder names (label i = i-th name); images are files ending
    in .jpg, .jpeg, .png or .bmp (any case). Hidden entries (names starting with ``.``, e.g.
    ``.ipynb_checkpoints/`` or macOS' ``._x.jpg``) are ignored: they are never an identity.

    Args:
        directory: root folder.
        batch_size: batch size of this input pipeline (under ``tf.distribute`` with an
            ``input_context``, the global batch size, divided per replica). Defaults to `128`.
        image_size: output (height, width). Defaults to `(112, 112)`.
        training: shuffle, flip at random and drop the last partial batch. Defaults to `True`.
        seed: seed of the shuffle order and the flips. Defaults to `0`.
        shuffle_buffer: shuffle buffer size. Defaults to `10000`.
        input_context: ``tf.distribute.InputContext``: shard per input pipeline. Defaults to `None`.
        num_shards: shards without an input context. Defaults to `1`.
        shard_index: which shard. Defaults to `0`.
        drop_remainder: override the last-batch rule. Defaults to `None` (= ``training``).
        normalization: pixel normalization (:mod:`keras_facemargin.preprocessing`). Defaults
            to `None`: (x - 127.5) / 128.

    Returns:
        :class:`FaceData`.

    Example:

    >>> from keras_facemargin.data import image_folder_dataset
    >>> data = image_folder_dataset("casia/", batch_size=256, seed=1)  # doctest: +SKIP
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"`directory` must be an existing folder. Received: directory={directory!r}")
    people = sorted(d.name for d in os.scandir(directory)
                    if d.is_dir() and not d.name.startswith("."))
    files, labels = [], []
    for label, person in enumerate(people):
        folder = os.path.join(directory, person)
        for f in sorted(os.listdir(folder)):
            if (f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")
                    and os.path.isfile(os.path.join(folder, f))):
                files.append(os.path.join(folder, f))
                labels.append(label)
    if not files:
        raise ValueError(f"`directory` holds no image (one sub-folder per identity, files ending in "
                         f"{', '.join(IMAGE_EXTENSIONS)}). Received: directory={directory!r}")

    def read(i: int) -> bytes:
        with open(files[i], "rb") as fh:
            return fh.read()

    return _build(os.path.basename(os.path.normpath(directory)), len(files), labels, read,
                  len(people), lambda i: files[i], batch_size=batch_size, image_size=image_size, training=training,
                  seed=seed, shuffle_buffer=shuffle_buffer, input_context=input_context,
                  num_shards=num_shards, shard_index=shard_index, drop_remainder=drop_remainder,
                  normalization=normalization)


def recordio_dataset(rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None, *,
                     batch_size: int = 128, image_size=IMAGE_SIZE, training: bool = True,
                     seed: int = 0, shuffle_buffer: int = 10_000, input_context=None,
                     num_shards: int = 1, shard_index: int = 0,
                     drop_remainder: bool | None = None,
                     normalization: str | Normalization | None = None) -> FaceData:
    """Training pipeline over insightface's ``train.rec`` / ``train.idx`` (no MXNet needed).

    Args:
        rec_path: the ``.rec`` file (MS1MV2, Glint360K, WebFace42M shards...).
        idx_path: its ``.idx``. Defaults to `rec_path` with suffix ``.idx``.
        batch_size: see :func:`image_folder_dataset`. Defaults to `128`.
        image_size: output (height, width). Defaults to `(112, 112)`.
        training: shuffle, flip at random and drop the last partial batch. Defaults to `True`.
        seed: seed of the shuffle order and the flips. Defaults to `0`.
        shuffle_buffer: shuffle buffer size. Defaults to `10000`.
        input_context: ``tf.distribute.InputContext``. Defaults to `None`.
        num_shards: shards without an input context. Defaults to `1`.
        shard_index: which shard. Defaults to `0`.
        drop_remainder: override the last-batch rule. Defaults to `None` (= ``training``).
        normalization: pixel normalization (:mod:`keras_facemargin.preprocessing`). Defaults
            to `None`: (x - 127.5) / 128.

    Returns:
        :class:`FaceData`; ``num_classes`` from the header record (or max label + 1).

    Example:

    >>> from keras_facemargin.data import recordio_dataset
    >>> data = recordio_dataset("faces_emore/train.rec", batch_size=512)  # doctest: +SKIP
    """
    reader = RecordIOReader(rec_path, idx_path)
    labels = reader.labels()
    num_classes = reader.num_classes or (max(labels) + 1)
    if min(labels) < 0 or max(labels) >= num_classes:
        raise ValueError(f"The .rec labels must lie in [0, {num_classes}). Received: labels in "
                         f"[{min(labels)}, {max(labels)}] in {reader.rec_path!r}")
    keys = reader.image_keys
    local = threading.local()

    def read(i: int) -> bytes:
        if not hasattr(local, "reader"):  # one open file per thread
            local.reader = RecordIOReader.__new__(RecordIOReader)
            local.reader.__dict__.update(reader.__getstate__())
        return local.reader.read_image(keys[i])[1]

    def describe(i: int) -> str:
        return f"{reader.rec_path} record {keys[i]}"

    return _build(os.path.basename(reader.rec_path), len(keys), labels, read, num_classes,
                  describe, batch_size=batch_size, image_size=image_size, training=training, seed=seed,
                  shuffle_buffer=shuffle_buffer, input_context=input_context,
                  num_shards=num_shards, shard_index=shard_index, drop_remainder=drop_remainder,
                  normalization=normalization)


def decode_pairs(pairs: VerificationPairs, image_size=IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Decode a verification set to uint8 images; pairs with an undecodable image are dropped.

    Args:
        pairs: from :func:`~keras_facemargin.data.load_bin` or
            :func:`~keras_facemargin.data.load_pairs_txt`.
        image_size: (height, width). Defaults to `(112, 112)`.

    Returns:
        ``(images uint8 (2P', H, W, 3), issame bool (P',))`` where P' counts the pairs kept;
        a warning gives the number of dropped pairs.

    Example:

    >>> from keras_facemargin.data import decode_pairs, load_bin
    >>> images, issame = decode_pairs(load_bin("lfw.bin"))  # doctest: +SKIP
    """
    h, w = _check_size(image_size)
    out = np.zeros((len(pairs.images), h, w, 3), np.uint8)
    ok = np.ones(len(pairs.images), bool)
    for i, data in enumerate(pairs.images):
        try:
            out[i] = decode_image(data, (h, w))
        except ValueError:
            ok[i] = False
    keep = ok[0::2] & ok[1::2]
    if not keep.all():
        warnings.warn(f"{pairs.name}: {int((~ok).sum())} undecodable images; "
                      f"{int((~keep).sum())} of {len(keep)} pairs skipped", RuntimeWarning,
                      stacklevel=2)
    if not keep.any():
        raise ValueError(f"{pairs.name}: no pair has two decodable images")
    return out[np.repeat(keep, 2)], np.asarray(pairs.issame, bool)[keep]
