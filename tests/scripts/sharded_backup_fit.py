"""``AtomicBackupAndRestore`` with sharded class centres (``model_parallel=True``) under
MirroredStrategy over 2 logical CPUs: a fit interrupted in epoch 2 and resumed by a fresh model
(other initial weights) against the same fit uninterrupted; the same backup resumed over 4
replicas (the centres re-sharded) and on one device (a full head: refused), and a one-device
backup resumed under the strategy (refused).

Usage: ``sharded_backup_fit.py OUT_DIR`` (2 logical CPUs), then ``sharded_backup_fit.py OUT_DIR
four`` (4 logical CPUs: resumes OUT_DIR/backup_four, compares with OUT_DIR/reference.npz; a
separate process, as TensorFlow's collectives refuse a second MirroredStrategy of another size in
one process). Each prints one JSON line.
"""
import json
import os
import shutil
import sys

import numpy as np
import tensorflow as tf

OUT, FOUR = sys.argv[1], sys.argv[2:] == ["four"]
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * (4 if FOUR else 2))

import keras  # noqa: E402

from keras_facemargin import AdaMarginLayer, FaceRecognizer  # noqa: E402
from keras_facemargin.training.fault_tolerance import AtomicBackupAndRestore  # noqa: E402

B, D, C, EPOCHS, STOP = 8, 8, 12, 4, 2  # 2 steps an epoch; the run stops inside epoch STOP
rng = np.random.default_rng(0)
x = rng.normal(size=(2 * B, 6)).astype("float32")
y = rng.integers(0, C, 2 * B).astype("int32")
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(B)  # each epoch: the same 2 batches


def initial():
    return {"backbone": (rng.normal(size=(6, D)) * 0.5).astype("float32"),
            "centres": rng.normal(size=(C, D)).astype("float32")}


def make_model(init):
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(D)])
    backbone.layers[0].kernel.assign(init["backbone"])
    model = FaceRecognizer(backbone, AdaMarginLayer(C, scale=16.0, model_parallel=True))
    model.head.assign_centres(init["centres"])
    # a learning-rate schedule: the resumed run must also have the step count back
    lr = keras.optimizers.schedules.ExponentialDecay(0.2, decay_steps=1, decay_rate=0.9)
    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9, weight_decay=5e-3),
                  jit_compile=False)
    model.optimizer.build(model.trainable_variables)  # its slots exist for snapshot()
    return model


def snapshot(model) -> dict:
    """Everything a resumed run must have back, as NumPy (sharded variables gathered)."""
    strategy = tf.distribute.get_strategy()
    head = model.head
    return {
        "centres": np.asarray(head.gathered(head.kernel)),
        "velocity": (np.asarray(head.gathered(head.centre_velocity)) if head.shards > 1
                     else None),
        "state": [[float(np.asarray(c)) for c in strategy.experimental_local_results(v.value)]
                  for v in head.margin_state.values()],
        "backbone": [np.asarray(w) for w in model.backbone.get_weights()],
        "optimizer": [np.asarray(v) for v in model.optimizer.variables],
    }


def max_diff(a: dict, b: dict) -> dict:
    out = {}
    for key in a:
        if a[key] is None:
            continue
        pairs = zip(a[key], b[key], strict=True) if isinstance(a[key], list) else [(a[key],
                                                                                   b[key])]
        out[key] = max(float(np.abs(np.asarray(p) - np.asarray(q)).max()) for p, q in pairs)
    return out


class Interrupt(Exception):
    pass


