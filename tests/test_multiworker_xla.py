"""jit_compile=True where Keras' whole step cannot be XLA-compiled (CPU workers, mirrored CPUs).

TensorFlow cannot XLA-compile CPU collectives (tests/test_strategy_xla_limits.py), so
``enable_multiworker_fit`` compiles each replica's forward pass, loss and gradients with XLA and
leaves the all-reduce and the optimizer update outside. Two worker processes on localhost: the
XLA dump holds the compiled forward/backward module and no collective; both workers end with
identical weights equal to one process training on the same global batches with XLA.
"""

import json
import os
import pathlib

import numpy as np
import pytest

from helpers import free_ports
from procs import finish, start

SCRIPT = pathlib.Path(__file__).parent / "scripts" / "multiworker_fit.py"


def _start(dump, *args):
    env = dict(os.environ, FACEMARGIN_TEST_JIT="1", XLA_FLAGS=f"--xla_dump_to={dump}",
               CUDA_VISIBLE_DEVICES="")
    return start([SCRIPT, *args], env=env)


def _finish(procs):
    return [(json.loads(r.out.strip().splitlines()[-1]), r.err) for r in finish(procs)]


def _modules(dump):
    return {p: p.read_text() for p in pathlib.Path(dump).glob("*.before_optimizations.txt")}


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process, default strategy, Keras' whole train step under XLA."""
    dump = tmp_path_factory.mktemp("single")
    (result, _), = _finish([_start(dump, "single")])
    assert _modules(dump)  # the single process really ran under XLA
    return result


@pytest.mark.slow
def test_two_workers_xla_compile_the_local_step_and_train_like_one_process(tmp_path, single):
    ports = free_ports(2)
    dumps = [tmp_path / f"worker{i}" for i in range(2)]
    workers = _finish([_start(dumps[i], "worker", i, *ports) for i in range(2)])
    for dump, (result, err) in zip(dumps, workers, strict=True):
        assert result["replicas"] == 2
        assert "Only each replica's forward pass, loss and gradients are XLA-compiled" in err
        modules = _modules(dump)
        compiled = [p for p in modules if "forward_backward" in p.name]
        assert compiled, sorted(p.name for p in modules)  # really compiled by XLA
        for text in modules.values():  # no collective inside XLA
            assert "all-reduce" not in text and "all-gather" not in text
    (a, _), (b, _) = workers
    for wa, wb in zip(a["weights"], b["weights"], strict=True):
        np.testing.assert_array_equal(wa, wb)
    for got, want in zip(a["weights"], single["weights"], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a["loss"], single["loss"], rtol=1e-4)
    assert a["loss"][-1] < a["loss"][0]
    assert a["batches"] == 18  # callbacks see every step


@pytest.mark.slow
def test_mirrored_two_cpus_xla_compile_each_replica_and_train_like_one_device(tmp_path, single):
    (mirrored, err), = _finish([_start(tmp_path / "mirrored", "mirrored")])
    assert mirrored["replicas"] == 2
    assert "Only each replica's forward pass, loss and gradients are XLA-compiled" in err
    modules = _modules(tmp_path / "mirrored")
    compiled = [p for p in modules if "forward_backward" in p.name]
    assert len(compiled) >= 2, sorted(p.name for p in modules)  # one per replica device
    for got, want in zip(mirrored["weights"], single["weights"], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mirrored["loss"], single["loss"], rtol=1e-4)


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_split_step_equals_keras_step_on_one_device(policy):
    """The split step (forward/backward under XLA, update outside) trains like Keras' step,
    including the loss scaling of mixed_float16 and BatchNormalization's moving statistics."""
    import keras

    import keras_facemargin as kf
    from keras_facemargin.training.multiworker import _xla_local_train_step

    rng = np.random.default_rng(3)
    x = rng.normal(size=(48, 6)).astype("float32")
    y = rng.integers(0, 4, 48)
    results = []
    previous = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy(policy)
        for split in (False, True):
            keras.utils.set_random_seed(7)
            head = kf.ArcMarginLayer(4, margin=0.3, scale=8.0, dtype="float32")
            model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5),
                                      keras.layers.BatchNormalization(), head])
            model.compile(keras.optimizers.SGD(0.1, momentum=0.9), loss=head.loss,
                          jit_compile=False)
            if split:
                model.train_step = _xla_local_train_step(model)
            history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
            results.append((history.history["loss"], model.get_weights()))
    finally:
        keras.config.set_dtype_policy(previous)
    (loss_a, w_a), (loss_b, w_b) = results
    assert np.all(np.isfinite(loss_b))
    tol = 1e-5 if policy == "float32" else 2e-2
    np.testing.assert_allclose(loss_b, loss_a, rtol=tol)
    for a, b in zip(w_a, w_b, strict=True):
        np.testing.assert_allclose(np.float32(b), np.float32(a), rtol=tol, atol=tol)
