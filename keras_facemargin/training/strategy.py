"""Strategy checks: refuse configurations TensorFlow cannot run, with a clear message."""
from __future__ import annotations

import tensorflow as tf


def check_jit_compile(strategy: tf.distribute.Strategy, jit_compile: bool) -> None:
    """Raise if `jit_compile=True` cannot run under `strategy`.

    MirroredStrategy with more than one replica on CPU devices fails inside
    TensorFlow when the train step is XLA-compiled; this says so up front.

    Args:
        strategy: The `tf.distribute.Strategy` the model is built under.
        jit_compile: The value to be passed to `model.compile`.

    Returns:
        None.

    Example:
    >>> check_jit_compile(tf.distribute.get_strategy(), True)
    """
    if not jit_compile:
        return
    devices = list(getattr(strategy.extended, "worker_devices", ()))
    if (isinstance(strategy, tf.distribute.MirroredStrategy) and len(devices) > 1
            and all("CPU" in d.upper() for d in devices)):
        raise ValueError(
            "jit_compile=True is not supported by MirroredStrategy over logical "
            "CPU devices: TensorFlow cannot XLA-compile a step replicated over "
            "several CPU devices. Use jit_compile=False, or one device. "
            f"Received: jit_compile={jit_compile}, devices={devices}")
