"""Row 10 of issue 13: MirroredStrategy over 2 logical CPUs, 9 samples, batch 4 (the last global
batch has one sample, so one replica's batch is empty). Prints JSON: the margin state after
``fit`` for the Sequential path and FaceRecognizer, and the losses."""
import json

import numpy as np
import tensorflow as tf

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

import keras_facemargin as kf  # noqa: E402

rng = np.random.default_rng(0)
x = rng.normal(size=(9, 6)).astype("float32")
y = (np.arange(9) % 5).astype("int32")
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {}


def per_replica(head):
    """Each state variable's value on each replica."""
    return [[np.asarray(t).tolist() for t in getattr(v.value, "values", [v.value])]
            for v in head.non_trainable_weights]


for name, make in (("adaface", lambda: kf.AdaMarginLayer(5)),
                   ("curricular", lambda: kf.CurricularMarginLayer(5))):
    with strategy.scope():
        head = make()
        seq = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), head])
        seq.compile(optimizer="sgd", loss=head.loss)
    hist = seq.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    out[f"{name}_sequential"] = {"loss": hist.history["loss"],
                                 "state": per_replica(head)}
    with strategy.scope():
        head = make()
        model = kf.FaceRecognizer(keras.Sequential([keras.Input((6,)), keras.layers.Dense(8)]),
                                  head)
        model.compile(optimizer="sgd")
    hist = model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    out[f"{name}_recognizer"] = {"loss": hist.history["loss"],
                                 "state": per_replica(head)}
print(json.dumps(out))
