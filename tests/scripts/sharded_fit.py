"""Sharded class centres (``model_parallel=True``) trained by ``FaceRecognizer.fit`` under
MirroredStrategy over N logical CPUs, against the same model with a full head on one device.

Usage: ``sharded_fit.py N OUT_DIR``. Prints one JSON line of measured differences.
"""
import json
import os
import sys
import warnings

import numpy as np
import tensorflow as tf

N, OUT = int(sys.argv[1]), sys.argv[2]
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * N)

import keras  # noqa: E402

from keras_facemargin import (  # noqa: E402
    AdaMarginLayer,
    ArcMarginLayer,
    CosMarginLayer,
    CurricularMarginLayer,
    FaceRecognizer,
    MagMarginLayer,
    NormSoftmaxLayer,
    SubCenterArcMarginLayer,
)

B, D, C, STEPS = 4 * N, 8, 6 * N, 4
HEADS = {"arcface": lambda **kw: ArcMarginLayer(C, margin=0.5, scale=16.0, **kw),
         "cosface": lambda **kw: CosMarginLayer(C, margin=0.35, scale=16.0, **kw),
         "adaface": lambda **kw: AdaMarginLayer(C, scale=16.0, **kw),
         "curricular": lambda **kw: CurricularMarginLayer(C, scale=16.0, momentum=0.5, **kw),
         "magface": lambda **kw: MagMarginLayer(C, scale=16.0, **kw),
         "subcenter": lambda **kw: SubCenterArcMarginLayer(C, scale=16.0, sub_centers=2, **kw),
         "normface": lambda **kw: NormSoftmaxLayer(C, learnable_scale=True, **kw)}


def make_model(make_head, start, w0, optimizer=None, **head_kwargs):
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(D)])
    backbone.layers[0].kernel.assign(start)
    model = FaceRecognizer(backbone, make_head(**head_kwargs))
    model.head.assign_centres(w0)
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.2, momentum=0.9,
                                                              weight_decay=5e-3),
                  jit_compile=False)
    return model


def fit(model, x, y):
    """STEPS one-step epochs: history["loss"] holds each step's loss."""
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(B).repeat()
    return model.fit(data, epochs=STEPS, steps_per_epoch=1, verbose=0).history["loss"]


def state(model):
    """Every replica's value of every margin-state variable."""
    strategy = tf.distribute.get_strategy()
    return [[float(np.asarray(c)) for c in strategy.experimental_local_results(v.value)]
            for v in model.head.margin_state.values()] if model.head.margin_state else []


rng = np.random.default_rng(0)
x = rng.normal(size=(STEPS * B, 6)).astype("float32")
y = rng.integers(0, C, STEPS * B).astype("int32")
w0 = rng.normal(size=(C, D)).astype("float32")
start = (rng.normal(size=(6, D)) * 0.5).astype("float32")
strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(N)])
result = {"replicas": strategy.num_replicas_in_sync}
W0 = {}
for name, make_head in HEADS.items():
    w0 = W0[name] = rng.normal(size=(C * make_head().sub_centers, D)).astype("float32")
    full = make_model(make_head, start, w0)  # independent reference: one device, full softmax
    ref_losses = fit(full, x, y)
    with strategy.scope():
        sharded = make_model(make_head, start, w0, model_parallel=True)
        shard_rows = [int(v.shape[0]) for v in
                      strategy.experimental_local_results(sharded.head.kernel.value)]
        losses = fit(sharded, x, y)
        centres = sharded.head.centres().numpy()
        sharded_state = state(sharded)
    result[name] = {
        "shard_rows": shard_rows,
        "loss_err": max(abs(a - b) for a, b in zip(losses, ref_losses, strict=True)),
        "losses": losses,
        "centre_err": float(np.abs(centres - full.head.centres().numpy()).max()),
        "centre_moved": float(np.abs(centres.T - w0).max()),
        "shard_rows_expected": C * make_head().sub_centers // N,
        "backbone_err": float(np.abs(sharded.backbone.layers[0].kernel.numpy()
                                     - full.backbone.layers[0].kernel.numpy()).max()),
        "state": [float(np.asarray(v)) for v in full.head.margin_state.values()],
        "sharded_state": sharded_state,
        "own_weights": [float(np.asarray(v.numpy())) for v in sharded.head.trainable_weights],
        "own_weights_full": [float(np.asarray(v.numpy())) for v in full.head.trainable_weights
                             if v is not full.head.kernel],
    }

