"""Clean output: TensorFlow's native log lines never reach the user of ``facemargin`` / the demo.

The filter in ``keras_facemargin/quiet.py`` is checked on lines TensorFlow 2.21 really prints
(copied from a run), and end to end: ``python -m keras_facemargin.cli train`` in a subprocess,
whose stderr must hold no ``I0000``/``W0000``/``E0000`` line, while ``facemargin --verbose``
shows them (so the check can fail: TensorFlow does print them in this environment).
"""

import os
import re

import numpy as np

from keras_facemargin.quiet import filter_native_lines, verbose_requested

from procs import run

NATIVE = re.compile(r"^[IWE]\d{4} |^WARNING: All log messages before absl::InitializeLog",
                    re.MULTILINE)
REAL = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    b"I0000 00:00:1796217940.846382    6727 port.cc:153] oneDNN custom operations are on.\n"
    b"I0000 00:00:1796218042.332252    8563 cpu_feature_guard.cc:227] This TensorFlow binary is "
    b"optimized to use available CPU instructions in performance-critical operations.\n"
    b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    b"TensorFlow with the appropriate compiler flags.\n"
    b"E0000 00:00:1796217944.444588    6727 node_def_util.cc:682] NodeDef mentions attribute "
    b"use_unbounded_threadpool which is not in the op definition: Op<name=MapDataset>\n"
    b"2026-12-02 13:00:00.123456: W tensorflow/core/framework/op_kernel.cc:1840] old format\n"
)


def test_filter_drops_native_info_warning_error_lines_and_keeps_the_rest():
    assert filter_native_lines(REAL) == b""
    kept = b"facemargin train: error: --data does not exist\n"
    fatal = b"F0000 00:00:1796217944.1    6727 check.cc:1] Check failed: x\n"
    # a line without a header right after a dropped message is that message's continuation
    assert filter_native_lines(REAL + fatal + b"after fatal\n") == fatal + b"after fatal\n"
    assert filter_native_lines(kept + REAL + kept) == kept  # (Python writes bypass the pipe)
    assert filter_native_lines(kept + REAL + fatal) == kept + fatal


def test_verbose_counts_only_before_the_sub_command():
    assert verbose_requested(["--verbose", "train", "--data", "x"])
    assert not verbose_requested(["train", "--verbose", "2"])  # Keras verbosity of train


def _folder(root, people=2, per_person=4, size=16):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for p in range(people):
        os.makedirs(root / f"id{p}")
        for i in range(per_person):
            img = rng.integers(0, 255, (size, size, 3)).astype("uint8")
            (root / f"id{p}" / f"{i}.png").write_bytes(tf.io.encode_png(img).numpy())
    return root


def test_cli_train_prints_no_native_log_lines(tmp_path):
    data = _folder(tmp_path / "faces")
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "FACEMARGIN_QUIET_NATIVE")}
    args = ["-m", "keras_facemargin.cli", "train", "--data", data, "--backbone", "tiny",
            "--image-size", "16", "--embedding-size", "8", "--batch-size", "4", "--epochs", "1",
            "--checkpoint-dir", tmp_path / "ckpt", "--verbose", "0"]
    quiet = run(args, name="facemargin train", env=env)
    assert not NATIVE.search(quiet.err), quiet.err[-3000:]
    assert "| 1 |" in quiet.out  # the package's own summary still printed
    # the same process start with --verbose: TensorFlow's lines are there to be silenced
    loud = run(["-m", "keras_facemargin.cli", "--verbose", "train", "--data",
                tmp_path / "missing"], name="facemargin --verbose", env=env, check=False)
    assert loud.returncode == 2, loud.err[-3000:]
    assert NATIVE.search(loud.err), loud.err[-3000:]
    assert "--data does not exist" in loud.err
