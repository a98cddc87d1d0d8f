"""Metric losses against the pml oracle and brute-force float64 loops over all triplets/pairs."""

import numpy as np
import pytest
import tensorflow as tf

import keras_facemargin as kf
from keras_facemargin.ops.mining import mine, reduce_last

from helpers import rel_err
from metric_reference import TRIPLET, contrastive, triplets


def loss_id(loss):
    """A stable test id (xdist workers must collect the same ids)."""
    config = loss.get_config()
    return type(loss).__name__ + "".join(
        f"-{k}={v}" for k, v in sorted(config.items()) if k not in ("name", "reduction"))


ORACLE_TRIPLET = [
    ("triplet_semihard_euclid", dict(distance="l2", mining="semihard_all")),
    ("triplet_batchhard_sqeuclid", dict(distance="squared_l2", mining="hard")),
    ("triplet_all_euclid", dict(distance="l2", mining="all")),
]


def loss_and_grad(loss, labels, emb):
    emb = tf.Variable(np.asarray(emb, np.float32))
    with tf.GradientTape() as tape:
        value = loss(np.asarray(labels), emb)
    return float(value), tape.gradient(value, emb).numpy()


@pytest.mark.parametrize("max_positives", [0, 32], ids=["sort", "fast"])
@pytest.mark.parametrize("case,kwargs", ORACLE_TRIPLET)
def test_triplet_matches_pml(oracle, case, kwargs, max_positives):
    emb, labels = oracle[f"{case}__emb"], oracle[f"{case}__labels"]
    loss = kf.TripletLoss(margin=0.2, max_positives=max_positives, **kwargs)
    value, grad = loss_and_grad(loss, labels, emb)
    assert abs(value - float(oracle[f"{case}__pml__loss"])) <= 1e-5 * abs(
        float(oracle[f"{case}__pml__loss"]))
    assert rel_err(grad, oracle[f"{case}__pml__grad_emb"]) < 1e-4


def test_triplet_without_normalization_matches_pml(oracle):
    case = "triplet_all_euclid"
    loss = kf.TripletLoss(margin=0.2, distance="l2", mining="all", normalize=False)
    value, grad = loss_and_grad(loss, oracle[f"{case}__labels"], oracle[f"{case}__emb"])
    ref = float(oracle[f"{case}__pml__loss_nonorm"])
    assert abs(value - ref) <= 1e-5 * abs(ref)
    assert rel_err(grad, oracle[f"{case}__pml__grad_emb_nonorm"]) < 1e-4


def test_contrastive_matches_pml(oracle):
    case = "contrastive_default"
    value, grad = loss_and_grad(kf.ContrastiveLoss(), oracle[f"{case}__labels"],
                                oracle[f"{case}__emb"])
    ref = float(oracle[f"{case}__pml__loss"])
    assert abs(value - ref) <= 1e-5 * abs(ref)
    assert rel_err(grad, oracle[f"{case}__pml__grad_emb"]) < 1e-4


def batches():
    rng = np.random.default_rng(7)
    out = []
    for b, ids in [(12, 3), (16, 4), (9, 2), (10, 7)]:
        out.append((rng.normal(size=(b, 5)), rng.integers(0, ids, size=b)))
    # edge batches: duplicated embeddings (ties, d = 0), one identity, all distinct identities
    x = rng.normal(size=(8, 5))
    x[1], x[5] = x[0], x[0]
    out.append((x, np.array([0, 0, 1, 1, 2, 0, 2, 1])))
    out.append((rng.normal(size=(6, 5)), np.zeros(6, int)))
    out.append((rng.normal(size=(6, 5)), np.arange(6)))
    return out


@pytest.mark.parametrize("mining", sorted(TRIPLET))
@pytest.mark.parametrize("distance", ["squared_l2", "l2", "angular"])
@pytest.mark.parametrize("margin", [0.1, 0.5])
@pytest.mark.parametrize("max_positives", [0, 2, 32], ids=["sort", "mixed", "fast"])
def test_triplet_matches_brute_force(mining, distance, margin, max_positives):
    """Every path of the miner (sorted negatives, fused positive blocks) gives the same loss."""
    loss = kf.TripletLoss(margin=margin, distance=distance, mining=mining,
                          max_positives=max_positives)
    for x, y in batches():
        got = float(loss(y, x.astype(np.float32)))
        want = TRIPLET[mining](x, y, margin, distance)
        assert got == pytest.approx(want, rel=1e-4, abs=1e-5), (mining, distance, y)


