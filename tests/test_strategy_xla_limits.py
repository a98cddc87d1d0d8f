"""Where TensorFlow (2.21) cannot XLA-compile a Keras train step, checked by running it.

These record TensorFlow's behaviour, without the package's checks in the way: if a TensorFlow
release lifts a limit, the test fails and ``jit_compile_obstacle`` / docs/distributed.md must
be updated.
"""

import json
import pathlib

import pytest

from keras_facemargin.training.strategy import jit_compile_obstacle

from helpers import free_ports
from procs import finish, start

SCRIPT = pathlib.Path(__file__).parent / "scripts" / "xla_strategy_limits.py"


def _outcome(procs):
    return [json.loads(r.out.strip().splitlines()[-1]) for r in finish(procs)]


def _start(*args):
    return start([SCRIPT, *args])


@pytest.mark.slow
def test_mirrored_over_two_cpus_cannot_xla_compile():
    (result,) = _outcome([_start("mirrored")])
    assert not result["ok"], "TensorFlow now XLA-compiles MirroredStrategy over CPUs: update docs"
    assert "located in device" in result["error"] and "CPU:1" in result["error"], result


@pytest.mark.slow
def test_multiworker_cpu_collectives_cannot_xla_compile():
    ports = free_ports(2)
    results = _outcome([_start("worker", i, *ports) for i in range(2)])
    assert not any(r["ok"] for r in results), "TensorFlow now XLA-compiles CPU collectives"
    # The first worker to compile reports XLA's refusal; its peer may instead see its
    # collective aborted (UnavailableError).
    assert any("Collectives are not yet implemented for CPU devices" in r["error"]
               for r in results), results


def test_default_strategy_has_no_obstacle():
    import tensorflow as tf

    assert jit_compile_obstacle(tf.distribute.get_strategy()) is None
