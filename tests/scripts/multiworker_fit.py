"""model.fit of a small ArcFace model under a strategy; prints JSON (weights, history).

Usage: multiworker_fit.py single | mirrored | worker INDEX PORT0 PORT1 [alone]
"""

import json
import os
import sys

mode = sys.argv[1]
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
os.environ["CUDA_VISIBLE_DEVICES"] = ""
if mode == "worker":
    index, ports = int(sys.argv[2]), sys.argv[3:5]
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"localhost:{p}" for p in ports]},
        "task": {"type": "worker", "index": index}})

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

if mode == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

import keras_facemargin as kf  # noqa: E402
from keras_facemargin.training.multiworker import (  # noqa: E402
    enable_multiworker_fit,
    multiworker_strategy,
)

if mode == "worker":
    timeout = 5.0 if sys.argv[-1] == "alone" else 300.0
    try:
        strategy = multiworker_strategy(timeout_seconds=timeout)
    except TimeoutError as err:
        print(json.dumps({"timeout_error": str(err)}), flush=True)
        os._exit(3)  # TensorFlow's collective threads would keep the interpreter alive
elif mode == "mirrored":
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
else:
    strategy = tf.distribute.get_strategy()

rng = np.random.default_rng(0)
x = rng.normal(size=(96, 6)).astype("float32")
y = rng.integers(0, 4, 96)
w_dense = rng.normal(size=(6, 5)).astype("float32") * 0.5
w_head = rng.normal(size=(5, 4)).astype("float32")


class CountBatches(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


with strategy.scope():
    head = kf.ArcMarginLayer(4, margin=0.3, scale=8.0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, use_bias=False), head])
    model.layers[0].kernel.assign(w_dense)
    head.kernel.assign(w_head.T)  # one centre per row
    jit = os.environ.get("FACEMARGIN_TEST_JIT") == "1"  # workers: XLA for the local part
    model.compile(keras.optimizers.SGD(0.2), loss=head.loss, jit_compile=jit)
enable_multiworker_fit(model)
counter = CountBatches()
dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
history = model.fit(dataset, epochs=3, verbose=2, callbacks=[counter]).history
print(json.dumps({"loss": history["loss"], "batches": counter.batches,
                  "replicas": strategy.num_replicas_in_sync,
                  "weights": [w.tolist() for w in model.get_weights()]}))
