"""One worker of a 2-process MultiWorkerMirroredStrategy run (CPU, localhost).

Usage: multiworker_metric.py TASK_INDEX PORT0 PORT1 OUT.json MINING...
Each worker feeds its half of a fixed global batch of 16; for each mining rule it computes the
triplet loss with global mining and its gradient (summed over replicas), and writes them.
"""

import json
import os
import sys

index, port0, port1, out_path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
os.environ["TF_CONFIG"] = json.dumps({
    "cluster": {"worker": [f"localhost:{port0}", f"localhost:{port1}"]},
    "task": {"type": "worker", "index": index},
})
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_facemargin as kf  # noqa: E402

strategy = tf.distribute.MultiWorkerMirroredStrategy(
    communication_options=tf.distribute.experimental.CommunicationOptions(timeout_seconds=300))
rng = np.random.default_rng(0)
x = rng.normal(size=(16, 6)).astype("float32")
y = rng.integers(0, 4, 16).astype("int64")
w0 = rng.normal(size=(6, 5)).astype("float32")

with strategy.scope():
    w = tf.Variable(w0)


def dataset_fn(context):
    lo = context.input_pipeline_id * 8
    return tf.data.Dataset.from_tensors((x[lo:lo + 8], y[lo:lo + 8]))


dataset = strategy.distribute_datasets_from_function(dataset_fn)
xb, yb = next(iter(dataset))
out = {"num_replicas": strategy.num_replicas_in_sync}
for mining in sys.argv[5:]:
    for global_mining in (True, False):
        loss_fn = kf.TripletLoss(mining=mining, distance="l2", global_mining=global_mining)

        @tf.function
        def step(a, b, loss_fn=loss_fn):
            with tf.GradientTape() as tape:
                loss = loss_fn(b, tf.matmul(a, w))
            return loss, tape.gradient(loss, w)

        loss, grad = strategy.run(step, (xb, yb))
        key = f"{mining}_{'global' if global_mining else 'local'}"
        out[key] = {"loss": float(strategy.reduce("SUM", loss, axis=None)),
                    "grad": strategy.reduce("SUM", grad, axis=None).numpy().tolist()}
tmp = out_path + ".tmp"
with open(tmp, "w") as f:
    json.dump(out, f)
os.replace(tmp, out_path)
