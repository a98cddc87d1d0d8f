"""ShardedMarginTrainer on N logical CPU replicas vs the full ArcFace head on one device.

Prints JSON: max differences of the backbone weights, the centres and the per-step losses.
"""
import json
import sys

import numpy as np
import tensorflow as tf

n = int(sys.argv[1])
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)

import keras  # noqa: E402

from keras_facemargin import ArcMarginLayer  # noqa: E402
from keras_facemargin.margins import ArcMargin  # noqa: E402
from keras_facemargin.training.sharded_softmax import ShardedMarginTrainer  # noqa: E402

B, D, C, STEPS = 4 * n, 8, 6 * n, 4
rng = np.random.default_rng(0)
x = rng.normal(size=(STEPS * B, 6)).astype("float32")
y = rng.integers(0, C, STEPS * B).astype("int32")
w0 = rng.normal(size=(D, C)).astype("float32")


def make_backbone():
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(D, kernel_initializer="ones",
                                                                   bias_initializer="zeros")])


# reference: one device, the full head, Keras SGD (centres with momentum)
backbone, head = make_backbone(), ArcMarginLayer(C, margin=0.5, scale=16.0)
head.build((None, D))
head.kernel.assign(w0.T)  # the head holds one centre per row
backbone.layers[0].kernel.assign(rng.normal(size=(6, D)).astype("float32") * 0.5)
start_kernel = backbone.layers[0].kernel.numpy()
opt_b, opt_h = keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.2, momentum=0.9)
ref_losses = []
for s in range(STEPS):
    xb, yb = x[s * B:(s + 1) * B], y[s * B:(s + 1) * B]
    with tf.GradientTape(persistent=True) as tape:
        logits = head(backbone(xb, training=True), yb, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(yb, logits,
                                                                            from_logits=True))
    opt_b.apply(tape.gradient(loss, backbone.trainable_variables), backbone.trainable_variables)
    opt_h.apply(tape.gradient(loss, [head.kernel]), [head.kernel])
    ref_losses.append(float(loss))

strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)])
with strategy.scope():
    sharded_backbone = make_backbone()
    sharded_backbone.layers[0].kernel.assign(start_kernel)
    optimizer = keras.optimizers.SGD(0.1)
trainer = ShardedMarginTrainer(sharded_backbone, C, ArcMargin(margin=0.5, scale=16.0), optimizer,
                               strategy, centre_learning_rate=0.2, centre_momentum=0.9,
                               initial_centres=w0.T)
dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(B)
losses = [float(trainer.train_step(*batch))
          for batch in strategy.experimental_distribute_dataset(dataset)]
ref_kernel = backbone.layers[0].kernel.numpy()
result = {
    "replicas": strategy.num_replicas_in_sync,
    "shard_widths": sorted({int(v.shape[0]) for v in trainer.shards.values()}),
    "devices": sorted({v.device for v in trainer.shards.values()}),
    "loss_err": max(abs(a - b) for a, b in zip(losses, ref_losses, strict=True)),
    "backbone_err": float(np.abs(sharded_backbone.layers[0].kernel.numpy() - ref_kernel).max()),
    "backbone_moved": float(np.abs(ref_kernel - start_kernel).max()),
    "centre_err": float(np.abs(trainer.centres().numpy() - head.kernel.numpy()).max()),
    "centre_moved": float(np.abs(head.kernel.numpy().T - w0).max()),
}
result["history"] = trainer.fit(dataset.take(2), epochs=1, verbose=0)["loss"]  # its API runs
print(json.dumps(result))
