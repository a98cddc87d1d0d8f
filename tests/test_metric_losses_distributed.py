"""Metric losses under MirroredStrategy over 2 logical CPU devices (in a subprocess)."""

import json
import pathlib

import numpy as np
import pytest

from helpers import free_ports
from metric_reference import center_step
from procs import finish, run, start

SCRIPT = pathlib.Path(__file__).parent / "scripts_metric" / "mirrored_metric.py"
MINING = ["semihard", "semihard_all", "all", "hard"]


@pytest.fixture(scope="module")
def result():
    proc = run([SCRIPT, *MINING], name="mirrored process")
    return json.loads(proc.out.strip().splitlines()[-1])


@pytest.mark.parametrize("mining", MINING)
def test_global_mining_equals_one_replica_on_the_concatenated_batch(result, mining):
    case = result[f"global_{mining}"]
    assert case["loss_2"] == pytest.approx(case["loss_1"], rel=1e-5)
    np.testing.assert_allclose(case["grad_2"], case["grad_1"], rtol=1e-4, atol=1e-6)


def test_local_mining_is_not_global(result):
    """Without global_mining each replica mines its own 8 samples: a different loss."""
    case = result["global_all"]
    assert abs(case["local_mining_loss_2"] - case["loss_1"]) > 1e-4


def test_fit_with_global_mining_takes_the_single_device_step(result):
    case = result["fit_global"]
    assert case["loss_2"] == pytest.approx(case["loss_1"], rel=1e-5)
    np.testing.assert_allclose(case["kernel_2"], case["kernel_1"], rtol=1e-5, atol=1e-6)


def test_center_update_is_global_and_identical_on_replicas(result):
    case = result["center"]
    want, _ = center_step(np.array(case["c0"]), np.array(case["emb"]), case["labels"], 0.5)
    first, second = (np.array(r) for r in case["replicas"])
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, want, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def multiworker(tmp_path_factory):
    script = pathlib.Path(__file__).parent / "scripts_metric" / "multiworker_metric.py"
    tmp = tmp_path_factory.mktemp("mwms")
    ports = [str(p) for p in free_ports(2)]
    outs = [tmp / f"worker{i}.json" for i in range(2)]
    finish([start([script, i, *ports, outs[i], *MINING]) for i in range(2)])
    return [json.loads(o.read_text()) for o in outs]


@pytest.mark.slow
@pytest.mark.parametrize("mining", MINING)
def test_multiworker_global_mining_equals_one_process(multiworker, mining):
    """Two worker processes (MultiWorkerMirroredStrategy, localhost) with global mining give the
    loss and gradients of one process on the concatenated batch; local mining does not."""
    import tensorflow as tf

    import keras_facemargin as kf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = rng.integers(0, 4, 16).astype("int64")
    w = tf.Variable(rng.normal(size=(6, 5)).astype("float32"))
    with tf.GradientTape() as tape:
        loss = kf.TripletLoss(mining=mining, distance="l2")(y, tf.matmul(x, w))
    grad = tape.gradient(loss, w).numpy()
    for worker in multiworker:
        assert worker["num_replicas"] == 2
        got = worker[f"{mining}_global"]
        assert got["loss"] == pytest.approx(float(loss), rel=1e-5)
        np.testing.assert_allclose(got["grad"], grad, rtol=1e-4, atol=1e-6)
    assert multiworker[0][f"{mining}_global"] == multiworker[1][f"{mining}_global"]
