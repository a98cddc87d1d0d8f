"""Fit a small ArcFace model with jit_compile=True forced under a strategy; print the outcome.

Usage: xla_strategy_limits.py mirrored | worker INDEX PORT0 PORT1
Prints one JSON line: {"ok": true, "loss": [...]} or {"ok": false, "error": "<type>: <message>"}.
No package check runs first: this records what TensorFlow itself does.
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
    strategy = multiworker_strategy(timeout_seconds=120.0)
else:
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

rng = np.random.default_rng(0)
x = rng.normal(size=(64, 6)).astype("float32")
y = rng.integers(0, 4, 64)
with strategy.scope():
    head = kf.ArcMarginLayer(4, margin=0.3, scale=8.0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, use_bias=False), head])
    model.compile(keras.optimizers.SGD(0.2), loss=head.loss, jit_compile=True)
if mode == "worker":
    enable_multiworker_fit(model)  # switches XLA off with a warning: force it back on
model.jit_compile = True
dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
try:
    history = model.fit(dataset, epochs=1, verbose=0).history
    print(json.dumps({"ok": True, "loss": history["loss"]}), flush=True)
except Exception as err:  # noqa: BLE001 - we report whatever TensorFlow raises
    message = " ".join(str(err).split())[:1500]
    print(json.dumps({"ok": False, "error": f"{type(err).__name__}: {message}"}), flush=True)
os._exit(0)  # collective threads may keep the interpreter alive after a failed step
