"""Sharded class centres: the distributed margin softmax over N logical CPU replicas
(MirroredStrategy, strategy.run + all_reduce MAX/SUM) equals the full ArcFace head."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    n = int(sys.argv[1])
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    from keras_facemargin import ArcMarginLayer
    from keras_facemargin.margins import ArcMargin
    from keras_facemargin.training.sharded_softmax import sharded_margin_loss_and_grads

    rng = np.random.default_rng(0)
    B, D, C = 7, 8, 12 * n
    x = tf.constant(rng.normal(size=(B, D)), tf.float32)
    y = tf.constant(rng.integers(0, C, B).astype("int32"))
    w = rng.normal(size=(D, C)).astype("float32")

    head = ArcMarginLayer(C, margin=0.5, scale=64.0)
    head.build((None, D))
    head.kernel.assign(w.T)  # the head holds one centre per row
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = head(x, y, training=True)
        loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
            y, logits, from_logits=True))
    gx, gw = tape.gradient(loss, [x, head.kernel])

    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)])
    per = C // n
    shards = strategy.experimental_distribute_values_from_function(
        lambda c: tf.constant(w.T[c.replica_id_in_sync_group * per:
                                   (c.replica_id_in_sync_group + 1) * per]))
    offsets = strategy.experimental_distribute_values_from_function(
        lambda c: tf.constant(c.replica_id_in_sync_group * per))
    out = strategy.run(tf.function(sharded_margin_loss_and_grads),
                       (x, y, shards, offsets, ArcMargin(margin=0.5, scale=64.0)))
    losses = [float(v) for v in strategy.experimental_local_results(out[0])]
    gxs = [v.numpy() for v in strategy.experimental_local_results(out[1])]
    gws = np.concatenate([v.numpy() for v in strategy.experimental_local_results(out[2])], 0)
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "loss_full": float(loss), "losses": losses,
        "gx_err": max(float(np.abs(g - gx.numpy()).max()) for g in gxs),
        "gw_err": float(np.abs(gws - gw.numpy()).max()),
        "gx_scale": float(np.abs(gx.numpy()).max()), "gw_scale": float(np.abs(gw.numpy()).max()),
        "labels_per_shard": np.bincount(y.numpy() // per, minlength=n).tolist()}))
""")


@pytest.mark.parametrize("replicas", [2, 3])
def test_sharded_softmax_equals_full_head(replicas):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(replicas)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["replicas"] == replicas
    assert sum(1 for k in r["labels_per_shard"] if k) >= 2  # labels spread over shards
    for loss in r["losses"]:
        assert loss == pytest.approx(r["loss_full"], rel=1e-5, abs=1e-5)
    assert r["gx_err"] <= 1e-5 * max(1.0, r["gx_scale"])
    assert r["gw_err"] <= 1e-5 * max(1.0, r["gw_scale"])


@pytest.mark.parametrize("replicas", [2, 3])
def test_sharded_trainer_equals_full_head_training(replicas):
    """ShardedMarginTrainer: each replica holds C/N centres on its own device; 4 SGD steps (centre
    momentum 0.9) give the losses, backbone and centres of the full head on one device."""
    script = os.path.join(os.path.dirname(__file__), "scripts", "sharded_trainer_fit.py")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, script, str(replicas)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["replicas"] == replicas and r["shard_widths"] == [6]
    assert len(r["devices"]) == replicas  # one shard per device, none holds all centres
    assert r["backbone_moved"] > 0.1 and r["centre_moved"] > 0.1
    assert r["loss_err"] <= 1e-5
    assert r["backbone_err"] <= 1e-5 and r["centre_err"] <= 1e-5
    assert all(np.isfinite(r["history"]))
