"""Heads in Sequential model.fit under MirroredStrategy (2 logical CPU devices).

The head's context must reach the loss inside each replica, and the heads' state (CurricularFace t,
AdaFace norm statistics, SphereFace step) must be identical on both replicas and equal to the
update computed on the global batch.
"""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import reference as R

SCRIPT = pathlib.Path(__file__).parent / "scripts_heads" / "mirrored_heads.py"


@pytest.fixture(scope="module")
def result():
    names = ["ArcMarginLayer", "CurricularMarginLayer", "AdaMarginLayer", "SphereMarginLayer",
             "MagMarginLayer"]
    out = subprocess.run([sys.executable, str(SCRIPT), *names], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(16, 6)), rng.integers(0, 4, 16)


def test_margin_loss_sees_the_context_in_every_replica(result):
    x, y = _data()
    W = np.array(result["SphereMarginLayer"]["kernel0"])
    # SGD(lr=0): the reported loss of the single step is the loss at the initial weights,
    # first step of the annealing schedule: lambda = 1000.
    expected = R.ce(R.sphere(x, W, y, 4, 1.0, 1000.0), y)
    assert result["SphereMarginLayer"]["loss"][0] == pytest.approx(expected, rel=1e-4)
    W = np.array(result["MagMarginLayer"]["kernel0"])
    logits, reg = R.mag(x, W, y, 8.0)
    assert result["MagMarginLayer"]["loss"][0] == pytest.approx(R.ce(logits, y) + reg, rel=1e-4)


def test_state_is_the_global_batch_update_on_both_replicas(result):
    x, y = _data()
    W = np.array(result["CurricularMarginLayer"]["kernel0"])
    t = 0.01 * R.cosines(x, W)[np.arange(16), y].mean()
    assert result["CurricularMarginLayer"]["state"]["t"] == pytest.approx([t, t], rel=1e-5)
    ada = result["AdaMarginLayer"]["state"]
    norms = np.linalg.norm(x, axis=1)
    halves = [norms[:8], norms[8:]]  # each replica's statistics, averaged across replicas
    mean = 0.01 * np.mean([h.mean() for h in halves]) + 0.99 * 20.0
    std = 0.01 * np.mean([h.std(ddof=1) for h in halves]) + 0.99 * 100.0
    assert ada["batch_mean"] == pytest.approx([mean, mean], rel=1e-5)
    assert ada["batch_std"] == pytest.approx([std, std], rel=1e-5)
    assert result["SphereMarginLayer"]["state"]["step"] == [1.0, 1.0]
