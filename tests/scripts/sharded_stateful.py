"""Row 4 of issue 13: ShardedMarginTrainer with stateful margins (AdaFace EMA, annealed SphereFace)
on 2 logical CPUs equals the full head on one device (losses, centres, margin state). Prints JSON lines."""
import json, sys
import numpy as np
import tensorflow as tf
n = 2
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
import keras
from keras_facemargin import AdaMarginLayer, SphereMarginLayer
from keras_facemargin.margins import AdaMargin, SphereMargin
from keras_facemargin.training.sharded_softmax import ShardedMarginTrainer
for make_head, make_margin in [(lambda C: AdaMarginLayer(C, scale=16.0), lambda: AdaMargin(scale=16.0)), (lambda C: SphereMarginLayer(C), lambda: SphereMargin())]:
    B, D, C, STEPS = 4 * n, 8, 6 * n, 4
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS * B, 6)).astype("float32")
    y = rng.integers(0, C, STEPS * B).astype("int32")
    w0 = rng.normal(size=(D, C)).astype("float32")
    def make_backbone():
        return keras.Sequential([keras.Input((6,)), keras.layers.Dense(D, kernel_initializer="ones", bias_initializer="zeros")])
    backbone, head = make_backbone(), make_head(C)
    head.build((None, D)); head.kernel.assign(w0.T)
    backbone.layers[0].kernel.assign(rng.normal(size=(6, D)).astype("float32") * 0.5)
    start = backbone.layers[0].kernel.numpy()
    ob, oh = keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.2, momentum=0.9)
    ref = []
    for s in range(STEPS):
        xb, yb = x[s*B:(s+1)*B], y[s*B:(s+1)*B]
        with tf.GradientTape(persistent=True) as tape:
            logits = head(backbone(xb, training=True), yb, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(yb, logits, from_logits=True))
        ob.apply(tape.gradient(loss, backbone.trainable_variables), backbone.trainable_variables)
        oh.apply(tape.gradient(loss, [head.kernel]), [head.kernel]); ref.append(float(loss))
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)])
    with strategy.scope():
        sb = make_backbone(); sb.layers[0].kernel.assign(start); opt = keras.optimizers.SGD(0.1)
    tr = ShardedMarginTrainer(sb, C, make_margin(), opt, strategy, centre_learning_rate=0.2, centre_momentum=0.9, initial_centres=w0)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(B)
    losses = [float(tr.train_step(*b)) for b in strategy.experimental_distribute_dataset(ds)]
    print(json.dumps({"loss_err": max(abs(a-b) for a,b in zip(losses, ref)), "centre_err": float(np.abs(tr.centres().numpy() - head.kernel.numpy().T).max()),
       "state": [float(v.numpy()) for v in head.non_trainable_weights], "sharded_state": [float(np.asarray(v.numpy())) for v in tr._state_owner.weights]}))
