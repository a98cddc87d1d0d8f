"""model.fit under MultiWorkerMirroredStrategy (2 processes) and MirroredStrategy (2 CPUs)."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from helpers import free_ports

SCRIPT = pathlib.Path(__file__).parent / "scripts" / "multiworker_fit.py"


def run(*args, timeout=300):
    return subprocess.Popen([sys.executable, str(SCRIPT), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(proc, timeout=300):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, out, err


def parse(out):
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def single():
    code, out, err = result(run("single"))
    assert code == 0, err[-3000:]
    return parse(out)


@pytest.mark.slow
def test_two_workers_train_like_one_process(single):
    ports = free_ports(2)
    procs = [run("worker", i, *ports) for i in range(2)]
    outs = [result(p) for p in procs]
    for code, _, err in outs:
        assert code == 0, err[-3000:]
    workers = [parse(out) for _, out, _ in outs]
    assert all(w["replicas"] == 2 for w in workers)
    for a, b in zip(workers[0]["weights"], workers[1]["weights"], strict=True):
        np.testing.assert_array_equal(a, b)  # identical on both workers
    for got, want in zip(workers[0]["weights"], single["weights"], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    loss = workers[0]["loss"]
    assert loss[-1] < loss[0]
    np.testing.assert_allclose(loss, single["loss"], rtol=1e-4)
    assert workers[0]["batches"] == 3 * 6  # callbacks see every step: 96 / 16 per epoch
    assert "Epoch 3/3" in outs[0][1] + outs[0][2]  # Keras' progress output


def test_mirrored_two_cpus_train_like_one_device(single):
    code, out, err = result(run("mirrored"))
    assert code == 0, err[-3000:]
    mirrored = parse(out)
    assert mirrored["replicas"] == 2
    for got, want in zip(mirrored["weights"], single["weights"], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mirrored["loss"], single["loss"], rtol=1e-4)


@pytest.mark.slow
def test_a_worker_without_peers_times_out_clearly():
    """Worker 1 started while the chief (worker 0, the coordination leader) never comes up."""
    port, dead = free_ports(2)
    code, out, err = result(run("worker", 1, dead, port, "alone"), timeout=120)
    assert code == 3, err[-2000:]
    message = parse(out)["timeout_error"]
    assert "could not reach its peers" in message and str(dead) in message
