"""benchmarks/train_throughput.py: the alternation, the summary and the worker protocol without
torch; insightface's side on a tiny MobileFaceNet when a torch interpreter and insightface's
arcface_torch source are named by FACEMARGIN_TORCH_PYTHON and FACEMARGIN_INSIGHTFACE_SRC."""

import importlib.util
import os
import pathlib
import sys
import textwrap

import numpy as np
import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"
spec = importlib.util.spec_from_file_location("train_throughput", _PATH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

TORCH_PYTHON = os.environ.get("FACEMARGIN_TORCH_PYTHON")
INSIGHTFACE_SRC = os.environ.get("FACEMARGIN_INSIGHTFACE_SRC")


class FakeWorker:
    def __init__(self, name, steps, seconds, calls):
        self.name, self.steps, self._seconds, self._calls = name, steps, list(seconds), calls

    def run(self, steps):
        self._calls.append((self.name, steps))
        return self._seconds.pop(0)


def test_alternate_warms_up_then_interleaves_the_workers():
    calls = []
    a = FakeWorker("a", 3, [9.0, 1.0, 2.0, 3.0], calls)
    b = FakeWorker("b", 1, [9.0, 4.0, 5.0, 6.0], calls)
    times = bench.alternate([a, b], rounds=3, warmup=2)
    # warm-up (2 steps each, not recorded), then a, b, a, b, a, b with each worker's own steps
    assert calls == [("a", 2), ("b", 2)] + [("a", 3), ("b", 1)] * 3
    assert times == {"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]}
    with pytest.raises(ValueError, match="rounds"):
        bench.alternate([a], rounds=0)


def test_summarize_takes_medians_and_the_median_of_per_round_ratios():
    times = {"ours": [1.0, 2.0, 4.0, 1.5], "theirs": [10.0, 10.0, 20.0, 40.0]}
    steps = {"ours": 4, "theirs": 1}
    rows = {r["name"]: r for r in bench.summarize(times, steps, batch=8, reference="theirs")}
    ours = 8 * 4 / np.array(times["ours"])
    theirs = 8 * 1 / np.array(times["theirs"])
    assert rows["ours"]["images_s"] == pytest.approx(np.median(ours))
    assert rows["ours"]["low"] == pytest.approx(ours.min())
    assert rows["ours"]["high"] == pytest.approx(ours.max())
    assert rows["ours"]["step_s"] == pytest.approx(np.median(np.array(times["ours"]) / 4))
    # paired round by round: (32/1)/(8/10), (32/2)/(8/10), (32/4)/(8/20), (32/1.5)/(8/40)
    assert rows["ours"]["ratio"] == pytest.approx(np.median(ours / theirs))
    assert rows["ours"]["ratio"] != pytest.approx(np.median(ours) / np.median(theirs))
    assert rows["theirs"]["ratio"] == pytest.approx(1.0)
    table = bench.markdown_table(list(rows.values()), "theirs")
    assert "| x theirs |" in table.splitlines()[0]
    assert f"| ours | 0.438 | {np.median(ours):.2f} |" in table
    no_ref = bench.summarize(times, steps, batch=8)
    assert all(r["ratio"] is None for r in no_ref)
    assert "| - |" in bench.markdown_table(no_ref, None)


def _fake_worker_script(tmp_path, body):
    path = tmp_path / "worker.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def test_worker_speaks_json_lines_and_reports_a_failed_start(tmp_path):
    cmd = _fake_worker_script(tmp_path, """
        import json, sys
        print(json.dumps({"ready": True, "params": 7}), flush=True)
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd.get("quit"):
                break
            print("noise on stderr", file=sys.stderr)
            print(json.dumps({"seconds": 0.25 * cmd["steps"], "loss": 1.0}), flush=True)
        """)
    w = bench.Worker("fake", cmd, steps=3)
    try:
        assert w.info == {"ready": True, "params": 7}
        assert w.run() == 0.75 and w.run(2) == 0.5
        assert bench.alternate([w], rounds=2, warmup=1) == {"fake": [0.75, 0.75]}
    finally:
        w.close()
    assert w.proc.returncode == 0
    bad = _fake_worker_script(tmp_path, """
        import sys
        print("no torch here", file=sys.stderr)
        sys.exit(3)
        """)
    with pytest.raises(RuntimeError, match=r"(?s)exited \(3\).*no torch here"):
        bench.Worker("bad", bad, steps=1)


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--torch-python", sys.executable])
    assert "--insightface-src" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args(["--rounds", "0"])
    assert "rounds=0" in capsys.readouterr().err
    args = bench.parse_args([])
    assert (args.batch, args.classes, args.size, args.scale) == (64, 10000, 112, 2)
    assert args.xla_modes == ["off", "on"] and args.torch_python is None


TINY = ["--batch", "2", "--classes", "10", "--size", "112", "--scale", "1", "--blocks", "1", "1",
        "1", "1", "--threads", "1", "--rounds", "2", "--steps", "1", "--warmup", "1"]


@pytest.mark.slow
def test_without_torch_prints_our_row_and_how_to_get_torch(capsys):
    assert bench.main([*TINY, "--xla", "off"]) == 0
    out = capsys.readouterr().out
    assert "| ours, XLA off |" in out and "insightface" not in out.split("\n\n")[2]
    assert "insightface not measured: pass --torch-python" in out
    assert "command: python benchmarks/train_throughput.py --batch 2" in out


@pytest.mark.slow
@pytest.mark.skipif(not (TORCH_PYTHON and INSIGHTFACE_SRC),
                    reason="set FACEMARGIN_TORCH_PYTHON (a Python with torch) and "
                           "FACEMARGIN_INSIGHTFACE_SRC (insightface's recognition/arcface_torch)")
def test_insightface_side_by_side_on_a_tiny_mobilefacenet(capsys):
    args = bench.parse_args([*TINY, "--torch-python", TORCH_PYTHON,
                             "--insightface-src", INSIGHTFACE_SRC, "--xla", "off"])
    workers = bench.start_workers(args, log=lambda msg: None)
    try:
        ours, theirs = workers
        # two implementations of the same architecture: the same trainable parameter count
        assert ours.info["params"] == theirs.info["params"]
        assert theirs.info["threads"] == 1
        head = theirs.info["head"]
        assert head.startswith("insightface PartialFC_V2") or "CombinedMarginLoss" in head
        times = bench.alternate(workers, rounds=2, warmup=1)
        assert all(len(t) == 2 and min(t) > 0 for t in times.values())
        # ArcFace at s = 64 on 10 classes from random weights: a finite, positive loss
        assert np.isfinite(theirs.last["loss"]) and theirs.last["loss"] > 0
    finally:
        for w in workers:
            w.close()
    assert bench.main([*TINY, "--xla", "off", "--torch-python", TORCH_PYTHON,
                       "--insightface-src", INSIGHTFACE_SRC]) == 0
    out = capsys.readouterr().out
    assert "| insightface (PyTorch) |" in out and "| x insightface (PyTorch) |" in out
    row = next(line for line in out.splitlines() if line.startswith("| ours, XLA off |"))
    assert float(row.split("|")[5]) > 0
    assert f"--insightface-src {INSIGHTFACE_SRC}" in out
