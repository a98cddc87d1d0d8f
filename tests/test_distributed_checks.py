"""Strategy configuration checks, run in a subprocess (logical devices)."""
import os
import subprocess
import sys


def test_mirrored_cpu_refuses_jit():
    script = os.path.join(os.path.dirname(__file__), "scripts", "jit_mirrored_cpu.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    out = subprocess.run([sys.executable, script], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "REFUSED" in out.stdout
