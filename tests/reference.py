"""Independent float64 NumPy re-derivations of every head's logits (written from the papers).

Nothing here imports keras_facemargin: the tests compare the package against these.
"""

import numpy as np


def cosines(emb, W, K=1):
    x = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-6)
    w = W / np.maximum(np.linalg.norm(W, axis=0, keepdims=True), 1e-6)
    cos = x @ w
    if K > 1:
        cos = cos.reshape(cos.shape[0], -1, K).max(axis=-1)
    return np.clip(cos, -1.0, 1.0)


def psi(phi):
    """SphereFace's psi generalised: cos on [0, pi], continued by (-1)^k cos(phi) - 2k."""
    k = np.floor(phi / np.pi)
    return (-1.0) ** k * np.cos(phi) - 2.0 * k


def with_target(cos, y, target, scale):
    logits = cos.copy()
    logits[np.arange(len(y)), y] = target
    return scale * logits


def ce(logits, y):
    """Mean softmax cross-entropy with a stable log-sum-exp."""
    mx = logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits - mx).sum(axis=1)) + mx[:, 0]
    return float(np.mean(lse - logits[np.arange(len(y)), y]))


def combined(emb, W, y, m1, m2, m3, s, K=1):
    cos = cosines(emb, W, K)
    cy = cos[np.arange(len(y)), y]
    return with_target(cos, y, psi(m1 * np.arccos(cy) + m2) - m3, s)


def sphere(emb, W, y, m, s, lam):
    cos = cosines(emb, W)
    cy = cos[np.arange(len(y)), y]
    theta = np.arccos(cy)
    k = np.floor(m * theta / np.pi)
    p = (-1.0) ** k * np.cos(m * theta) - 2 * k
    f = (lam * cy + p) / (1 + lam)
    return with_target(cos, y, f, s) * np.linalg.norm(emb, axis=1, keepdims=True)


def large_margin(emb, W, y, m, s):
    cos = cosines(emb, W)
    cy = cos[np.arange(len(y)), y]
    theta = np.arccos(cy)
    k = np.floor(m * theta / np.pi)
    p = (-1.0) ** k * np.cos(m * theta) - 2 * k
    norms = np.linalg.norm(emb, axis=1, keepdims=True) * np.linalg.norm(W, axis=0)[None, :]
    return with_target(cos, y, p, s) * norms


def curricular(emb, W, y, m, s, t_before, momentum=0.01, training=True):
    cos = cosines(emb, W)
    cy = cos[np.arange(len(y)), y]
    f = psi(np.arccos(cy) + m)
    t = momentum * cy.mean() + (1 - momentum) * t_before if training else t_before
    out = cos.copy()
    for b in range(len(y)):
        for j in range(cos.shape[1]):
            if j != y[b] and cos[b, j] > f[b]:
                out[b, j] = cos[b, j] * (t + cos[b, j])
    out[np.arange(len(y)), y] = f
    return s * out, t


def ada(emb, W, y, m, s, h=0.333, mean=20.0, std=100.0, momentum=0.01, eps=1e-3, training=True):
    cos = cosines(emb, W)
    cy = cos[np.arange(len(y)), y]
    norms = np.clip(np.linalg.norm(emb, axis=1), 1e-3, 100)
    if training:
        mean = momentum * norms.mean() + (1 - momentum) * mean
        std = momentum * norms.std(ddof=1) + (1 - momentum) * std
    z = np.clip(h * (norms - mean) / (std + eps), -1, 1)
    f = psi(np.arccos(cy) - m * z) - (m + m * z)
    return with_target(cos, y, f, s), (mean, std)


def mag(emb, W, y, s, l_m=0.45, u_m=0.8, l_a=10.0, u_a=110.0, lambda_g=35.0):
    cos = cosines(emb, W)
    cy = cos[np.arange(len(y)), y]
    a = np.clip(np.linalg.norm(emb, axis=1), l_a, u_a)
    margin = (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m
    reg = lambda_g * np.mean(1 / a + a / u_a**2)
    return with_target(cos, y, psi(np.arccos(cy) + margin), s), reg
