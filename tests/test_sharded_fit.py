"""Sharded class centres inside ``model.fit`` (``MarginHead(..., model_parallel=True)`` +
``FaceRecognizer``): MirroredStrategy over 2 logical CPUs and MultiWorkerMirroredStrategy with 2
worker processes, against the same model with a full head on one device (an independent
reference: the full softmax, no collective); checkpoints; bad input."""

import json
import os
import pathlib
import sys

import keras
import numpy as np
import pytest

import keras_facemargin as kf
from keras_facemargin import FaceRecognizer

from helpers import free_ports
from procs import finish, run, start

SCRIPTS = pathlib.Path(__file__).parent / "scripts"


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """``scripts/sharded_fit.py 2``: every number the Mirrored tests below check."""
    out = tmp_path_factory.mktemp("sharded_fit")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    proc = run([SCRIPTS / "sharded_fit.py", 2, out], name="sharded_fit.py", env=env)
    return _last_json(proc.out)


@pytest.mark.slow
@pytest.mark.parametrize("head", ["arcface", "cosface", "adaface", "curricular", "magface",
                                  "subcenter", "normface"])
def test_mirrored_fit_equals_the_full_head_on_one_device(mirrored, head):
    """4 SGD steps (momentum 0.9, weight decay) of fit: each replica holds 6 of the 12 classes'
    centres (12 rows with 2 sub-centres); per-step losses, centres and backbone equal the full
    head trained on one device, for plain, stateful (AdaFace, CurricularFace), regularized
    (MagFace), sub-centre heads and a learned scale (NormFace: the head's own trainable weight
    goes through the Keras optimizer with the backbone)."""
    r = mirrored[head]
    rows = 12 if head == "subcenter" else 6
    assert mirrored["replicas"] == 2 and r["shard_rows"] == [rows, rows]
    assert r["centre_moved"] > 0.1  # the centres did train
    assert r["loss_err"] <= 1e-5 * max(1.0, max(r["losses"]))
    assert r["centre_err"] <= 1e-5 and r["backbone_err"] <= 1e-5
    np.testing.assert_allclose(r["own_weights"], r["own_weights_full"], rtol=1e-5)
    if head == "normface":
        assert r["own_weights"][0] != pytest.approx(30.0, abs=1e-3)  # the scale did train


