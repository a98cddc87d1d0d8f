"""Brute-force float64 references for the metric losses: explicit loops over pairs/triplets."""

import math

import numpy as np


def distances(x, kind, normalize=True):
    x = np.asarray(x, np.float64)
    if normalize or kind == "angular":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    b = len(x)
    d = np.zeros((b, b))
    for i in range(b):
        for j in range(b):
            if kind == "angular":
                d[i, j] = math.acos(min(1.0, max(-1.0, float(x[i] @ x[j]))))
            else:
                sq = float(np.sum((x[i] - x[j]) ** 2))
                d[i, j] = sq if kind == "squared_l2" else math.sqrt(sq)
    return d


def triplets(y):
    b = len(y)
    for a in range(b):
        for p in range(b):
            if p == a or y[p] != y[a]:
                continue
            yield a, p, [n for n in range(b) if y[n] != y[a]]


def triplet_all(x, y, m, kind="squared_l2"):
    d = distances(x, kind)
    losses = [max(d[a, p] - d[a, n] + m, 0.0) for a, p, ns in triplets(y) for n in ns]
    nonzero = [v for v in losses if v > 0]
    return sum(nonzero) / len(nonzero) if nonzero else 0.0


def triplet_semihard_all(x, y, m, kind="squared_l2"):
    """pytorch-metric-learning: every triplet with 0 < d_an - d_ap <= m, mean over loss > 0."""
    d = distances(x, kind)
    losses = [d[a, p] - d[a, n] + m for a, p, ns in triplets(y) for n in ns
              if 0 < d[a, n] - d[a, p] <= m]
    nonzero = [v for v in losses if v > 0]
    return sum(nonzero) / len(nonzero) if nonzero else 0.0


def triplet_facenet_semihard(x, y, m, kind="squared_l2"):
    """FaceNet / tensorflow-addons: per (a, p) the closest negative with d_an > d_ap, else the
    farthest negative; mean over the anchor-positive pairs."""
    d = distances(x, kind)
    losses = []
    for a, p, ns in triplets(y):
        if not ns:
            continue
        farther = [d[a, n] for n in ns if d[a, n] > d[a, p]]
        chosen = min(farther) if farther else max(d[a, n] for n in ns)
        losses.append(max(d[a, p] - chosen + m, 0.0))
    return sum(losses) / len(losses) if losses else 0.0


def triplet_hard(x, y, m, kind="squared_l2"):
    d = distances(x, kind)
    losses = []
    for a in range(len(y)):
        pos = [d[a, p] for p in range(len(y)) if p != a and y[p] == y[a]]
        neg = [d[a, n] for n in range(len(y)) if y[n] != y[a]]
        if pos and neg:
            losses.append(max(max(pos) - min(neg) + m, 0.0))
    nonzero = [v for v in losses if v > 0]
    return sum(nonzero) / len(nonzero) if nonzero else 0.0


TRIPLET = {"all": triplet_all, "semihard_all": triplet_semihard_all,
           "semihard": triplet_facenet_semihard, "hard": triplet_hard}


def contrastive(x, y, pos_margin=0.0, neg_margin=1.0, kind="l2", squared=False,
                average="nonzero"):
    d = distances(x, kind)
    pos, neg = [], []
    for i in range(len(y)):
        for j in range(len(y)):
            if i == j:
                continue
            if y[i] == y[j]:
                pos.append(max(d[i, j] - pos_margin, 0.0))
            else:
                neg.append(max(neg_margin - d[i, j], 0.0))
    total = 0.0
    for terms in (pos, neg):
        terms = [t * t if squared else t for t in terms]
        counted = [t for t in terms if t > 0] if average == "nonzero" else terms
        total += sum(terms) / len(counted) if counted else 0.0
    return total


def center_step(centers, x, y, alpha):
    """Wen et al.: delta c_j = sum_i [y_i = j](c_j - x_i) / (1 + sum_i [y_i = j])."""
    centers = np.array(centers, np.float64)
    new = centers.copy()
    for j in range(len(centers)):
        members = [i for i in range(len(y)) if y[i] == j]
        delta = sum((centers[j] - x[i] for i in members), np.zeros(centers.shape[1]))
        new[j] = centers[j] - alpha * delta / (1 + len(members))
    loss = float(np.mean([0.5 * np.sum((x[i] - centers[y[i]]) ** 2) for i in range(len(y))]))
    return new, loss
