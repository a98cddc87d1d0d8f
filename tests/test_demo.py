"""Smoke test of the demo (`make demo`): examples/train_digits.py --quick in a subprocess."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train_digits.py"
LOSS_ROWS = ("Softmax", "NormFace", "CosFace", "ArcFace", "Combined")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_train_digits_quick(tmp_path):
    """--quick trains all seven small models, prints the table and writes the two outputs."""
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"  # does not exist yet: the script must create it
    env = dict(os.environ, KERAS_BACKEND="tensorflow", MPLBACKEND="Agg")
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a newcomer runs it
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # clean output: none of TensorFlow's native I0000/W0000/E0000 log lines
    assert not re.search(r"^[IWE]\d{4} ", proc.stderr, re.MULTILINE), proc.stderr[-3000:]

    png = out / "digits_features.png"
    assert png.is_file()
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR" and data.endswith(b"IEND\xaeB`\x82")

    table = (out / "digits_table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]  # skip header
    assert [row.split("|")[1].strip().split()[0] for row in rows] == list(LOSS_ROWS)
    for row in rows:
        assert "%" in row and "±" in row
    assert "| loss |" in proc.stdout and all(name in proc.stdout for name in LOSS_ROWS)
    assert not list(out.glob(".*")), "temporary files left behind"
