"""model.fit under MultiWorkerMirroredStrategy (2 processes) and MirroredStrategy (2 CPUs)."""

import json
import pathlib

import numpy as np
import pytest

from helpers import free_ports
from procs import describe, finish, start

SCRIPT = pathlib.Path(__file__).parent / "scripts" / "multiworker_fit.py"


def run(*args):
    return start([SCRIPT, *args])


def parse(out):
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def single():
    (single,) = finish([run("single")], ["single process"])
    return parse(single.out)


@pytest.mark.slow
def test_two_workers_train_like_one_process(single):
    ports = free_ports(2)
    procs = [run("worker", i, *ports) for i in range(2)]
    outs = finish(procs)
    workers = [parse(r.out) for r in outs]
    assert all(w["replicas"] == 2 for w in workers)
    for a, b in zip(workers[0]["weights"], workers[1]["weights"], strict=True):
        np.testing.assert_array_equal(a, b)  # identical on both workers
    for got, want in zip(workers[0]["weights"], single["weights"], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    loss = workers[0]["loss"]
    assert loss[-1] < loss[0]
    np.testing.assert_allclose(loss, single["loss"], rtol=1e-4)
    assert workers[0]["batches"] == 3 * 6  # callbacks see every step: 96 / 16 per epoch
    assert "Epoch 3/3" in outs[0].out + outs[0].err  # Keras' progress output


@pytest.mark.slow
def test_mirrored_two_cpus_train_like_one_device(single):
    (proc,) = finish([run("mirrored")], ["mirrored process"])
    mirrored = parse(proc.out)
    assert mirrored["replicas"] == 2
    for got, want in zip(mirrored["weights"], single["weights"], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mirrored["loss"], single["loss"], rtol=1e-4)


@pytest.mark.slow
def test_a_worker_without_peers_times_out_clearly():
    """Worker 1 started while the chief (worker 0, the coordination leader) never comes up."""
    port, dead = free_ports(2)
    (alone,) = finish([run("worker", 1, dead, port, "alone")], ["lone worker 1"], check=False)
    assert alone.returncode == 3, describe([alone])
    message = parse(alone.out)["timeout_error"]
    assert "could not reach its peers" in message and str(dead) in message
