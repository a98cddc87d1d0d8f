"""One of two MultiWorkerMirroredStrategy workers: 5 epochs with AtomicBackupAndRestore.

Usage: fault_tolerance_multiworker_fit.py INDEX PORT0 PORT1 BACKUP_DIR LOG_PATH OUT_JSON
           [KILL_EPOCH KILL_BATCH | KILL_EPOCH end]

Each worker has its own BACKUP_DIR. Appends "begin E" and "end E LOSS" lines to LOG_PATH for
every epoch it starts and completes; writes the final weights to OUT_JSON. With KILL_EPOCH
KILL_BATCH the worker SIGKILLs itself after that batch (0-based); with KILL_EPOCH end, at the
end of that epoch before its checkpoint is written (its peer's checkpoint is then one epoch
ahead). Data: 96 fixed samples, worker i trains on samples i::2, 8 per replica and step, in
order (no shuffling): 6 steps per epoch, the same in every run.
"""

import json
import os
import signal
import sys

index, ports = int(sys.argv[1]), sys.argv[2:4]
backup, log_path, out_path = sys.argv[4:7]
kill = (int(sys.argv[7]), sys.argv[8]) if len(sys.argv) > 8 else None
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["TF_CONFIG"] = json.dumps({
    "cluster": {"worker": [f"localhost:{p}" for p in ports]},
    "task": {"type": "worker", "index": index}})

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_facemargin as kf  # noqa: E402
from keras_facemargin.training.fault_tolerance import AtomicBackupAndRestore  # noqa: E402
from keras_facemargin.training.multiworker import (  # noqa: E402
    enable_multiworker_fit,
    multiworker_strategy,
)

strategy = multiworker_strategy(timeout_seconds=300.0)
rng = np.random.default_rng(0)
x = rng.normal(size=(96, 6)).astype("float32")
y = rng.integers(0, 4, 96)
w_dense = rng.normal(size=(6, 5)).astype("float32")
w_head = rng.normal(size=(5, 4)).astype("float32")


def dataset_fn(context):
    shard = context.input_pipeline_id  # the worker index
    return tf.data.Dataset.from_tensor_slices(
        (x[shard::context.num_input_pipelines], y[shard::context.num_input_pipelines])
    ).batch(context.get_per_replica_batch_size(16))


class Log(keras.callbacks.Callback):
    def _write(self, line):
        with open(log_path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self._write(f"begin {epoch}")

    def on_train_batch_end(self, batch, logs=None):
        if kill and kill[0] == self.epoch and kill[1] == str(batch):
            os.kill(os.getpid(), signal.SIGKILL)  # mid-epoch: batches 0..batch trained

    def on_epoch_end(self, epoch, logs=None):
        if kill and kill[0] == epoch and kill[1] == "end":
            os.kill(os.getpid(), signal.SIGKILL)  # epoch trained, its checkpoint not written
        self._write(f"end {epoch} {float(np.ravel(logs['loss'])[0]):.8f}")


with strategy.scope():
    head = kf.ArcMarginLayer(4, margin=0.3, scale=8.0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, use_bias=False), head])
    model.layers[0].kernel.assign(w_dense)
    head.kernel.assign(w_head.T)  # one centre per row
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), loss=head.loss)
enable_multiworker_fit(model)
dataset = strategy.distribute_datasets_from_function(dataset_fn)
# Log runs before the backup callback: a kill at an epoch's end precedes that epoch's checkpoint.
model.fit(dataset, epochs=5, verbose=0, shuffle=False,
          callbacks=[Log(), AtomicBackupAndRestore(backup, delete_checkpoint=False)])
with open(out_path, "w") as f:
    json.dump([w.tolist() for w in model.get_weights()], f)
os._exit(0)  # TensorFlow's collective threads can keep the interpreter alive
