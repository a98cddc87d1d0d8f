"""Run by tests/test_heads_distributed.py in a fresh process (logical devices need a fresh TF)."""

import json
import os
import sys

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_facemargin as kf  # noqa: E402

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
rng = np.random.default_rng(0)
x = rng.normal(size=(16, 6)).astype("float32")
y = rng.integers(0, 4, 16)
out = {}
for name in sys.argv[1:]:
    with strategy.scope():
        head = (getattr(kf, name)(4, scale=8.0) if name != "SphereMarginLayer"
                else kf.SphereMarginLayer(4))
        model = keras.Sequential([keras.Input((6,)), head])
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss=head.loss)
    kernel0 = np.array(head.kernel.numpy()).T  # the peers' (D, C) layout
    hist = model.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0).history
    state = {}
    for key, var in head.margin_state.items():
        tf_var = getattr(var, "_value", var)  # the tf.distribute MirroredVariable
        values = [float(v.numpy()) for v in tf_var.values]
        state[key] = values
    out[name] = {"loss": hist["loss"], "kernel0": kernel0.tolist(), "state": state}
print(json.dumps(out))
