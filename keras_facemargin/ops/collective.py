"""Cross-replica collectives for losses under ``tf.distribute`` (no-ops everywhere else).

The losses call these from inside the per-replica step. Outside a multi-replica
``tf.distribute`` replica context (one device, another backend, eager numpy calls) they return
their input unchanged, so the same loss code runs everywhere.
"""

from __future__ import annotations

import keras


def replica_context():
    """The current ``tf.distribute`` replica context when it spans several replicas, else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def all_gather(x):
    """Concatenate ``x`` along axis 0 over all replicas (replica order), with its gradient.

    The gradient of the gathered tensor flows back to each replica's own slice, summed over
    the replicas that used it, which is what a loss computed on the global batch needs.
    """
    context = replica_context()
    return x if context is None else context.all_gather(x, axis=0)


def all_sum(values):
    """Sum each tensor of the list ``values`` over all replicas."""
    context = replica_context()
    if context is None:
        return values
    import tensorflow as tf

    return context.all_reduce(tf.distribute.ReduceOp.SUM, values)
