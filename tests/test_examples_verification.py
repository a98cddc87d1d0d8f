"""The digits examples report the library's verification numbers, not a protocol of their own.

``examples/train_digits.py`` (and ``examples/compare_losses.py``, which imports it) must score
LFW-style pairs of :func:`keras_facemargin.data.lfw_like_pairs` with insightface's protocol: here
the numbers the examples compute and print are compared with brute-force references written in
this file (insightface's 10-fold accuracy over scikit-learn's ``KFold``, the one-ROC TAR@FAR by
enumeration) and with the port of insightface's ``calculate_val`` (``insightface_reference``).
"""

import pathlib
import sys

import numpy as np
import pytest
from insightface_reference import calculate_val
from sklearn.model_selection import KFold

from keras_facemargin.data import lfw_like_pairs

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def examples():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import compare_losses
        import train_digits

        yield train_digits, compare_losses
    finally:
        sys.path.remove(str(EXAMPLES))


def _open_set(seed=0, dim=6):
    """Unseen identities 7, 8, 9 with 80 noisy embeddings each around three directions."""
    rng = np.random.default_rng(seed)
    y = np.repeat([7, 8, 9], 80)
    centres = rng.normal(size=(3, dim))
    return centres[y - 7] + 1.3 * rng.normal(size=(len(y), dim)), y


def _reference(e, y, seed, num_pairs, far):
    """(10-fold accuracy, its std, TAR@FAR on one ROC, insightface's VAL@FAR) by brute force."""
    idx, same = lfw_like_pairs(y, num_pairs, seed, repeats=False)
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    d = np.sum((u[idx[:, 0]] - u[idx[:, 1]]) ** 2, axis=1)
    grid = np.arange(0, 4, 0.01)
    accs = []
    for train, test in KFold(n_splits=10, shuffle=False).split(d):
        t = grid[int(np.argmax([np.mean((d[train] < g) == same[train]) for g in grid]))]
        accs.append(np.mean((d[test] < t) == same[test]))
    # one ROC: the best TPR over all thresholds "distance <= c" whose FPR is within the target
    tar = max(np.mean(d[same] <= c) for c in np.r_[-1.0, np.unique(d)]
              if np.mean(d[~same] <= c) <= far + 1e-12)
    val = calculate_val(np.arange(0, 4, 0.001), u[idx[:, 0]], u[idx[:, 1]], same, far)[0]
    return np.mean(accs), np.std(accs), tar, val


def test_verify_is_the_librarys_protocol(examples):
    train_digits, _ = examples
    e, y = _open_set()
    rep = train_digits.verify(e, y, seed=3)
    acc, std, tar, val = _reference(e, y, 3, train_digits.NUM_PAIRS, train_digits.FAR)
    assert train_digits.NUM_PAIRS == 6000 and train_digits.FAR == 1e-2
    assert rep.accuracy == pytest.approx(acc, abs=1e-12)
    assert rep.accuracy_std == pytest.approx(std, abs=1e-12)
    assert rep.tar[train_digits.FAR] == pytest.approx(tar, abs=1e-12)
    assert not rep.val[train_digits.FAR].adjusted  # no tie at a threshold: insightface's numbers
    assert rep.val[train_digits.FAR].val == pytest.approx(val, abs=1e-12)
    assert 0.6 < acc < 0.95  # neither trivial nor chance: the comparison can fail


def test_printed_table_holds_those_numbers(examples):
    """The demo table's row (what the README quotes) prints the reference numbers, each under
    its own name."""
    train_digits, _ = examples
    e, y = _open_set(1)
    rep = train_digits.verify(e, y, seed=0)
    acc, std, tar, val = _reference(e, y, 0, train_digits.NUM_PAIRS, train_digits.FAR)
    table = train_digits.format_table([{"loss": "X", "closed": 0.5, "report": rep,
                                        "seconds": 1.0}])
    header, _, row = table.splitlines()
    assert [c.strip() for c in header.split("|")[3:7]] == [
        "verification acc (10-fold)", "AUC (one ROC)", "TAR@FAR=0.01 (one ROC)",
        "VAL@FAR=0.01 (10-fold, insightface)"]
    cells = [c.strip() for c in row.split("|")[3:7]]
    assert cells[0] == f"{100 * acc:.2f}% ± {100 * std:.2f}"
    assert cells[2] == f"{100 * tar:.2f}%"
    assert cells[3].startswith(f"{100 * val:.2f}% ± ")


def test_compare_losses_scores_the_same_embeddings_the_same_way(examples):
    """compare_losses.evaluate on an untrained backbone: its accuracy, TAR and VAL are the
    references on that backbone's embeddings of the unseen digits."""
    import keras

    train_digits, compare_losses = examples
    data = train_digits.load_data(seed=0, holdout=0.0)
    assert len(data.y_train) == 1264 and len(data.y_test) == 0
    assert set(np.unique(data.y_open)) == {7, 8, 9}
    keras.utils.set_random_seed(0)
    trained = train_digits.Trained(train_digits.build_backbone(8), None, 0.0)
    got = compare_losses.evaluate(trained, data, seed=2)
    e = np.asarray(trained.backbone(data.x_open, training=False))
    acc, _, tar, val = _reference(e, data.y_open, 2, train_digits.NUM_PAIRS, train_digits.FAR)
    assert got["acc"] == pytest.approx(acc, abs=1e-12)
    assert got["tar"] == pytest.approx(tar, abs=1e-12)
    assert got["val"] == pytest.approx(val, abs=1e-12)
    assert np.isnan(got["w_ec"])  # no head, no class weights