def test_semihard_rules_differ_where_the_definitions_do():
    """FaceNet's one-negative-per-pair rule and pml's all-semi-hard rule are not the same loss."""
    x, y = batches()[0]
    facenet = float(kf.TripletLoss(mining="semihard")(y, x.astype(np.float32)))
    pml = float(kf.TripletLoss(mining="semihard_all")(y, x.astype(np.float32)))
    assert facenet == pytest.approx(TRIPLET["semihard"](x, y, 0.2), rel=1e-4)
    assert pml == pytest.approx(TRIPLET["semihard_all"](x, y, 0.2), rel=1e-4)
    assert abs(facenet - pml) > 1e-3


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("average", ["nonzero", "all"])
def test_contrastive_matches_brute_force(squared, average):
    loss = kf.ContrastiveLoss(pos_margin=0.1, neg_margin=0.9, squared=squared, average=average)
    for x, y in batches():
        got = float(loss(y, x.astype(np.float32)))
        want = contrastive(x, y, 0.1, 0.9, squared=squared, average=average)
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("loss", [
    kf.TripletLoss(mining="all"), kf.TripletLoss(mining="hard"), kf.TripletLoss(),
    kf.TripletLoss(mining="semihard_all"), kf.TripletLoss(distance="angular"),
    kf.TripletLoss(distance="l2")], ids=loss_id)
@pytest.mark.parametrize("labels", [np.zeros(6, int), np.arange(6)], ids=["one_id", "no_pos"])
def test_no_valid_triplet_gives_zero_loss_and_zero_gradients(loss, labels):
    x = np.random.default_rng(0).normal(size=(6, 4))
    value, grad = loss_and_grad(loss, labels, x)
    assert value == 0.0
    assert np.all(grad == 0.0)


@pytest.mark.parametrize("distance", ["squared_l2", "l2", "angular"])
@pytest.mark.parametrize("mining", sorted(TRIPLET))
def test_gradients_finite_for_coincident_and_zero_embeddings(distance, mining):
    x = np.random.default_rng(1).normal(size=(8, 4))
    x[1] = x[0]      # identical pair: d = 0, cos = 1
    x[2] = -x[0]     # antipodal: cos = -1
    x[3] = 0.0       # zero embedding
    y = np.array([0, 0, 0, 1, 1, 2, 2, 1])
    value, grad = loss_and_grad(kf.TripletLoss(distance=distance, mining=mining), y, x)
    assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_gradient_matches_finite_differences():
    x, y = batches()[1]
    loss = kf.TripletLoss(margin=0.3, distance="l2", mining="all")
    _, grad = loss_and_grad(loss, y, x)
    eps = 1e-3
    for i, j in [(0, 0), (3, 2), (7, 4)]:
        up, down = x.copy(), x.copy()
        up[i, j] += eps
        down[i, j] -= eps
        numeric = (TRIPLET["all"](up, y, 0.3, "l2") - TRIPLET["all"](down, y, 0.3, "l2")) / (2 * eps)
        assert grad[i, j] == pytest.approx(numeric, abs=2e-3)


@pytest.mark.parametrize("mining", sorted(TRIPLET))
@pytest.mark.parametrize("max_positives", [0, 32])
def test_triplet_compiles_under_xla_with_dynamic_and_static_batch(mining, max_positives):
    loss = kf.TripletLoss(mining=mining, distance="l2", max_positives=max_positives)
    x, y = batches()[0]
    want = TRIPLET[mining](x, y, 0.2, "l2")
    static = tf.function(lambda a, b: loss(a, b), jit_compile=True)
    dynamic = tf.function(lambda a, b: loss(a, b), jit_compile=True, input_signature=[
        tf.TensorSpec([None], tf.int64), tf.TensorSpec([None, 5], tf.float32)])
    for fn in (static, dynamic):
        assert float(fn(tf.constant(y), tf.constant(x, tf.float32))) == pytest.approx(want, rel=1e-4)



