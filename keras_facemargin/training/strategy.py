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
    reason = jit_compile_obstacle(strategy) if jit_compile else None
    if reason:
        raise ValueError(
            f"{reason} Use jit_compile=False, or keep it and call "
            "keras_facemargin.training.enable_multiworker_fit(model) after compile: it "
            "XLA-compiles each replica's forward pass and gradients only. "
            f"Received: jit_compile={jit_compile}"
        )


def jit_compile_obstacle(strategy: tf.distribute.Strategy) -> str | None:
    """Why TensorFlow cannot XLA-compile a train step under ``strategy``, or None.

    Two cases are known (TF 2.21): MirroredStrategy over several CPU devices (XLA cannot reach a
    variable on another CPU device), and MultiWorkerMirroredStrategy on CPU workers ("Collectives
    are not yet implemented for CPU devices when compiling with XLA"). On GPUs both compile.
    """
    try:
        devices = list(strategy.extended.worker_devices)
    except (RuntimeError, AttributeError):  # the default strategy: one device, XLA works
        return None
    cpu_only = bool(devices) and all("CPU" in d.upper() for d in devices)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and cpu_only:
        return ("jit_compile=True is not supported by MultiWorkerMirroredStrategy on CPU workers: "
                "TensorFlow's XLA has no CPU collectives (b/194942685). "
                f"Devices: {devices}.")
    if (isinstance(strategy, tf.distribute.MirroredStrategy) and len(devices) > 1
            and cpu_only):
        return ("jit_compile=True is not supported by MirroredStrategy over logical CPU devices: "
                "TensorFlow cannot XLA-compile a step replicated over several CPU devices (use "
                f"one device for XLA). Devices: {devices}.")
    return None
