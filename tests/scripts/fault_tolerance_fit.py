"""Train 5 epochs with AtomicBackupAndRestore; optionally stall at (epoch, batch) to be killed.

Usage: fault_tolerance_fit.py BACKUP_DIR LOG_PATH OUT_JSON [STALL_EPOCH STALL_BATCH MARKER]
Appends one line per completed epoch to LOG_PATH; writes the final weights to OUT_JSON.
"""

import json
import os
import sys
import time

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
os.environ["CUDA_VISIBLE_DEVICES"] = ""
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_facemargin as kf  # noqa: E402
from keras_facemargin.training.fault_tolerance import AtomicBackupAndRestore  # noqa: E402

backup, log_path, out_path = sys.argv[1:4]
stall = (int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]) if len(sys.argv) > 6 else None
rng = np.random.default_rng(0)
x = rng.normal(size=(80, 6)).astype("float32")
y = rng.integers(0, 4, 80)
head = kf.ArcMarginLayer(4, margin=0.3, scale=8.0)
model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, use_bias=False), head])
model.layers[0].kernel.assign(rng.normal(size=(6, 5)).astype("float32"))
head.kernel.assign(rng.normal(size=(5, 4)).astype("float32").T)  # one centre per row
model.compile(keras.optimizers.SGD(0.1, momentum=0.9), loss=head.loss)


class Log(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        with open(log_path, "a") as f:
            f.write(f"{epoch} {logs['loss']:.8f}\n")

    def on_train_batch_end(self, batch, logs=None):
        if stall and self.model._keras_facemargin_epoch == stall[0] and batch == stall[1]:
            open(stall[2], "w").close()
            time.sleep(600)  # the test kills us here, mid-epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.model._keras_facemargin_epoch = epoch


model.fit(x, y, batch_size=16, epochs=5, shuffle=False, verbose=0,
          callbacks=[AtomicBackupAndRestore(backup, delete_checkpoint=False), Log()])
with open(out_path, "w") as f:
    json.dump([w.tolist() for w in model.get_weights()], f)
