"""Row 4 of issue 13: ShardedMarginTrainer with stateful margins (AdaFace EMA, annealed
SphereFace) on 2 logical CPUs equals the full head on one device (losses, centres, margin state).

Prints one JSON line per margin.
"""
import json

import numpy as np
import tensorflow as tf

N = 2
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * N)

import keras  # noqa: E402

from keras_facemargin import AdaMarginLayer, SphereMarginLayer  # noqa: E402
from keras_facemargin.margins import AdaMargin, SphereMargin  # noqa: E402
from keras_facemargin.training.sharded_softmax import ShardedMarginTrainer  # noqa: E402

B, D, C, STEPS = 4 * N, 8, 6 * N, 4


def make_backbone():
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(
        D, kernel_initializer="ones", bias_initializer="zeros")])


def compare(make_head, make_margin):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS * B, 6)).astype("float32")
    y = rng.integers(0, C, STEPS * B).astype("int32")
    w0 = rng.normal(size=(D, C)).astype("float32")
    backbone, head = make_backbone(), make_head()
    head.build((None, D))
    head.kernel.assign(w0.T)
    backbone.layers[0].kernel.assign(rng.normal(size=(6, D)).astype("float32") * 0.5)
    start = backbone.layers[0].kernel.numpy()
    opt_b, opt_h = keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.2, momentum=0.9)
    reference = []
    for s in range(STEPS):
        xb, yb = x[s * B:(s + 1) * B], y[s * B:(s + 1) * B]
        with tf.GradientTape(persistent=True) as tape:
            logits = head(backbone(xb, training=True), yb, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                yb, logits, from_logits=True))
        opt_b.apply(tape.gradient(loss, backbone.trainable_variables),
                    backbone.trainable_variables)
        opt_h.apply(tape.gradient(loss, [head.kernel]), [head.kernel])
        reference.append(float(loss))
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(N)])
    with strategy.scope():
        sharded = make_backbone()
        sharded.layers[0].kernel.assign(start)
        optimizer = keras.optimizers.SGD(0.1)
    trainer = ShardedMarginTrainer(sharded, C, make_margin(), optimizer, strategy,
                                   centre_learning_rate=0.2, centre_momentum=0.9,
                                   initial_centres=w0.T)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(B)
    losses = [float(trainer.train_step(*batch))
              for batch in strategy.experimental_distribute_dataset(data)]
    return {
        "loss_err": max(abs(a - b) for a, b in zip(losses, reference, strict=True)),
        "centre_err": float(np.abs(trainer.centres().numpy() - head.kernel.numpy()).max()),
        "state": [float(v.numpy()) for v in head.non_trainable_weights],
        "sharded_state": [float(np.asarray(v.numpy())) for v in trainer._state_owner.weights],
    }


print(json.dumps(compare(lambda: AdaMarginLayer(C, scale=16.0), lambda: AdaMargin(scale=16.0))))
print(json.dumps(compare(lambda: SphereMarginLayer(C), SphereMargin)))
