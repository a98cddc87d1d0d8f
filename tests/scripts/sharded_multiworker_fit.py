"""Sharded class centres (``model_parallel=True``) in ``FaceRecognizer.fit``, then ``evaluate`` and
``predict`` on a fixed data set, under MultiWorkerMirroredStrategy (one CPU replica per worker
process) against the full head in one process. Prints one JSON line.

Usage: sharded_multiworker_fit.py single | worker INDEX PORT0 PORT1 OUT_DIR
"""

import json
import os
import sys
import warnings

mode = sys.argv[1]
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
os.environ["CUDA_VISIBLE_DEVICES"] = ""
if mode == "worker":
    index, ports, out_dir = int(sys.argv[2]), sys.argv[3:5], sys.argv[5]
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"localhost:{p}" for p in ports]},
        "task": {"type": "worker", "index": index}})

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_facemargin import AdaMarginLayer, FaceRecognizer  # noqa: E402
from keras_facemargin.training.multiworker import multiworker_strategy  # noqa: E402

B, D, C, STEPS = 8, 8, 12, 4
rng = np.random.default_rng(0)
x = rng.normal(size=(STEPS * B, 6)).astype("float32")
y = rng.integers(0, C, STEPS * B).astype("int32")
w0 = rng.normal(size=(C, D)).astype("float32")
start = (rng.normal(size=(6, D)) * 0.5).astype("float32")
EVAL = 3 * B  # evaluate / predict: 3 global batches of B (B / 2 rows per worker and step)
x_eval = rng.normal(size=(EVAL, 6)).astype("float32")
y_eval = rng.integers(0, C, EVAL).astype("int32")
strategy = multiworker_strategy() if mode == "worker" else tf.distribute.get_strategy()


class CountBatches(keras.callbacks.Callback):
    batches = 0

    def on_train_batch_end(self, batch, logs=None):
        CountBatches.batches += 1


def make_model(centres, jit_compile=False):
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(D)])
    backbone.layers[0].kernel.assign(start)
    model = FaceRecognizer(backbone, AdaMarginLayer(C, scale=16.0,
                                                    model_parallel=mode == "worker"))
    model.head.assign_centres(centres)
    model.compile(optimizer=keras.optimizers.SGD(0.2, momentum=0.9, weight_decay=5e-3),
                  jit_compile=jit_compile)
    return model


with strategy.scope():
    model = make_model(w0)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(B).repeat()
    callbacks = [CountBatches()]
    if mode == "worker":
        path = os.path.join(out_dir, f"worker{index}.weights.h5")
        callbacks.append(keras.callbacks.ModelCheckpoint(path, save_weights_only=True))
    losses = model.fit(data, epochs=STEPS, steps_per_epoch=1, verbose=2,
                       callbacks=callbacks).history["loss"]
    eval_data = tf.data.Dataset.from_tensor_slices((x_eval, y_eval)).batch(B)
    evaluated = model.evaluate(eval_data, verbose=0, return_dict=True)
    predicted = model.predict(tf.data.Dataset.from_tensor_slices(x_eval).batch(B), verbose=0)
    predicted_arrays = model.predict(x_eval, batch_size=B, verbose=0)  # Keras' own dataset
    result = {
        "replicas": strategy.num_replicas_in_sync, "losses": losses,
        "evaluate": evaluated,
        "predict": np.asarray(predicted).tolist(),
        "predict_arrays": np.asarray(predicted_arrays).tolist(),
        "batches": CountBatches.batches,
        "centres": model.head.centres().numpy().tolist(),
        "backbone": model.backbone.layers[0].kernel.numpy().tolist(),
        "state": [[float(np.asarray(c)) for c in strategy.experimental_local_results(v.value)]
                  for v in model.head.margin_state.values()],
    }
    if mode == "worker":
        result["shard_rows"] = int(model.head.kernel.shape[0])
        fresh = make_model(rng.normal(size=(C, D)).astype("float32"))
        fresh.load_weights(path)
        result["restored_centres"] = fresh.head.centres().numpy().tolist()
    # untrained models compiled with jit_compile=True on the workers (XLA has no CPU
    # collectives: the sharded steps fall back, with a warning), evaluate or predict before fit;
    # the fit after them must still train the shards. One process: no XLA, the reference.
    result["before_fit"] = {}
    for order in (("predict", "fit"), ("evaluate", "fit")):
        early = make_model(w0, jit_compile=mode == "worker")
        got = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for step in order:
                if step == "predict":
                    got[step] = early.predict(x_eval, batch_size=B, verbose=0).tolist()
                elif step == "evaluate":
                    got[step] = early.evaluate(eval_data, verbose=0)
                else:
                    got[step] = early.fit(data, epochs=1, steps_per_epoch=1,
                                          verbose=0).history["loss"][0]
        got["xla_warnings"] = sorted({str(w.message) for w in caught if "XLA" in str(w.message)})
        result["before_fit"]["_".join(order)] = got
print(json.dumps(result), flush=True)
