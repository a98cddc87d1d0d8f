"""benchmarks/export.py's side-by-side with insightface's torch.onnx route: the timing and
table helpers (pure), and insightface's side in its own PyTorch environment (when given)."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("export_bench", ROOT / "benchmarks" / "export.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

#: a Python with torch and onnx (e.g. /work/venvs/torch/bin/python) and a checkout of
#: deepinsight/insightface; the torch test is skipped without them.
TORCH_PYTHON = os.environ.get("KFM_TORCH_PYTHON")
INSIGHTFACE_SRC = os.environ.get("KFM_INSIGHTFACE_SRC")


class FakeClock:
    """A clock that each timed callable advances by its own known duration."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_alternate_interleaves_and_reverses_the_order_every_round():
    clock, calls = FakeClock(), []
    durations = {"a": [0.001 * k for k in range(1, 8)], "b": [0.010 * k for k in range(1, 8)]}

    def make(name):
        def fn():
            calls.append(name)
            clock.now += durations[name][len([c for c in calls if c == name]) - 1]
        return fn

    times = bench.alternate({"a": make("a"), "b": make("b")}, repeats=5, warmup=2, clock=clock)
    # 2 warm-up rounds in the given order, then a b, b a, a b, b a, a b
    assert calls == ["a", "b", "a", "b", "a", "b", "b", "a", "a", "b", "b", "a", "a", "b"]
    # the timed calls are the 3rd to 7th of each callable, in ms
    np.testing.assert_allclose(times["a"], [1.0 * k for k in range(3, 8)])
    np.testing.assert_allclose(times["b"], [10.0 * k for k in range(3, 8)])
    with pytest.raises(ValueError, match="repeats"):
        bench.alternate({"a": lambda: None}, repeats=0)


def test_side_by_side_medians_per_image_and_ratios():
    theirs = [10.0, 30.0, 20.0, 100.0]
    ours = [9.0, 12.0, 30.0, 50.0]
    row = bench.side_by_side(theirs, ours, batch=4)
    # numpy re-derivation: median of 4 values = mean of the middle two
    assert row["theirs_ms"] == pytest.approx(np.median(theirs) / 4)  # 25 / 4
    assert row["ours_ms"] == pytest.approx(np.median(ours) / 4)      # 21 / 4
    assert row["ratio"] == pytest.approx(21.0 / 25.0)
    # paired ratios 0.9, 0.4, 1.5, 0.5 -> median (0.5 + 0.9) / 2
    assert row["paired_ratio"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="same non-empty rounds"):
        bench.side_by_side([1.0], [1.0, 2.0], batch=1)


def test_anchor_table_rows_with_and_without_insightface():
    rows = [dict(backbone="mbf", batch=1, their_file="torch2onnx.py",
                 **bench.side_by_side([4.0, 4.0], [3.0, 3.0], batch=1)),
            dict(backbone="r50", batch=32, ours_ms=2.5)]
    lines = bench.anchor_table(rows)
    assert lines[0].startswith("| backbone | batch |") and lines[1].startswith("|---|")
    assert lines[2] == "| mbf | 1 | torch2onnx.py | 4.00 | 3.00 | 0.75x | 0.75x |"
    assert lines[3] == "| r50 | 32 | - | - | 2.50 | - | - |"


def test_op_counts_and_weights_of_an_onnx_file(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    shape = helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(
        np.array([1, -1], np.int64)))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"]), shape,
         helper.make_node("Reshape", ["y", "shape"], ["z"]),
         helper.make_node("Relu", ["z"], ["out"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], [w])
    path = str(tmp_path / "m.onnx")
    onnx.save(helper.make_model(graph), path)
    assert bench.op_counts(path) == {"Conv": 1, "Constant": 1, "Reshape": 1, "Relu": 1}
    assert bench.onnx_weights(path) == 4 * 3 * 3 * 3 + 2


@pytest.mark.slow
@pytest.mark.skipif(not (TORCH_PYTHON and INSIGHTFACE_SRC),
                    reason="insightface's side needs KFM_TORCH_PYTHON (a Python with torch and "
                           "onnx, e.g. /work/venvs/torch/bin/python) and KFM_INSIGHTFACE_SRC (a "
                           "checkout of deepinsight/insightface)")
