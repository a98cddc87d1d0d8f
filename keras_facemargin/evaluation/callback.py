"""A Keras callback that runs the verification protocol during training (the only module of
:mod:`keras_facemargin.evaluation` that imports Keras)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import keras
import numpy as np

from keras_facemargin._api import register
from keras_facemargin.evaluation.verification import DEFAULT_FARS, evaluate_pairs
from keras_facemargin.preprocessing import get_normalization


def _standardize(images: np.ndarray, normalization=None) -> np.ndarray:
    if images.dtype == np.uint8:
        return get_normalization(normalization).apply(images)
    return images.astype(np.float32)


def embed_images(embed: Callable, images, batch_size: int = 64, flip: bool = False,
                 normalization=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Embeddings of images (and of their mirror images for the flip test), batch by batch.

    Args:
        embed: a Keras model or callable mapping a float32 batch to (B, D) embeddings.
        images: uint8 pixels (N, H, W, 3), standardized here by ``normalization``, or float
            inputs of any shape passed unchanged (no flip possible then unless 4-D).
        batch_size: images per call. Defaults to `64`.
        flip: also embed the horizontally mirrored images. Defaults to `False`.
        normalization: the model's pixel normalization
            (:func:`keras_facemargin.preprocessing.get_normalization`). Defaults to `None`:
            (x - 127.5) / 128.

    Returns:
        ``(embeddings (N, D), mirrored embeddings (N, D) or None)`` as float32 NumPy arrays.

    Example:

    >>> import keras, numpy as np
    >>> from keras_facemargin.evaluation import embed_images
    >>> net = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    >>> embed_images(net, np.zeros((3, 4, 4, 3), np.uint8), flip=True)[1].shape
    (3, 2)
    """
    images = np.asarray(images)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an integer >= 1. Received: batch_size={batch_size!r}")
    if flip and images.ndim != 4:
        raise ValueError("`flip` needs images of shape (N, H, W, C). Received: images with shape "
                         f"{images.shape}")
    outs, flips = [], []
    for start in range(0, len(images), batch_size):
        x = _standardize(images[start:start + batch_size], normalization)
        outs.append(keras.ops.convert_to_numpy(embed(x, training=False)))
        if flip:
            flips.append(keras.ops.convert_to_numpy(embed(x[:, :, ::-1], training=False)))
    emb = np.concatenate(outs).astype(np.float32)
    return emb, (np.concatenate(flips).astype(np.float32) if flip else None)


def _embedding_part(model) -> Callable:
    """The model without its margin head: the layers of a Sequential model but the last."""
    from keras_facemargin.layers.head import MarginHead
    from keras_facemargin.models.face_recognizer import FaceRecognizer

    if isinstance(model, FaceRecognizer):  # the task model names its embedding part
        return model.backbone
    layers = getattr(model, "layers", [])
    if isinstance(model, keras.Sequential) and layers and isinstance(layers[-1], MarginHead):
        body = layers[:-1]

        def embed(x, training=False):
            for layer in body:
                x = layer(x, training=training)
            return x
        return embed
    raise ValueError("`embedding_model` is needed unless the trained model is a FaceRecognizer "
                     "or a Sequential whose last layer is a margin head. Received: "
                     "embedding_model=None with model "
                     f"{type(model).__name__}")


