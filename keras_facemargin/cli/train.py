"""``facemargin train``: train a face-recognition backbone with a margin head.

    facemargin train --data DIR|train.rec --backbone mobilefacenet --head arcface
                     [--strategy default|mirrored|multiworker] [--epochs 10] [--batch-size 128]
                     [--lr 0.1] [--jit-compile] [--mixed-precision] [--checkpoint-dir DIR]
                     [--sample-rate 1.0]

The progress bar shows images/s (:class:`ThroughputCallback`); checkpoints are written each
epoch by :class:`~keras_facemargin.training.fault_tolerance.AtomicBackupAndRestore` (a
restarted run resumes from the last completed epoch) and the final model is saved as
``CHECKPOINT_DIR/final.keras``. A summary (epochs, final loss, images/s, checkpoint) ends the run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import keras

from keras_facemargin._api import register

BACKBONES = ("mobilefacenet", "iresnet18", "iresnet34", "iresnet50", "iresnet100", "tiny")
HEADS = {"arcface": "ArcMarginLayer", "cosface": "CosMarginLayer",
         "combined": "CombinedMarginLayer", "normface": "NormSoftmaxLayer",
         "subcenter": "SubCenterArcMarginLayer", "curricular": "CurricularMarginLayer",
         "adaface": "AdaMarginLayer", "magface": "MagMarginLayer",
         "elastic": "ElasticMarginLayer", "softmax": "SoftmaxLayer"}
STRATEGIES = ("default", "mirrored", "multiworker")


@register
class ThroughputCallback(keras.callbacks.Callback):
    """Adds ``images_per_s`` to the batch and epoch logs (so the progress bar shows it).

    The batch value is the running mean over the epoch so far (images seen / wall time since the
    epoch's first batch ended, which leaves out the first batch's tracing and compilation);
    the epoch value is the same figure at the epoch's end.

    Args:
        batch_size: images per step (the global batch size).

    Returns:
        A Keras callback; ``history.history["images_per_s"]`` holds one value per epoch.

    Example:

    >>> cb = ThroughputCallback(batch_size=128)
    >>> model.fit(dataset, callbacks=[cb])  # doctest: +SKIP
    """

    def __init__(self, batch_size: int):
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}")
        self.batch_size = batch_size
        self._start = None
        self._images = 0
        self.last = float("nan")

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._images = None, 0

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self._start is None:  # first batch: tracing/compilation, not counted
            self._start = now
            return
        self._images += self.batch_size
        self.last = self._images / max(now - self._start, 1e-9)
        if logs is not None:
            logs["images_per_s"] = self.last

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["images_per_s"] = self.last

    def get_config(self):
        return {"batch_size": self.batch_size}


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``train`` on the ``facemargin`` sub-command parser."""
    p = subparsers.add_parser("train", help="train a backbone with a margin head",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True,
                   help="image folder (one sub-folder per identity) or insightface train.rec")
    p.add_argument("--backbone", default="mobilefacenet", choices=BACKBONES,
                   help="backbone (tiny: a small CNN for tests; default mobilefacenet)")
    p.add_argument("--head", default="arcface", choices=sorted(HEADS), help="margin head")
    p.add_argument("--strategy", default="default", choices=STRATEGIES,
                   help="tf.distribute strategy (multiworker reads TF_CONFIG)")
    p.add_argument("--epochs", type=int, default=10, help="epochs (default 10)")
    p.add_argument("--batch-size", type=int, default=128, help="global batch size (default 128)")
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (default 0.1)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--embedding-size", type=int, default=512, help="embedding size (default 512)")
    p.add_argument("--image-size", type=int, default=112, help="square input size (default 112)")
    p.add_argument("--jit-compile", action="store_true", help="XLA-compile the train step")
    p.add_argument("--mixed-precision", choices=("mixed_float16", "mixed_bfloat16"),
                   nargs="?", const="mixed_float16", default=None,
                   help="mixed-precision policy (bare flag: mixed_float16)")
    p.add_argument("--checkpoint-dir", default="checkpoints",
                   help="per-epoch checkpoints and final.keras (default ./checkpoints)")
    p.add_argument("--sample-rate", type=float, default=1.0,
                   help="Partial FC sample rate in (0, 1], any head (default 1.0)")
    p.add_argument("--model-parallel", action="store_true",
                   help="shard the class centres over the replicas of --strategy mirrored or "
                        "multiworker (C / N per replica; with --sample-rate each replica "
                        "samples its shard, PartialFC v2)")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="limit steps per epoch")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras verbosity")
    p.set_defaults(func=run)
    return p


