"""Reduced run of examples/compare_losses.py (1 seed, 2 losses, 1 epoch) in a subprocess."""

import os
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "examples" / "compare_losses.py"


@pytest.mark.slow
def test_compare_losses_quick(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--losses", "Softmax,ArcFace",
                           "--out", str(out)], capture_output=True, text=True, timeout=240,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = (out / "compare_losses.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| Softmax") or
            line.startswith("| ArcFace")]
    assert len(rows) == 4  # one row per loss in each of the two tables
    acc = float(rows[0].split("|")[2].split("±")[0])
    assert 50.0 <= acc <= 100.0  # an accuracy in percent, not a fraction
    angles = [float(c.split("±")[0]) for c in rows[3].split("|")[2:8]]
    assert all(0.0 <= a <= 180.0 for a in angles)
    assert (out / "compare_losses.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*"))


def test_compare_losses_rejects_unknown_loss(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--losses", "Nope", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--losses" in proc.stderr