@register
class VerificationCallback(keras.callbacks.Callback):
    """Verification accuracy (10-fold, flip test) on pair sets every N epochs or steps.

    The numbers go into the epoch ``logs`` (so :class:`keras.callbacks.History` and a
    ``keras.callbacks.TensorBoard`` listed after this callback record them) as
    ``<set>_accuracy`` (10-fold), ``<set>_accuracy_std``, ``<set>_auc``, ``<set>_tar@far=<far>``
    ("TAR@FAR (one ROC)": best TPR on one ROC over all pairs) and ``<set>_val@far=<far>`` ("VAL@FAR
    (10-fold, insightface)": threshold interpolated on 9 folds, read on the 10th); step-based
    evaluations are kept in :attr:`history` and written to ``log_dir`` when given. The best model
    (highest ``monitor``) is saved atomically to ``best_model_path``.

    Args:
        pairs: ``{name: (images uint8 (2P, H, W, 3), issame (P,))}``, e.g. from
            :func:`keras_facemargin.data.decode_pairs`.
        embedding_model: maps standardized images to embeddings. Defaults to `None`: the trained
            model minus its last layer, for a Sequential model ending in a margin head.
        every_n_epochs: evaluate at the end of every N-th epoch (0 = never). Defaults to `1`.
        every_n_steps: also evaluate every N training batches. Defaults to `None`.
        flip_test: add the embeddings of the mirrored images. Defaults to `True`.
        batch_size: images per embedding call. Defaults to `64`.
        fars: false-accept rates of the TAR@FAR and VAL@FAR logs. Defaults to
            `(1e-2, 1e-3, 1e-4)`.
        best_model_path: ``.keras`` path where the best model is kept. Defaults to `None`.
        monitor: log key deciding the best model. Defaults to `None` (the first set's accuracy).
        log_dir: TensorBoard folder for the step-based evaluations. Defaults to `None`.
        verbose: print one line per evaluation. Defaults to `1`.
        normalization: the pixel normalization the model is trained with (applied to the
            uint8 pair images; :func:`keras_facemargin.preprocessing.get_normalization`).
            Defaults to `None`: (x - 127.5) / 128.

    Returns:
        A ``keras.callbacks.Callback``.

    Example:

    >>> from keras_facemargin.data import decode_pairs, load_bin
    >>> from keras_facemargin.evaluation import VerificationCallback
    >>> lfw = decode_pairs(load_bin("lfw.bin"))  # doctest: +SKIP
    >>> cb = VerificationCallback({"lfw": lfw}, best_model_path="best.keras")  # doctest: +SKIP
    >>> model.fit(train, epochs=20, callbacks=[cb])  # doctest: +SKIP
    """

    def __init__(self, pairs: Mapping, embedding_model=None, every_n_epochs: int = 1,
                 every_n_steps: int | None = None, flip_test: bool = True, batch_size: int = 64,
                 fars=DEFAULT_FARS, best_model_path: str | None = None,
                 monitor: str | None = None, log_dir: str | None = None, verbose: int = 1,
                 normalization=None):
        super().__init__()
        if not isinstance(pairs, Mapping) or not pairs:
            raise ValueError("`pairs` must be a non-empty dict {name: (images, issame)}. "
                             f"Received: pairs={type(pairs).__name__}")
        self.pairs = {}
        for name, value in pairs.items():
            images, issame = value
            images, issame = np.asarray(images), np.asarray(issame, bool)
            if len(images) != 2 * len(issame) or not len(issame):
                raise ValueError(f"`pairs[{name!r}]` must hold 2 images per pair. Received: "
                                 f"{len(images)} images for {len(issame)} pairs")
            self.pairs[str(name)] = (images, issame)
        for arg, v in (("every_n_epochs", every_n_epochs), ("every_n_steps", every_n_steps or 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"`{arg}` must be an integer >= 0. Received: {arg}={v!r}")
        if best_model_path is not None and not str(best_model_path).endswith(".keras"):
            raise ValueError("`best_model_path` must end in .keras. Received: "
                             f"best_model_path={best_model_path!r}")
        self.embedding_model = embedding_model
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps or 0
        self.flip_test = bool(flip_test)
        self.batch_size = batch_size
        self.fars = tuple(float(f) for f in fars)
        self.best_model_path = None if best_model_path is None else str(best_model_path)
        self.monitor = monitor or f"{next(iter(self.pairs))}_accuracy"
        self.log_dir = log_dir
        self.verbose = verbose
        self.normalization = get_normalization(normalization)
        self.best = -np.inf
        self.history: list[dict] = []  # one dict per evaluation, with "epoch" and "step"
        self._step = 0
        self._writer = None

    def get_config(self) -> dict:
        """Hyper-parameters (the pair arrays and the embedding model are not serialized)."""
        return {"every_n_epochs": self.every_n_epochs, "every_n_steps": self.every_n_steps,
                "flip_test": self.flip_test, "batch_size": self.batch_size,
                "fars": list(self.fars), "best_model_path": self.best_model_path,
                "monitor": self.monitor, "log_dir": self.log_dir, "verbose": self.verbose,
                "normalization": [self.normalization.mean, self.normalization.std]}

    def evaluate(self) -> dict[str, float]:
        """Run the protocol on every set now; returns the log entries."""
        embed = self.embedding_model or _embedding_part(self.model)
        logs = {}
        for name, (images, issame) in self.pairs.items():
            emb, flipped = embed_images(embed, images, self.batch_size, self.flip_test,
                                        self.normalization)
            rep = evaluate_pairs(emb, issame, flipped, fars=self.fars)
            logs[f"{name}_accuracy"] = rep.accuracy
            logs[f"{name}_accuracy_std"] = rep.accuracy_std
            logs[f"{name}_auc"] = rep.auc
            for far, tar in rep.tar.items():
                logs[f"{name}_tar@far={far:g}"] = tar  # one ROC over all pairs
            for far, val in rep.val.items():
                logs[f"{name}_val@far={far:g}"] = val.val  # 10-fold, insightface
        return logs

    def _record(self, logs: dict, epoch: int) -> None:
        self.history.append({"epoch": epoch, "step": self._step, **logs})
        if self.verbose:
            text = ", ".join(f"{k} (10-fold) {v:.4f}" for k, v in logs.items()
                             if k.endswith("accuracy"))
            print(f"\nverification (epoch {epoch + 1}, step {self._step}): {text}", flush=True)
        if self.log_dir is not None:
            import tensorflow as tf

            if self._writer is None:
                self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "verification"))
            from tensorflow.core.framework import summary_pb2

            # what tf.summary.scalar writes, without needing the tensorboard package
            meta = summary_pb2.SummaryMetadata()
            meta.plugin_data.plugin_name = "scalars"
            with self._writer.as_default():
                for k, v in logs.items():
                    tf.summary.write(k, tf.constant(float(v), tf.float32), step=self._step,
                                     metadata=meta)
            self._writer.flush()
        value = logs.get(self.monitor)
        if value is None:
            raise ValueError(f"`monitor` must be one of {sorted(logs)}. Received: monitor={self.monitor!r}")
        if value > self.best:
            self.best = value
            if self.best_model_path is not None:
                self._save_best()

    def _save_best(self) -> None:
        from keras_facemargin._io import atomic_path

        with atomic_path(self.best_model_path) as tmp:
            self.model.save(tmp)

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self.every_n_steps and self._step % self.every_n_steps == 0:
            self._record(self.evaluate(), self._epoch)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.every_n_epochs and (epoch + 1) % self.every_n_epochs == 0:
            result = self.evaluate()
            self._record(result, epoch)
            if logs is not None:
                logs.update(result)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
