"""Test helpers: run a head on fixed inputs and get the loss and its gradients."""

import keras
import numpy as np
import tensorflow as tf


def rel_err(a, b):
    """max|a - b| / max|b| (the oracle's relative difference)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def set_centres(head, W, dim=None):
    """Build ``head`` if needed and give it the class centres ``W`` in the peers' (D, C*K) layout.

    The head stores one centre per row, (C*K, D) (insightface's layout): it is assigned ``W.T``.
    """
    W = np.asarray(W, np.float32)
    if not head.built:
        head.build((None, W.shape[0] if dim is None else dim))
    head.kernel.assign(W.T)
    return head


def centres(head):
    """The head's class centres in the peers' (D, C*K) layout, as numpy."""
    return np.asarray(head.kernel.numpy()).T


def head_loss_and_grads(head, emb, labels, kernel, path="labels"):
    """Mean cross-entropy of ``head`` and d/d(emb), d/d(kernel); both call paths supported.

    ``kernel`` is in the peers' (D, C*K) layout; the kernel gradient is returned in it too.
    """
    emb = tf.Variable(np.asarray(emb, np.float32))
    set_centres(head, kernel, dim=emb.shape[-1])
    labels = np.asarray(labels)
    with tf.GradientTape() as tape:
        if path == "labels":
            logits = head(emb, labels)
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
        else:
            loss = head.loss(labels, head(emb))
        loss = loss + sum(head.losses) if head.losses else loss
    g_emb, g_w = tape.gradient(loss, [emb, head.kernel.value])
    return float(loss), np.asarray(g_emb), np.asarray(g_w).T


def free_ports(n):
    """``n`` distinct free localhost TCP ports, chosen at run time."""
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports
