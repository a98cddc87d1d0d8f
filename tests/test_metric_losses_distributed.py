"""Metric losses under MirroredStrategy over 2 logical CPU devices (in a subprocess)."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from metric_reference import center_step

SCRIPT = pathlib.Path(__file__).parent / "scripts_metric" / "mirrored_metric.py"
MINING = ["semihard", "semihard_all", "all", "hard"]


@pytest.fixture(scope="module")
def result():
    run = subprocess.run([sys.executable, str(SCRIPT), *MINING], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


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
