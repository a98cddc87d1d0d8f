"""Sharded class centres: the distributed margin softmax over N logical CPU replicas
(MirroredStrategy, strategy.run + all_reduce MAX/SUM) equals the full head, for every kind of
margin and for PartialFC v2 (a sample of each shard)."""
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
    import keras
    import keras_facemargin as kf
    from keras_facemargin.training.sharded_softmax import sharded_margin_loss_and_grads

    B, D, C = 7, 8, 12 * n
    per = C // n
    HEADS = {  # the full head on one device is the independent reference
        "arcface": lambda: kf.ArcMarginLayer(C, margin=0.5, scale=64.0),
        "cosface": lambda: kf.CosMarginLayer(C, scale=16.0),
        "combined": lambda: kf.CombinedMarginLayer(C, scale=16.0),
        "normface": lambda: kf.NormSoftmaxLayer(C, learnable_scale=True),
        "sphereface": lambda: kf.SphereMarginLayer(C),
        "lsoftmax": lambda: kf.LargeMarginSoftmaxLayer(C, margin=2),
        "softmax": lambda: kf.SoftmaxLayer(C),
        "elastic": lambda: kf.ElasticMarginLayer(C, std=0.0, scale=16.0),
        "adaface": lambda: kf.AdaMarginLayer(C, scale=16.0),
        "curricular": lambda: kf.CurricularMarginLayer(C, scale=16.0, momentum=0.5),
        "magface": lambda: kf.MagMarginLayer(C, scale=16.0),
        "subcenter": lambda: kf.SubCenterArcMarginLayer(C, scale=16.0, sub_centers=3),
    }
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)])


    def by_replica(make):
        return strategy.experimental_distribute_values_from_function(
            lambda c: make(c.replica_id_in_sync_group))


    def local(values):
        return [v.numpy() for v in strategy.experimental_local_results(values)]


    def others(head):  # the head's trainable weights besides the centres (a learned scale)
        return [v for v in head.trainable_weights if v is not head.kernel]


    def full_head(make, w, x, y):
        head = make()
        head.build((None, D))
        head.kernel.assign(w)
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = head(x, y, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                y, logits, from_logits=True)) + sum(head.losses)
        gx, gw, *gv = tape.gradient(loss, [x, head.kernel, *others(head)])
        return (head, float(loss), gx.numpy(), tf.convert_to_tensor(gw).numpy(),
                [g.numpy() for g in gv])


    def sharded(head, w, x, y, sample=None):
        k = head.sub_centers
        with strategy.scope():
            state = {name: v if getattr(v, "trainable", True) else  # statistics: copies
                     keras.Variable(v.numpy(), trainable=False, aggregation="mean")
                     for name, v in head.margin_state.items()}
        out = strategy.run(tf.function(
            lambda x, y, c, o: sharded_margin_loss_and_grads(
                x, y, c, o, head.margin, state, sub_centers=k, sample=sample,
                variables=others(head))),
            (x, y, by_replica(lambda r: tf.constant(w[r * per * k:(r + 1) * per * k])),
             by_replica(lambda r: tf.constant(r * per))))
        return ([float(v) for v in local(out[0])], local(out[1]),
                np.concatenate(local(out[2]), 0), [bool(v) for v in local(out[3])],
                {name: [float(c) for c in local(v.value)] for name, v in state.items()
                 if not getattr(v, "trainable", True)},
                [sum(local(g)) for g in out[4]])  # the replicas' shares, summed


    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(B, D)) * rng.uniform(5, 30, (B, 1)), tf.float32)
    y = tf.constant(rng.integers(0, C, B).astype("int32"))
    result = {"replicas": strategy.num_replicas_in_sync,
              "labels_per_shard": np.bincount(y.numpy() // per, minlength=n).tolist()}
    for name, make in HEADS.items():
        probe = make()
        w = rng.normal(size=(C * probe.sub_centers, D)).astype("float32")
        fresh = make()
        fresh.build((None, D))
        head, loss, gx, gw, gv = full_head(make, w, x, y)
        losses, gxs, gws, held, state, gvs = sharded(fresh, w, x, y)
        result[name] = {
            "loss_full": loss, "losses": losses, "held": held,
            "gv": [float(g) for g in gv], "gvs": [float(g) for g in gvs],
            "gx_err": max(float(np.abs(g - gx).max()) for g in gxs),
            "gw_err": float(np.abs(gws - gw).max()),
            "gx_scale": float(np.abs(gx).max()), "gw_scale": float(np.abs(gw).max()),
            "state_full": {k: float(v.numpy()) for k, v in head.margin_state.items()
                           if not getattr(v, "trainable", True)},
            "state": state}

    # PartialFC v2: each replica samples ceil(12 * r) of its 12 classes. (1) r = 0.25: 3 per
    # shard, and the batch holds exactly 3 classes of every shard: the sample is the batch's
    # classes; the reference is the full head over those classes only.
    make = HEADS["arcface"]
    picked = np.concatenate([r * per + rng.choice(per, 3, replace=False) for r in range(n)])
    yp = rng.permutation(np.concatenate([picked, rng.choice(picked, 2 * n)])).astype("int32")
    xp = tf.constant(rng.normal(size=(len(yp), D)), tf.float32)
    w = rng.normal(size=(C, D)).astype("float32")
    cols = np.sort(picked)
    head = make()
    head.build((None, D))
    losses, gxs, gws, held, _, _ = sharded(head, w, xp, tf.constant(yp),
                                           sample=(0.25, keras.random.SeedGenerator(1)))
    sub = lambda: kf.ArcMarginLayer(len(cols), margin=0.5, scale=64.0)
    _, loss, gx, gw_sub, _ = full_head(sub, w[cols], xp,
                                       tf.constant(np.searchsorted(cols, yp)))
    gw = np.zeros_like(w)
    gw[cols] = gw_sub
    result["pfc_exact"] = {"loss_full": loss, "losses": losses, "held": held,
                           "gx_err": max(float(np.abs(g - gx).max()) for g in gxs),
                           "gw_err": float(np.abs(gws - gw).max()),
                           "gx_scale": float(np.abs(gx).max()),
                           "gw_scale": float(np.abs(gw).max())}
    # (2) r = 0.5: 6 of each shard's 12, the batch's 3 plus 3 random others; the rows with a
    # gradient are the sample; the loss is the full head's over exactly those classes
    losses, gxs, gws, held, _, _ = sharded(head, w, xp, tf.constant(yp),
                                           sample=(0.5, keras.random.SeedGenerator(2)))
    rows = np.flatnonzero(np.abs(gws).sum(axis=1) > 0)
    _, loss, gx, _, _ = full_head(
        lambda: kf.ArcMarginLayer(len(rows), margin=0.5, scale=64.0), w[rows], xp,
        tf.constant(np.searchsorted(rows, yp)))
    result["pfc_random"] = {"per_shard": np.bincount(rows // per, minlength=n).tolist(),
                            "positives_in": bool(np.isin(picked, rows).all()),
                            "loss_full": loss, "losses": losses, "held": held,
                            "gx_err": max(float(np.abs(g - gx).max()) for g in gxs),
                            "gx_scale": float(np.abs(gx).max())}
    # (3) r = 0.25 with 4 classes of one shard in the batch: that sample cannot hold them
    yb = np.array([0, 1, 2, 3, per, per + 1], "int32")
    try:
        out = sharded(head, w, tf.constant(rng.normal(size=(6, D)), tf.float32),
                      tf.constant(yb), sample=(0.25, keras.random.SeedGenerator(3)))
        result["pfc_overfull"] = {"error": None, "held": out[3]}
    except Exception as err:  # graph-mode assertion
        result["pfc_overfull"] = {"error": str(err)[:1500]}
    print(json.dumps(result))
""")


@pytest.fixture(scope="module", params=[2, 3])
def sharded_run(request):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(request.param)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["replicas"] == request.param
    assert sum(1 for k in r["labels_per_shard"] if k) >= 2  # labels spread over shards
    return r


def _same_as_full(r, gradients=("gx", "gw")):
    for loss in r["losses"]:
        assert loss == pytest.approx(r["loss_full"], rel=1e-5, abs=1e-5)
    for g in gradients:
        assert r[f"{g}_err"] <= 1e-5 * max(1.0, r[f"{g}_scale"])
    assert all(r["held"])


@pytest.mark.parametrize("head", ["arcface", "cosface", "combined", "normface", "sphereface",
                                  "lsoftmax", "softmax", "elastic", "adaface", "curricular",
                                  "magface", "subcenter"])
def test_sharded_softmax_equals_full_head(sharded_run, head):
    """Loss, embedding and centre gradients of the sharded softmax equal the full head's
    (head(x, y) + cross-entropy + the head's add_loss) for every head: additive, multiplicative
    and combined margins, W.x logits (Softmax, L-Softmax), a learned scale (NormFace: the
    replicas' shares of its gradient sum to the full head's), norm-adaptive margins (AdaFace,
    MagFace with its regularizer), hard negatives re-weighted by each row's target
    (CurricularFace), the max over sub-centres (sub-center ArcFace)."""
    r = sharded_run[head]
    _same_as_full(r)
    assert len(r["gvs"]) == len(r["gv"]) == (1 if head == "normface" else 0)
    np.testing.assert_allclose(r["gvs"], r["gv"], rtol=1e-5, atol=1e-6)


def test_sharded_margin_state_equals_the_full_heads(sharded_run):
    """CurricularFace's t (an EMA of the batch's target cosines, which live on different
    shards) ends equal on every replica and to the full head's."""
    r = sharded_run["curricular"]
    assert r["state_full"]["t"] != 0.0
    assert r["state"]["t"] == [pytest.approx(r["state_full"]["t"], rel=1e-5)] * len(r["losses"])


def test_partial_fc_v2_a_sample_of_each_shard(sharded_run):
    """PartialFC v2 (each replica samples its own shard): when the sample is exactly the
    batch's classes, loss and gradients are the full head's over those classes (no gradient
    reaches the others); with random negatives, each shard's sample has ceil(12 r) classes,
    holds every positive, and the loss is the full head's over exactly the sampled classes."""
    _same_as_full(sharded_run["pfc_exact"])
    r = sharded_run["pfc_random"]
    assert r["per_shard"] == [6] * len(r["losses"]) and r["positives_in"]
    _same_as_full(r, gradients=("gx",))


def test_partial_fc_v2_refuses_a_sample_that_cannot_hold_the_batch(sharded_run):
    error = sharded_run["pfc_overfull"]["error"]
    assert error is not None and "more distinct classes in the shard of one replica" in error


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