# PartialFC v2 (sample_rate=1/3: each replica samples 2 of its 6 classes) against Partial FC
# on one device (4 of 12): every batch holds 2 classes of each shard, so both samples are
# exactly the batch's classes and the two runs must train alike
w0 = rng.normal(size=(C, D)).astype("float32")
per = C // N
yp = np.concatenate([rng.permutation(np.repeat(np.concatenate(
    [r * per + rng.choice(per, 2, replace=False) for r in range(N)]), B // (2 * N)))
    for _ in range(STEPS)]).astype("int32")
pfc = lambda **kw: ArcMarginLayer(C, margin=0.5, scale=16.0, sample_rate=1 / 3, seed=1, **kw)
full = make_model(pfc, start, w0)
ref_losses = fit(full, x, yp)
with strategy.scope():
    sharded = make_model(pfc, start, w0, model_parallel=True)
    losses = fit(sharded, x, yp)
    result["partial_fc_v2"] = {
        "losses": losses, "sampled": full.head.num_sampled,
        "loss_err": max(abs(a - b) for a, b in zip(losses, ref_losses, strict=True)),
        "centre_err": float(np.abs(sharded.head.centres().numpy()
                                   - full.head.centres().numpy()).max()),
        "centre_moved": float(np.abs(sharded.head.centres().numpy().T - w0).max()),
        "backbone_err": float(np.abs(sharded.backbone.layers[0].kernel.numpy()
                                     - full.backbone.layers[0].kernel.numpy()).max())}
    # a batch with 3 classes of one shard: that shard's sample (2) cannot hold them
    bad = np.array([0, 1, 2, 0] + [per] * (B - 4), "int32")
    try:
        sharded.fit(x[:B], bad, batch_size=B, epochs=1, verbose=0)
        result["partial_fc_v2"]["overfull_error"] = None
    except Exception as err:  # noqa: BLE001  graph-mode assertion
        result["partial_fc_v2"]["overfull_error"] = str(err)

# Adam and AdamW (a cosine schedule, weight decay) for the sharded centres: both moments and
# the bias correction as Keras' optimizer applies them to the full head on one device
schedule = lambda: keras.optimizers.schedules.CosineDecay(0.05, STEPS)  # noqa: E731
for name, make_opt in {"adam": lambda: keras.optimizers.Adam(0.05),
                       "adamw": lambda: keras.optimizers.AdamW(schedule(), weight_decay=0.05,
                                                               beta_1=0.8)}.items():
    w0 = W0["arcface"]
    full = make_model(HEADS["arcface"], start, w0, make_opt())
    ref_losses = fit(full, x, y)
    with strategy.scope():
        sharded = make_model(HEADS["arcface"], start, w0, make_opt(), model_parallel=True)
        losses = fit(sharded, x, y)
        result[name] = {
            "losses": losses,
            "loss_err": max(abs(a - b) for a, b in zip(losses, ref_losses, strict=True)),
            "centre_err": float(np.abs(sharded.head.centres().numpy()
                                       - full.head.centres().numpy()).max()),
            "centre_moved": float(np.abs(sharded.head.centres().numpy().T - w0).max()),
            "backbone_err": float(np.abs(sharded.backbone.layers[0].kernel.numpy()
                                         - full.backbone.layers[0].kernel.numpy()).max()),
            "slots": [v.name for v in sharded.head.centre_slots]}
        path = os.path.join(OUT, f"{name}.weights.h5")
        sharded.save_weights(path)
        fresh = make_model(HEADS["arcface"], start, np.zeros_like(w0), make_opt(),
                           model_parallel=True)
        fresh.load_weights(path)
        result[name]["slots_restored_err"] = max(
            float(np.abs(strategy.gather(a.value, axis=0).numpy()
                         - strategy.gather(b.value, axis=0).numpy()).max())
            for a, b in zip(fresh.head.centre_slots, sharded.head.centre_slots, strict=True))
        result[name]["second_moment_norm"] = float(np.abs(strategy.gather(
            sharded.head.centre_slots[-1].value, axis=0).numpy()).max())

# checkpoints: ModelCheckpoint(save_weights_only) inside fit, then a fresh model loads it
w0 = W0["arcface"]
path = os.path.join(OUT, "sharded.weights.h5")
probe = rng.normal(size=(5, 6)).astype("float32")
with strategy.scope():
    model = make_model(HEADS["arcface"], start, w0, model_parallel=True)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(B)
    model.fit(data, epochs=1, verbose=0, callbacks=[keras.callbacks.ModelCheckpoint(
        path, save_weights_only=True)])
    fresh = make_model(HEADS["arcface"], start, rng.normal(size=(C, D)).astype("float32"),
                       model_parallel=True)
    fresh.load_weights(path)
    trained = model.head.centres().numpy()
    velocity = strategy.gather(model.head.centre_velocity.value, axis=0).numpy()
    result["checkpoint"] = {
        "centre_err": float(np.abs(fresh.head.centres().numpy() - trained).max()),
        "velocity_err": float(np.abs(strategy.gather(fresh.head.centre_velocity.value,
                                                     axis=0).numpy() - velocity).max()),
        "velocity_norm": float(np.abs(velocity).max()),
        "predict_err": float(np.abs(fresh.predict(probe, verbose=0)
                                    - model.predict(probe, verbose=0)).max()),
    }
    weights = model.get_weights()  # sharded centres gathered whole
    other = make_model(HEADS["arcface"], start, np.zeros((C, D), "float32"), model_parallel=True)
    other.set_weights(weights)
    result["checkpoint"]["get_weights_shapes"] = [list(w.shape) for w in weights]
    result["checkpoint"]["set_weights_centre_err"] = float(
        np.abs(other.head.centres().numpy() - trained).max())
    keras_path = os.path.join(OUT, "sharded.keras")
    model.save(keras_path)
    loaded = keras.models.load_model(keras_path)
    result["checkpoint"]["keras_centre_err"] = float(
        np.abs(loaded.head.centres().numpy() - trained).max())
    result["checkpoint"]["keras_shards"] = loaded.head.shards
    evaluated = model.evaluate(x, y, batch_size=B, verbose=0)
# the same file on one device, into a full head: all C centres; the same scores
single = make_model(HEADS["arcface"], start, w0, model_parallel=True)
single.load_weights(path)
cos = probe @ single.backbone.layers[0].kernel.numpy() + single.backbone.layers[0].bias.numpy()
cos = cos / np.linalg.norm(cos, axis=1, keepdims=True)
cos = cos @ (trained / np.linalg.norm(trained, axis=0, keepdims=True))
result["checkpoint"].update(
    single_shards=single.head.shards,
    single_centre_err=float(np.abs(single.head.centres().numpy() - trained).max()),
    single_predict_err=float(np.abs(single.predict(probe, verbose=0) - cos).max()),
    evaluate_err=abs(float(evaluated) - float(single.evaluate(x, y, batch_size=B, verbose=0))))
# the other way: a full head's file (one device) into a sharded model
full_path = os.path.join(OUT, "full.weights.h5")
single.save_weights(full_path)
with strategy.scope():
    resharded = make_model(HEADS["arcface"], start, w0, model_parallel=True)
    resharded.load_weights(full_path)
    result["checkpoint"]["full_to_sharded_centre_err"] = float(
        np.abs(resharded.head.centres().numpy() - trained).max())
    result["checkpoint"]["full_to_sharded_velocity"] = float(np.abs(strategy.gather(
        resharded.head.centre_velocity.value, axis=0).numpy()).max())
    try:  # the Sequential path cannot train sharded centres (not trainable weights): refused
        seq = keras.Sequential([keras.Input((6,)), keras.layers.Dense(D),
                                ArcMarginLayer(C, model_parallel=True)])
        seq.compile(optimizer="sgd", loss=seq.layers[-1].loss, jit_compile=False)
        seq.fit(x, y, batch_size=B, epochs=1, verbose=0)
        result["sequential_error"] = None
    except ValueError as err:
        result["sequential_error"] = str(err)

# uneven and empty per-replica batches (B + 1 samples: a batch of B, then one of 1 sample, which
# leaves a replica empty), AdaFace's EMA state included
xu, yu = x[:B + 1], y[:B + 1]
full = make_model(HEADS["adaface"], start, w0)
ref = fit(full, xu, yu)
with strategy.scope():
    sharded = make_model(HEADS["adaface"], start, w0, model_parallel=True)
    got = fit(sharded, xu, yu)
    result["uneven"] = {
        "loss_err": max(abs(a - b) for a, b in zip(got, ref, strict=True)),
        "centre_err": float(np.abs(sharded.head.centres().numpy()
                                   - full.head.centres().numpy()).max()),
        "state": [float(np.asarray(v)) for v in full.head.margin_state.values()],
        "sharded_state": state(sharded)}

# an out-of-range label with the run-time checks off: NaN loss, nothing changes
with strategy.scope():
    model = make_model(HEADS["adaface"], start, w0, model_parallel=True, check_inputs=False)
    bad = y[:B].copy()
    bad[-1] = C
    before = [model.head.centres().numpy(), model.backbone.layers[0].kernel.numpy(), state(model)]
    loss = model.fit(x[:B], bad, batch_size=B, epochs=1, verbose=0).history["loss"][0]
    result["invalid_label"] = {
        "loss": loss,
        "centre_change": float(np.abs(model.head.centres().numpy() - before[0]).max()),
        "backbone_change": float(np.abs(model.backbone.layers[0].kernel.numpy()
                                        - before[1]).max()),
        "state_same": state(model) == before[2]}
    model = make_model(HEADS["adaface"], start, w0, model_parallel=True)
    try:
        model.fit(x[:B], bad, batch_size=B, epochs=1, verbose=0)
        result["invalid_label"]["checked_error"] = None
    except Exception as err:  # noqa: BLE001  graph-mode assertion
        result["invalid_label"]["checked_error"] = str(err)[-1500:]

# C not a multiple of the replicas; jit_compile=True on logical CPUs falls back with a warning
with strategy.scope():
    try:
        make_model(lambda **kw: ArcMarginLayer(C + 1, **kw), start, np.zeros((C + 1, D)),
                   model_parallel=True)
        result["indivisible_error"] = None
    except ValueError as err:
        result["indivisible_error"] = str(err)
    model = make_model(HEADS["arcface"], start, w0, model_parallel=True)
    model.compile(optimizer=keras.optimizers.SGD(0.2, momentum=0.9, weight_decay=5e-3),
                  jit_compile=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jit_loss = fit(model, x, y)
    result["jit"] = {"loss_err": max(abs(a - b) for a, b in
                                     zip(jit_loss, result["arcface"]["losses"], strict=True)),
                     "warnings": [str(w.message) for w in caught if "XLA" in str(w.message)]}

# the initial shards: drawn per replica (no process holds all C centres), each from the
# initializer's distribution for the full (C, D) kernel, distinct, reproducible by seed
init = {}
for name, initializer in {"glorot_normal": "glorot_normal",
                          "normal": keras.initializers.RandomNormal(stddev=0.3),
                          "orthogonal": "orthogonal"}.items():
    draws = []
    for _ in range(2):
        keras.utils.set_random_seed(7)
        with strategy.scope():
            head = ArcMarginLayer(2000, kernel_initializer=initializer, model_parallel=True)
            head.build((None, 64))
            draws.append([v.numpy() for v in
                          strategy.experimental_local_results(head.kernel.value)])
    shards = draws[0]
    init[name] = {"shapes": [list(v.shape) for v in shards],
                  "stds": [float(v.std()) for v in shards],
                  "shards_differ": float(np.abs(shards[0] - shards[1]).max()),
                  "repeat_err": max(float(np.abs(a - b).max())
                                    for a, b in zip(*draws, strict=True))}
    if name == "orthogonal":  # drawn whole: the rows of all shards are orthogonal columns
        full = np.concatenate(shards, 0)
        init[name]["gram_err"] = float(np.abs(full.T @ full - np.eye(64)).max())
result["init"] = init
print(json.dumps(result))