class _UsageError(ValueError):
    pass


def _check_args(args) -> None:
    if args.epochs < 1:
        raise _UsageError(f"--epochs must be >= 1. Received: --epochs {args.epochs}")
    if args.batch_size < 1:
        raise _UsageError(f"--batch-size must be >= 1. Received: --batch-size {args.batch_size}")
    if not args.lr > 0:
        raise _UsageError(f"--lr must be > 0. Received: --lr {args.lr}")
    if not 0.0 < args.sample_rate <= 1.0:
        raise _UsageError(f"--sample-rate must be in (0, 1]. Received: --sample-rate "
                          f"{args.sample_rate}")
    if args.image_size < 16 or args.image_size % 16:
        raise _UsageError(f"--image-size must be a multiple of 16 (>= 16). Received: "
                          f"--image-size {args.image_size}")
    if args.model_parallel and args.strategy == "default":
        raise _UsageError("--model-parallel shards the class centres over the replicas of a "
                          "strategy: use it with --strategy mirrored or multiworker")
    if not os.path.exists(args.data):
        raise _UsageError(f"--data does not exist: {args.data!r}")


def _strategy(name: str):
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    try:
        from keras_facemargin.training.multiworker import multiworker_strategy
    except ImportError as err:  # pragma: no cover - shipped with the package
        raise _UsageError(f"--strategy multiworker is not available yet ({err})") from err
    if "TF_CONFIG" not in os.environ:
        raise _UsageError("--strategy multiworker reads the cluster from the TF_CONFIG "
                          "environment variable, which is not set")
    return multiworker_strategy()


def _backbone(name: str, image_size: int, embedding_size: int) -> keras.Model:
    shape = (image_size, image_size, 3)
    if name == "tiny":
        inputs = keras.Input(shape)
        x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
        x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.Dense(embedding_size)(x)
        return keras.Model(inputs, x, name="tiny")
    try:
        import keras_facemargin.backbones as backbones
    except ImportError as err:
        raise _UsageError(f"--backbone {name}: keras_facemargin.backbones is not available "
                          f"({err}); use --backbone tiny") from err
    factory = getattr(backbones, name, None)
    if factory is None:
        raise _UsageError(f"--backbone {name} is not available in keras_facemargin.backbones "
                          "yet; use --backbone tiny")
    return factory(input_shape=shape, embedding_size=embedding_size)


def _data(args, strategy):
    from keras_facemargin.data.pipeline import image_folder_dataset, recordio_dataset

    kwargs = dict(batch_size=args.batch_size, image_size=(args.image_size, args.image_size),
                  seed=args.seed)
    if os.path.isdir(args.data):
        data = image_folder_dataset(args.data, **kwargs)
    elif args.data.endswith(".rec"):
        data = recordio_dataset(args.data, **kwargs)
    else:
        raise _UsageError(f"--data must be an image folder or a .rec file. Received: {args.data!r}")
    if data.num_classes < 2:
        raise _UsageError(f"--data must hold at least two identities to train a classifier "
                          f"head. Received: {data.num_classes} identity in {args.data!r}")
    bad, tried, first = data.unreadable()
    if tried and bad == tried:
        every = "every one" if tried == data.num_images else f"all {tried} tried"
        raise _UsageError(f"--data: no readable image: {bad} unreadable files ({every} of "
                          f"{data.num_images}; first: {first})")
    if data.num_images < args.batch_size:
        raise _UsageError(f"--batch-size {args.batch_size} is larger than the data set "
                          f"({data.num_images} images): no full batch to train on")
    return data


