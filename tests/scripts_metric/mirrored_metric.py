"""Run by tests/test_metric_losses_distributed.py in a fresh process (2 logical CPU devices).

Prints JSON: per case, what 2 replicas computed and what 1 device computed on the same
global batch.
"""

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
y = rng.integers(0, 4, 16).astype("int64")
w0 = rng.normal(size=(6, 5)).astype("float32")
out = {}


def tape_step(loss_fn, w, xb, yb):
    with tf.GradientTape() as tape:
        loss = loss_fn(yb, tf.matmul(xb, w))
    return loss, tape.gradient(loss, w)


# 1. global mining: loss and gradient of 2 replicas == 1 device on the concatenated batch
for mining in sys.argv[1:]:
    loss_fn = kf.TripletLoss(mining=mining, distance="l2", global_mining=True)
    with strategy.scope():
        w = tf.Variable(w0)
    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(16))
    xb, yb = next(iter(dataset))
    loss, grad = strategy.run(tf.function(lambda a, b, f=loss_fn, v=w: tape_step(f, v, a, b)), (xb, yb))
    loss = strategy.reduce("SUM", loss, axis=None)
    grad = strategy.reduce("SUM", grad, axis=None)
    local = kf.TripletLoss(mining=mining, distance="l2")
    loss_1, grad_1 = tape_step(local, tf.Variable(w0), tf.constant(x), tf.constant(y))
    per_replica = strategy.run(
        tf.function(lambda a, b, f=local, v=w: tape_step(f, v, a, b)[0]), (xb, yb))
    out[f"global_{mining}"] = {
        "loss_2": float(loss), "grad_2": grad.numpy().tolist(),
        "loss_1": float(loss_1), "grad_1": grad_1.numpy().tolist(),
        "local_mining_loss_2": float(strategy.reduce("SUM", per_replica, axis=None)),
    }

# 2. model.fit with global mining: one SGD step equals the single-device step
def fit_once(scope_strategy):
    with scope_strategy.scope():
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, use_bias=False)])
        model.layers[0].kernel.assign(w0)
        model.compile(keras.optimizers.SGD(0.5),
                      loss=kf.TripletLoss(mining="all", distance="l2", global_mining=True))
    hist = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0).history
    return hist["loss"][0], model.layers[0].kernel.numpy()


loss_2, kernel_2 = fit_once(strategy)
loss_1, kernel_1 = fit_once(tf.distribute.get_strategy())
out["fit_global"] = {"loss_2": loss_2, "loss_1": loss_1, "kernel_2": kernel_2.tolist(),
                     "kernel_1": kernel_1.tolist()}

# 3. Center loss: both replicas hold the global-batch update
with strategy.scope():
    inputs = keras.Input((6,))
    dense = keras.layers.Dense(5, use_bias=False)
    centers = kf.CenterLossLayer(4, alpha=0.5, centers_initializer="random_normal")
    model = keras.Model(inputs, centers(dense(inputs)))
    dense.kernel.assign(w0)
    model.compile(keras.optimizers.SGD(0.0), loss=centers.loss)
c0 = centers.centers.numpy()
model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
replicas = [v.numpy().tolist() for v in getattr(centers.centers, "_value", centers.centers).values]
out["center"] = {"c0": c0.tolist(), "replicas": replicas, "emb": (x @ w0).tolist(),
                 "labels": y.tolist()}
print(json.dumps(out))