def facenet_negative(d, a, p, ns):
    """The distance of the negative FaceNet's semi-hard rule picks for the pair (a, p)."""
    farther = [d[a, n] for n in ns if d[a, n] > d[a, p]]
    return min(farther) if farther else max(d[a, n] for n in ns)


def semihard_from_dist(d, y, m):
    """FaceNet semi-hard on a distance matrix: the loss, and its gradient with tied negatives
    sharing a pair's gradient equally (tf.reduce_min's rule, hence tensorflow-addons')."""
    grad, losses = np.zeros_like(d), []
    for a, p, ns in triplets(y):
        if not ns:
            continue
        chosen = facenet_negative(d, a, p, ns)
        losses.append(max(d[a, p] - chosen + m, 0.0))
        if losses[-1] > 0:
            tied = [n for n in ns if d[a, n] == chosen]
            grad[a, p] += 1.0
            grad[a, tied] -= 1.0 / len(tied)
    return sum(losses) / len(losses), grad / len(losses)


def tied_distances(kind):
    """Distance matrices with negatives tied at the chosen distance: in every row (integers),
    or in 5 of 80 rows (the two closest negatives of those anchors made equal)."""
    rng = np.random.default_rng(3)
    size = 12 if kind == "small" else 80
    y = np.repeat(np.arange(size // 4), 4)
    if kind != "few":
        d = np.triu(rng.integers(1, 4, size=(size, size)).astype(np.float64), 1)
        return d + d.T, y
    same = y[:, None] == y[None, :]
    d = np.where(same, rng.uniform(0, 1, (size, size)), rng.uniform(2, 3, (size, size)))
    for a in (0, 17, 40, 41, 79):
        first, second = np.flatnonzero(~same[a])[:2]
        d[a, [first, second]] = 1.5
    return d, y


@pytest.mark.parametrize("max_positives", [0, 32], ids=["sort", "fast"])
@pytest.mark.parametrize("kind", ["small", "many", "few"])
def test_semihard_gradient_with_tied_negatives(kind, max_positives):
    """Tied negatives: small batch; ties in every row of 80; ties in 5 rows of 80."""
    d, y = tied_distances(kind)
    want_value, want = semihard_from_dist(d, y, 1.5)
    dist = tf.Variable(d.astype(np.float32))  # integers and 1.5: exact in float32
    with tf.GradientTape() as tape:
        mined = mine("semihard", tf.identity(dist), tf.constant(y), 1.5, max_positives)
        value = mined.loss_sum / mined.num_terms
    got = tape.gradient(value, dist).numpy()
    assert float(value) == pytest.approx(want_value, rel=1e-6)
    positive = (y[:, None] == y[None, :]) & ~np.eye(len(y), dtype=bool)
    np.testing.assert_allclose(got[positive], want[positive], atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), want.sum(axis=1), atol=1e-6)
    if max_positives:  # the fast path splits ties like tf.reduce_min
        np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("kind", ["min", "max", "sum"])
@pytest.mark.parametrize("width", [16, 24, 64, 20, 8], ids=lambda w: f"width{w}")
def test_reduce_last_equals_the_plain_reduction(kind, width):
    """The folded reduction (widths divisible by FOLD, >= 2 FOLD) and its fallback (20, 8)
    give numpy's result exactly: min/max of floats with +-inf, sums of integers."""
    rng = np.random.default_rng(width)
    floats = rng.normal(size=(5, 3, width)).astype(np.float32)
    floats[0, 0, -1], floats[1, 2, 0] = -np.inf, np.inf  # extremes in the first/last slice
    ints = rng.integers(0, 5, size=(5, 3, width)).astype(np.int32)
    x = ints if kind == "sum" else floats
    want = {"min": np.min, "max": np.max, "sum": np.sum}[kind](x, axis=-1)
    eager = reduce_last(tf.constant(x), kind)
    compiled = tf.function(lambda t: reduce_last(t, kind), jit_compile=True)(tf.constant(x))
    dynamic = tf.function(lambda t: reduce_last(t, kind), jit_compile=True, input_signature=[
        tf.TensorSpec([None, 3, None], tf.as_dtype(x.dtype))])(tf.constant(x))
    for got in (eager, compiled, dynamic):
        np.testing.assert_array_equal(got.numpy(), want)


def large_batch(seed):
    """64 embeddings, 16 identities of 1 to 8 images (the fold of the fast path applies)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(64, 6)), rng.integers(0, 16, size=64)


@pytest.mark.parametrize("mining", sorted(TRIPLET))
@pytest.mark.parametrize("max_positives", [0, 32], ids=["sort", "fast"])
def test_triplet_matches_brute_force_on_a_batch_of_64(mining, max_positives):
    loss = kf.TripletLoss(margin=0.3, distance="squared_l2", mining=mining,
                          max_positives=max_positives)
    step = tf.function(lambda a, b: loss(a, b), jit_compile=True)
    for seed in range(3):
        x, y = large_batch(seed)
        want = TRIPLET[mining](x, y, 0.3, "squared_l2")
        assert float(step(tf.constant(y), tf.constant(x, tf.float32))) == pytest.approx(
            want, rel=1e-4), (mining, seed)


def test_semihard_gradient_with_ties_on_a_batch_of_64():
    """Quantized distances (ties everywhere) on a 64-batch: the folded passes split each pair's
    gradient over its tied negatives exactly as tf.reduce_min does."""
    rng = np.random.default_rng(11)
    y = rng.integers(0, 16, size=64)
    d = np.triu(rng.integers(1, 6, size=(64, 64)).astype(np.float64), 1)
    d = d + d.T
    want_value, want = semihard_from_dist(d, y, 1.5)
    dist = tf.Variable(d.astype(np.float32))
    with tf.GradientTape() as tape:
        mined = tf.function(lambda t: mine("semihard", t, tf.constant(y), 1.5, 32),
                            jit_compile=True)(tf.identity(dist))
        value = mined.loss_sum / mined.num_terms
    assert float(value) == pytest.approx(want_value, rel=1e-6)
    np.testing.assert_allclose(tape.gradient(value, dist).numpy(), want, atol=1e-6)


def hard_from_dist(d, y, m):
    """Batch-hard on a distance matrix, its gradient split over tied hardest entries (the
    gradients of tf.reduce_max / reduce_min)."""
    grad, losses = np.zeros_like(d), []
    for a in range(len(y)):
        pos = [p for p in range(len(y)) if y[p] == y[a] and p != a]
        neg = [n for n in range(len(y)) if y[n] != y[a]]
        if not pos or not neg:
            continue
        hp, hn = max(d[a, pos]), min(d[a, neg])
        losses.append(max(hp - hn + m, 0.0))
        if losses[-1] > 0:
            for group, hardest, sign in ((pos, hp, 1.0), (neg, hn, -1.0)):
                tied = [j for j in group if d[a, j] == hardest]
                grad[a, tied] += sign / len(tied)
    return sum(losses) / max(len(losses), 1), grad / max(len(losses), 1)


@pytest.mark.parametrize("size", [12, 64])
def test_hard_gradient_with_tied_distances(size):
    rng = np.random.default_rng(size)
    y = rng.integers(0, size // 4, size=size)
    d = np.triu(rng.integers(1, 5, size=(size, size)).astype(np.float64), 1)
    d = d + d.T
    want_value, want = hard_from_dist(d, y, 1.5)
    dist = tf.Variable(d.astype(np.float32))
    with tf.GradientTape() as tape:
        mined = mine("hard", tf.identity(dist), tf.constant(y), 1.5)
        value = mined.loss_sum / mined.num_terms
    assert float(value) == pytest.approx(want_value, rel=1e-6)
    np.testing.assert_allclose(tape.gradient(value, dist).numpy(), want, atol=1e-6)
