"""Proof that jit_compile=True really compiles each head's train step with XLA (no fallback).

Each run trains every head for one step in a fresh process with XLA's dump enabled
(XLA_FLAGS=--xla_dump_to); XLA writes one HLO module per compiled function. With
jit_compile=True there is one compiled train-step module per head; with jit_compile=False none.
"""

import os
import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).parent / "scripts" / "xla_fit_heads.py"


def dumped_train_steps(tmp_path, mode):
    dump = tmp_path / mode
    env = dict(os.environ, XLA_FLAGS=f"--xla_dump_to={dump}", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(SCRIPT), mode], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = proc.stdout.split()
    modules = {p.name.split(".")[1] for p in dump.glob("module_*.before_optimizations.txt")} \
        if dump.exists() else set()
    return trained, {m for m in modules if "one_step_on" in m or "multi_step_on" in m}


@pytest.mark.slow
def test_every_head_train_step_is_xla_compiled(tmp_path):
    trained, steps = dumped_train_steps(tmp_path, "on")
    assert len(trained) == 12
    assert len(steps) >= len(trained), steps  # one compiled step (at least) per head
    _, none = dumped_train_steps(tmp_path, "off")
    assert none == set()  # the control: without jit_compile nothing is XLA-compiled