def _build_model(args, num_classes: int):
    from keras_facemargin import layers as head_layers
    from keras_facemargin.models import FaceRecognizer
    from keras_facemargin.training.sparse_sgd import RowSparseSGD

    backbone = _backbone(args.backbone, args.image_size, args.embedding_size)
    head = getattr(head_layers, HEADS[args.head])(num_classes, sample_rate=args.sample_rate,
                                                  seed=args.seed,
                                                  model_parallel=args.model_parallel)
    # the labels reach the head in FaceRecognizer's train step: one margin, applied once
    model = FaceRecognizer(backbone, head, name=f"{args.backbone}_{args.head}")
    # dense gradients: Keras' SGD exactly; Partial FC's sampled centres: row-sparse momentum
    optimizer = RowSparseSGD(args.lr, momentum=args.momentum)
    model.compile(optimizer=optimizer, jit_compile=args.jit_compile)
    return model


def _save_atomic(model: keras.Model, path: str) -> None:
    from keras_facemargin._io import atomic_path

    with atomic_path(path) as tmp:
        model.save(tmp)


def run(args) -> int:
    """Run ``facemargin train``; returns the exit status (0 ok, 2 bad arguments)."""
    try:
        _check_args(args)
        if args.mixed_precision:
            keras.mixed_precision.set_global_policy(args.mixed_precision)
        keras.utils.set_random_seed(args.seed)
        strategy = _strategy(args.strategy)
        data = _data(args, strategy)
        if args.sample_rate < 1.0:
            from keras_facemargin.training.partial_fc import num_sampled_classes

            shards = strategy.num_replicas_in_sync if args.model_parallel else 1
            classes = data.num_classes // shards  # a batch may fall in one shard
            k = num_sampled_classes(max(classes, 1), args.sample_rate)
            if k < args.batch_size:
                where = f" of each of the {shards} shards" if shards > 1 else ""
                raise _UsageError(
                    f"--batch-size {args.batch_size} is larger than the number of sampled classes"
                    f"{where}: ceil({classes} x --sample-rate {args.sample_rate}) = {k}")
        with strategy.scope():
            model = _build_model(args, data.num_classes)
        if args.strategy != "default":
            from keras_facemargin.training.multiworker import enable_multiworker_fit

            enable_multiworker_fit(model)
    except (_UsageError, ValueError, FileNotFoundError) as err:
        print(f"facemargin train: error: {err}", file=sys.stderr)
        return 2
    from keras_facemargin.training.fault_tolerance import AtomicBackupAndRestore

    os.makedirs(args.checkpoint_dir, exist_ok=True)
    worker = ""
    if args.strategy == "multiworker":
        worker = f"worker{strategy.cluster_resolver.task_id}"
    backup = os.path.join(args.checkpoint_dir, "backup", worker) if worker else \
        os.path.join(args.checkpoint_dir, "backup")
    throughput = ThroughputCallback(args.batch_size)
    dataset = data.dataset
    start = time.perf_counter()
    history = model.fit(dataset, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                        callbacks=[throughput, AtomicBackupAndRestore(backup,
                                                                      delete_checkpoint=False)],
                        verbose=args.verbose)
    elapsed = time.perf_counter() - start
    losses = history.history.get("loss", [])
    skipped = data.skipped.distinct
    if skipped:
        print(f"facemargin train: skipped {skipped} unreadable image(s) of {data.num_images} "
              "(named in the warnings above)", file=sys.stderr)
    if skipped >= data.num_images:
        print(f"facemargin train: error: no image could be read ({skipped} of "
              f"{data.num_images} unreadable); no model saved", file=sys.stderr)
        return 2
    final = os.path.join(args.checkpoint_dir, f"final{('_' + worker) if worker else ''}.keras")
    _save_atomic(model, final)
    rates = [r for r in history.history.get("images_per_s", []) if r == r]
    print("\n| epochs | final loss | images/s | wall s | checkpoint |")
    print("|---|---|---|---|---|")
    print(f"| {len(losses)} | {losses[-1] if losses else float('nan'):.4f} | "
          f"{rates[-1] if rates else float('nan'):.1f} | {elapsed:.1f} | {final} |")
    return 0