@pytest.mark.slow
def test_stateful_margin_state_is_the_full_heads_on_every_replica(mirrored):
    """AdaFace's EMA statistics: the same on both replicas and equal to the full head's."""
    r = mirrored["adaface"]
    assert len(r["state"]) == 2
    for replicas, want in zip(r["sharded_state"], r["state"], strict=True):
        assert replicas[0] == replicas[1]
        assert replicas[0] == pytest.approx(want, rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_steps_of_sharded_centres_equal_keras_on_the_full_head(mirrored, optimizer):
    """Adam, and AdamW with a cosine schedule and weight decay: 4 steps of the sharded head
    give the losses, centres and backbone of Keras' optimizer on the full head on one device;
    both moments are saved and restored."""
    r = mirrored[optimizer]
    assert r["centre_moved"] > 0.05
    assert r["loss_err"] <= 1e-5 * max(1.0, max(r["losses"]))
    assert r["centre_err"] <= 1e-5 and r["backbone_err"] <= 1e-5
    assert [n.split("/")[-1] for n in r["slots"]] == ["centre_velocity", "centre_second_moment"]
    assert r["second_moment_norm"] > 0 and r["slots_restored_err"] == 0.0


@pytest.mark.slow
def test_curricular_state_is_the_full_heads_on_every_replica(mirrored):
    """CurricularFace's t, an EMA of target cosines that live on different shards."""
    r = mirrored["curricular"]
    assert r["state"] != [0.0]
    assert r["sharded_state"] == [[pytest.approx(r["state"][0], rel=1e-5)] * 2]


@pytest.mark.slow
def test_partial_fc_v2_fit_equals_partial_fc_on_one_device(mirrored):
    """sample_rate=1/3 with sharded centres (each replica samples 2 of its 6 classes) trains
    like Partial FC on one device (4 of 12) when both samples are the batch's classes; a batch
    with more classes of one shard than its sample holds is refused."""
    r = mirrored["partial_fc_v2"]
    assert r["sampled"] == 4 and r["centre_moved"] > 0.1
    assert r["loss_err"] <= 1e-5 * max(1.0, max(r["losses"]))
    assert r["centre_err"] <= 1e-5 and r["backbone_err"] <= 1e-5
    assert "more distinct classes in the shard of one replica" in r["overfull_error"]


@pytest.mark.slow
def test_uneven_and_empty_replica_batches(mirrored):
    """Batches of 8 and 1 samples (one replica empty): losses, centres, AdaFace state as the
    full head on one device."""
    r = mirrored["uneven"]
    assert r["loss_err"] <= 1e-4 and r["centre_err"] <= 1e-5
    for replicas, want in zip(r["sharded_state"], r["state"], strict=True):
        assert replicas == [pytest.approx(want, rel=1e-5)] * 2


@pytest.mark.slow
def test_checkpoints_hold_all_centres_and_restore_them(mirrored):
    """ModelCheckpoint(save_weights_only) in fit -> a fresh sharded model (other random centres)
    loads the same centres, centre momentum and predictions; model.save -> load_model under the
    strategy; the same file on one device gives a full head with every centre, whose predict
    equals a NumPy cosine of the trained centres, and the same evaluate loss; that full head's
    own file loads back into a sharded model."""
    r = mirrored["checkpoint"]
    assert r["centre_err"] == 0.0 and r["predict_err"] == 0.0
    assert r["velocity_norm"] > 0 and r["velocity_err"] == 0.0
    assert r["keras_shards"] == 2 and r["keras_centre_err"] == 0.0
    assert r["single_shards"] == 1 and r["single_centre_err"] == 0.0
    assert r["single_predict_err"] <= 1e-5
    assert r["evaluate_err"] <= 1e-5
    # get_weights gathers all C centres (and their momentum); set_weights scatters them
    assert [6, 8] in r["get_weights_shapes"] and r["get_weights_shapes"].count([12, 8]) == 2
    assert r["set_weights_centre_err"] == 0.0
    # a full head's file (one device) loads into the sharded model: every centre, no momentum
    assert r["full_to_sharded_centre_err"] == 0.0 and r["full_to_sharded_velocity"] == 0.0


@pytest.mark.slow
def test_sequential_path_refuses_to_train_sharded_centres(mirrored):
    assert "train it with keras_facemargin.FaceRecognizer" in mirrored["sequential_error"]


@pytest.mark.slow
def test_invalid_label_changes_nothing_or_raises(mirrored):
    r = mirrored["invalid_label"]
    assert np.isnan(r["loss"])
    assert r["centre_change"] == 0.0 and r["backbone_change"] == 0.0 and r["state_same"]
    assert r["checked_error"] is not None and "labels" in r["checked_error"]


@pytest.mark.slow
def test_indivisible_classes_and_jit_on_logical_cpus(mirrored):
    assert "num_classes` must be a multiple of 2" in mirrored["indivisible_error"]
    assert "Received: num_classes=13" in mirrored["indivisible_error"]
    jit = mirrored["jit"]
    assert jit["loss_err"] <= 1e-6 and any("without XLA" in w for w in jit["warnings"])


@pytest.mark.slow
def test_two_workers_train_like_one_process(tmp_path):
    """MultiWorkerMirroredStrategy, 2 processes (1 replica each), AdaFace with sharded centres:
    losses, all C centres, backbone and margin state as one process with the full head; a
    ModelCheckpoint written during fit restores every centre into a fresh model; evaluate and
    predict give the one-process numbers (after fit, and before it under jit_compile=True)."""
    script = SCRIPTS / "sharded_multiworker_fit.py"
    ports = free_ports(2)
    procs = [start([script, "single"])] + [start([script, "worker", i, *ports, tmp_path])
                                           for i in range(2)]
    outs = finish(procs, ["single process", "worker 0", "worker 1"])
    single, *workers = (_last_json(o.out) for o in outs)
    for w, proc in zip(workers, outs[1:], strict=True):
        assert w["replicas"] == 2 and w["shard_rows"] == 6 and w["batches"] == 4
        assert "Epoch 4/4" in proc.out + proc.err  # Keras' progress output
        np.testing.assert_allclose(w["losses"], single["losses"], rtol=1e-5)
        np.testing.assert_allclose(w["centres"], single["centres"], atol=1e-5)
        np.testing.assert_allclose(w["backbone"], single["backbone"], atol=1e-5)
        np.testing.assert_allclose(w["state"], single["state"], rtol=1e-5)
        np.testing.assert_array_equal(w["restored_centres"], w["centres"])
    assert np.abs(np.array(single["centres"]) - np.array(workers[0]["restored_centres"])).max() \
        <= 1e-5
    _evaluate_and_predict_like_one_process(single, workers)


def _evaluate_and_predict_like_one_process(single, workers):
    """After fit, evaluate (3 batches, B / 2 rows per worker) and predict (a tf.data set and
    arrays) on every worker give the one-process full head's loss and every row's scores, in
    order; evaluate or predict before any fit, with jit_compile=True (XLA has no CPU
    collectives: a warning, no XLA), give the untrained full head's numbers and leave the model
    trainable (the fit after them takes the one-process first step)."""
    assert len(single["predict"]) == 24 and len(single["predict"][0]) == 12
    for w in workers:
        np.testing.assert_allclose(w["evaluate"]["loss"], single["evaluate"]["loss"], rtol=1e-5)
        np.testing.assert_allclose(w["predict"], single["predict"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(w["predict_arrays"], single["predict"], rtol=1e-5, atol=1e-6)
        assert set(w["before_fit"]) == {"predict_fit", "evaluate_fit"}
        for order, got in w["before_fit"].items():
            want = single["before_fit"][order]
            assert want["xla_warnings"] == []  # the reference ran without XLA
            assert len(got["xla_warnings"]) == 1 and "without XLA" in got["xla_warnings"][0]
            assert "MultiWorkerMirroredStrategy on CPU workers" in got["xla_warnings"][0]
            np.testing.assert_allclose(got["fit"], single["losses"][0], rtol=1e-5)
            first = order.split("_")[0]
            np.testing.assert_allclose(got[first], want[first], rtol=1e-5, atol=1e-6)


# --- in process: options, config, bad input ----------------------------------------------------
@pytest.mark.parametrize("make, name", [
    (lambda: kf.ArcMarginLayer(8, kernel_regularizer="l2", model_parallel=True),
     "kernel_regularizer"),
    (lambda: kf.ArcMarginLayer(8, displacement_basis=True, model_parallel=True),
     "displacement_basis=True"),
])
def test_unsupported_options_are_refused(make, name):
    with pytest.raises(ValueError, match="model_parallel") as err:
        make()
    assert name in str(err.value)


def _model(**head_kwargs):
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    return FaceRecognizer(backbone, kf.ArcMarginLayer(8, scale=8.0, **head_kwargs))


@pytest.mark.parametrize("kwargs, text", [
    ({"optimizer": "rmsprop"}, "SGD, Adam or AdamW would"),
    ({"optimizer": keras.optimizers.Adam(amsgrad=True)}, "without AMSGrad. Received: amsgrad"),
    ({"optimizer": keras.optimizers.SGD(0.1, clipnorm=1.0)}, "clipnorm"),
    ({"metrics": ["accuracy"]}, "compile without `metrics`"),
])
def test_compile_refuses_what_sharded_centres_cannot_use(kwargs, text):
    with pytest.raises(ValueError, match="sharded centres") as err:
        _model(model_parallel=True).compile(**kwargs)
    assert text in str(err.value)


def test_config_round_trip_and_one_device_is_a_full_head():
    """Outside a multi-replica strategy a model_parallel head is an ordinary full head: one
    trainable (C, D) kernel, and fit gives the unsharded head's numbers."""
    head = kf.ArcMarginLayer(8, model_parallel=True)
    config = head.get_config()
    assert config["model_parallel"] is True
    assert kf.ArcMarginLayer.from_config(config).model_parallel is True
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 6)).astype("float32"), rng.integers(0, 8, 16)
    losses = []
    for kwargs in ({"model_parallel": True}, {}):
        keras.utils.set_random_seed(1)
        model = _model(**kwargs)
        model.compile(jit_compile=False)
        losses.append(model.fit(x, y, batch_size=8, epochs=2, verbose=0).history["loss"])
        assert model.head.shards == 1 and model.head.kernel.trainable
        assert tuple(model.head.kernel.shape) == (8, 4)
    np.testing.assert_array_equal(losses[0], losses[1])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


@pytest.mark.slow
def test_initial_shards_are_drawn_per_replica_from_the_full_kernels_distribution(mirrored):
    """No process draws all C centres: each replica's (C/N, D) shard is drawn on its own, with
    the full (C, D) kernel's variance (glorot_normal: sqrt(2 / (C + D))), distinct shards, the
    same draw again under keras.utils.set_random_seed; an initializer that needs the whole
    matrix (orthogonal) is drawn whole and sliced (the rows stay orthonormal columns)."""
    r = mirrored["init"]
    want = {"glorot_normal": np.sqrt(2.0 / (2000 + 64)), "normal": 0.3}
    for name, std in want.items():
        assert r[name]["shapes"] == [[1000, 64], [1000, 64]]
        for got in r[name]["stds"]:
            assert got == pytest.approx(std, rel=0.03)
    for name in want.keys() | {"orthogonal"}:
        assert r[name]["shards_differ"] > 0.01 and r[name]["repeat_err"] == 0.0
    assert r["orthogonal"]["gram_err"] < 1e-4
