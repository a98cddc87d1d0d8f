"""Test helpers: run a head on fixed inputs and get the loss and its gradients."""

import keras
import numpy as np
import tensorflow as tf


def rel_err(a, b):
    """max|a - b| / max|b| (the oracle's relative difference)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def head_loss_and_grads(head, emb, labels, kernel, path="labels"):
    """Mean cross-entropy of ``head`` and d/d(emb), d/d(kernel); both call paths supported."""
    emb = tf.Variable(np.asarray(emb, np.float32))
    if not head.built:
        head.build((None, emb.shape[-1]))
    head.kernel.assign(np.asarray(kernel, np.float32))
    labels = np.asarray(labels)
    with tf.GradientTape() as tape:
        if path == "labels":
            logits = head(emb, labels)
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
        else:
            loss = head.loss(labels, head(emb))
        loss = loss + sum(head.losses) if head.losses else loss
    g_emb, g_w = tape.gradient(loss, [emb, head.kernel.value])
    return float(loss), np.asarray(g_emb), np.asarray(g_w)


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