class StopInside(keras.callbacks.Callback):
    """Raise after the first step of epoch STOP: epochs 0..STOP-1 are committed, epoch STOP's
    first step is in the model but in no checkpoint (a crash mid-epoch)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == STOP and batch == 0:
            raise Interrupt


class Epochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(epoch)


first, other = initial(), initial()
if FOUR:  # the backup of 2 replicas resumed over 4: 3 centres each instead of 6
    reference = np.load(os.path.join(OUT, "reference.npz"), allow_pickle=True)
    with tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(4)]).scope():
        four = make_model(other)
        losses = four.fit(data, epochs=EPOCHS, verbose=0, callbacks=[
            AtomicBackupAndRestore(os.path.join(OUT, "backup_four"))]).history["loss"]
        want = reference["snapshot"].item()
        want["state"] = [[replicas[0]] * 4 for replicas in want["state"]]  # every replica's
        print(json.dumps({
            "replicas": 4, "shard_rows": int(four.head.kernel.shape[0]),
            "loss_err": max(abs(a - b) for a, b in zip(losses, reference["losses"][STOP:],
                                                       strict=True)),
            "resumed": max_diff(snapshot(four), want)}), flush=True)
    sys.exit(0)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
result = {"replicas": strategy.num_replicas_in_sync}
backup = os.path.join(OUT, "backup")
with strategy.scope():
    # the reference: EPOCHS epochs without interruption (and without the callback)
    reference = make_model(first)
    ref_losses = reference.fit(data, epochs=EPOCHS, verbose=0).history["loss"]
    want = snapshot(reference)
    np.savez(os.path.join(OUT, "reference.npz"), losses=ref_losses,
             snapshot=np.array(want, dtype=object))

    interrupted = make_model(first)
    try:
        interrupted.fit(data, epochs=EPOCHS, verbose=0, callbacks=[
            AtomicBackupAndRestore(backup, delete_checkpoint=False), StopInside()])
        result["interrupted"] = False
    except Interrupt:
        result["interrupted"] = True
    with open(os.path.join(backup, "state.json")) as f:
        result["committed_epochs"] = json.load(f)["epoch"]
    for copy in ("backup_one", "backup_four"):  # for the runs below
        shutil.copytree(backup, os.path.join(OUT, copy))

    resumed = make_model(other)  # other initial weights: all of it must come from the backup
    result["fresh_differs"] = max_diff(snapshot(resumed), snapshot(interrupted))
    epochs = Epochs()
    losses = resumed.fit(data, epochs=EPOCHS, verbose=0, callbacks=[
        AtomicBackupAndRestore(backup), epochs]).history["loss"]
    got = snapshot(resumed)
result.update(
    epochs_run=epochs.seen,
    loss_err=max(abs(a - b) for a, b in zip(losses, ref_losses[STOP:], strict=True)),
    resumed=max_diff(got, want),
    velocity_norm=float(np.abs(want["velocity"]).max()),
    shard_rows=int(resumed.head.kernel.shape[0]),
    backup_removed=not os.path.exists(backup),
)


def one_device_resume_error(folder: str) -> dict:
    """Resume on one device (the head is a full head there): the outcome, and whether the
    model and the folder were left as they were."""
    model = make_model(other)
    before = snapshot(model)
    files = sorted(os.listdir(folder))
    try:
        model.fit(data, epochs=EPOCHS, verbose=0, callbacks=[AtomicBackupAndRestore(folder)])
        error = None
    except ValueError as err:
        error = str(err)
    return {"error": error, "shards": model.head.shards,
            "unchanged": max(max_diff(snapshot(model), before).values()) == 0.0,
            "files_kept": os.path.isdir(folder) and sorted(os.listdir(folder)) == files}


result["to_one_device"] = one_device_resume_error(os.path.join(OUT, "backup_one"))

# the other way: a backup written on one device (full head), resumed under the strategy
single_backup = os.path.join(OUT, "single_backup")
make_model(first).fit(data, epochs=1, verbose=0, callbacks=[
    AtomicBackupAndRestore(single_backup, delete_checkpoint=False)])
with strategy.scope():
    model = make_model(other)
    before = snapshot(model)
    try:
        model.fit(data, epochs=EPOCHS, verbose=0,
                  callbacks=[AtomicBackupAndRestore(single_backup)])
        error = None
    except ValueError as err:
        error = str(err)
    result["to_two_replicas"] = {
        "error": error, "shards": model.head.shards,
        "unchanged": max(max_diff(snapshot(model), before).values()) == 0.0}
print(json.dumps(result), flush=True)