def test_insightface_mbf_file_and_ours_take_and_give_the_same_shapes(tmp_path):
    """insightface's mbf, exported as its torch2onnx.py does in the torch environment (with
    our weights copied into its module), and our mobilefacenet(scale=2) through to_onnx: the same input ([N, 3, 112, 112] float32) and
    output ([N, 512]) in onnxruntime, at batch 1 (torch2onnx's file) and 2 (its file with a
    dynamic batch, which the benchmark uses above batch 1); the same trainable parameter count
    (torch's count vs Keras'), and the same embeddings: the timing compares the same
    network."""
    from keras_facemargin.backbones import mobilefacenet
    from keras_facemargin.export.onnx import to_onnx

    keras.utils.set_random_seed(0)
    model = bench.trained_like(mobilefacenet(scale=2))
    weights = str(tmp_path / "w.npz")
    np.savez(weights, **{f"w{i:04d}": a
                         for i, a in enumerate(bench.torch_layout_weights(model))})
    theirs, dynamic = str(tmp_path / "theirs.onnx"), str(tmp_path / "theirs_dynamic.onnx")
    meta = bench.torch_export(TORCH_PYTHON, INSIGHTFACE_SRC, "mbf", theirs, weights=weights)
    bench.torch_export(TORCH_PYTHON, INSIGHTFACE_SRC, "mbf", dynamic, dynamic_batch=True)
    ours = str(tmp_path / "ours.onnx")
    to_onnx(model, ours, verify=False, embedding_layer="embedding")
    assert meta["trainable_params"] == sum(int(np.prod(w.shape))
                                           for w in model.trainable_weights)
    assert meta["opset"] == 11 and meta["network"] == "mbf"
    x = np.random.default_rng(0).standard_normal((2, 3, 112, 112)).astype(np.float32)
    outputs = {}
    for key, path, batch in [("theirs", theirs, 1), ("theirs", dynamic, 2), ("ours", ours, 1),
                             ("ours", ours, 2)]:
        session = bench.ort_session(path, threads=1)
        (inp,) = session.get_inputs()
        assert len(session.get_outputs()) == 1
        assert inp.type == "tensor(float)" and inp.shape[1:] == [3, 112, 112]
        assert isinstance(inp.shape[0], str)  # a named (dynamic) batch dimension
        y = session.run(None, {inp.name: x[:batch]})[0]
        outputs[key, batch] = y.shape
    assert outputs["theirs", 1] == outputs["ours", 1] == (1, 512)
    assert outputs["theirs", 2] == outputs["ours", 2] == (2, 512)
    # torch2onnx's own file is fixed at batch 1 where mbf reads the batch (x.view(x.size(0),
    # -1) folded): the benchmark detects that and uses the dynamic export
    assert not bench.runs_at(theirs, 2, threads=1)
    assert bench.runs_at(dynamic, 2, threads=1) and bench.runs_at(ours, 2, threads=1)
    # our weights in insightface's own module: its torch.onnx file gives our embeddings (our
    # file maps insightface's 127.5 / 127.5 input onto the trained 127.5 / 128 inside)
    a, b = bench.ort_session(theirs, threads=1), bench.ort_session(ours, threads=1)
    want = a.run(None, {"data": x[:1] * 127.5 / 128})[0][0]
    got = b.run(None, {b.get_inputs()[0].name: x[:1]})[0][0]
    assert np.dot(want, got) / np.linalg.norm(want) / np.linalg.norm(got) >= 0.99999


def test_torch_side_refuses_a_folder_without_arcface_torch(tmp_path):
    """The torch-side script says what --insightface-src must be (before importing torch)."""
    script = ROOT / "benchmarks" / "insightface_torch_export.py"
    done = subprocess.run([sys.executable, str(script), "--insightface-src", str(tmp_path),
                           "--network", "mbf", "--output", str(tmp_path / "x.onnx")],
                          capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert "--insightface-src must be a checkout of deepinsight/insightface" in done.stderr
    assert f"Received: --insightface-src={str(tmp_path)!r}" in done.stderr


def test_torch_layout_weights_flatten_order_and_bn_without_scale():
    """The Dense after a Flatten of (h, w, c) gets torch's (out, c * h * w) layout: applied to
    the NCHW-flattened input in NumPy it gives Keras' output; a BN without scale gets ones
    first (insightface's frozen weight), then beta, mean, variance; conv kernels go to
    (out, in, kh, kw)."""
    inputs = keras.Input((2, 3, 4))
    x = keras.layers.Conv2D(4, 1, use_bias=False, name="c")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(5, name="fc")(x)
    x = keras.layers.BatchNormalization(scale=False, name="bn")(x)
    model = keras.Model(inputs, x)
    conv, w, b, beta, mean, var = (keras.ops.convert_to_numpy(v) for v in model.weights)
    arrays = bench.torch_layout_weights(model)
    assert [a.shape for a in arrays] == [(4, 4, 1, 1), (5, 24), (5,), (5,), (5,), (5,), (5,)]
    np.testing.assert_array_equal(arrays[0][:, :, 0, 0], conv[0, 0].T)
    np.testing.assert_array_equal(arrays[3], np.ones(5))
    np.testing.assert_array_equal(arrays[4], beta)
    feat = np.random.default_rng(0).normal(size=(3, 2, 3, 4)).astype(np.float32)
    nchw = feat.transpose(0, 3, 1, 2).reshape(3, -1)
    dense = keras.Model(model.get_layer("c").output, model.get_layer("fc").output)
    want = keras.ops.convert_to_numpy(dense(feat))
    np.testing.assert_allclose(nchw @ arrays[1].T + arrays[2], want, rtol=1e-5, atol=1e-5)
    assert mean.shape == var.shape == (5,)
