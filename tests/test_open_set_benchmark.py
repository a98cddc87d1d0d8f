"""benchmarks/open_set.py: P x K batches, argument handling, and a tiny end-to-end run (slow)."""

import importlib.util
import pathlib
import sys

import numpy as np
import pytest

_PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "open_set.py"
spec = importlib.util.spec_from_file_location("open_set", _PATH)
open_set = importlib.util.module_from_spec(spec)
sys.modules["open_set"] = open_set  # dataclasses look their module up
spec.loader.exec_module(open_set)


def test_pk_batches_hold_p_identities_of_k_images():
    labels = np.repeat(np.arange(10), 5)
    batches = list(open_set.pk_batches(labels, p=4, k=3, steps=7, seed=0))
    assert len(batches) == 7
    seen = []
    for b in batches:
        ids, counts = np.unique(labels[b], return_counts=True)
        assert len(ids) == 4 and np.all(counts == 3)
        assert all(len(set(b[labels[b] == i])) == 3 for i in ids)  # k distinct images (5 >= 3)
        seen.append(set(ids))
    # identities are drawn without replacement inside a pass over the 10 (2 batches of 4 fit)
    assert not seen[0] & seen[1]
    again = list(open_set.pk_batches(labels, p=4, k=3, steps=7, seed=0))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))


def test_quick_sets_the_small_run_and_explicit_flags_win():
    args = open_set.parse_args(["--quick", "--epochs", "2"])
    assert args.train_ids == open_set.QUICK["train_ids"] and args.epochs == 2
    assert args.steps_per_epoch == args.train_ids * args.train_images // 128
    with pytest.raises(SystemExit):
        open_set.parse_args(["--heads", "NoSuchHead"])


@pytest.mark.slow
def test_tiny_run_end_to_end(tmp_path, capsys):
    from keras_facemargin.data.glyphs import find_cjk_fonts

    if len(find_cjk_fonts()) < 2:
        pytest.skip("needs CJK fonts: run `make fonts`")
    rc = open_set.main(["--data", str(tmp_path / "d"), "--train-ids", "12", "--test-ids", "10",
                        "--train-images", "4", "--test-images", "4", "--pairs", "40",
                        "--epochs", "1", "--seeds", "0", "--size", "16", "--dim", "8",
                        "--heads", "Softmax", "ArcFace", "Softmax + Center", "--out", str(tmp_path / "t.md")])
    assert rc == 0
    text = (tmp_path / "t.md").read_text()
    assert "| Softmax |" in text and "| ArcFace |" in text and "| Softmax + Center |" in text
    assert "VAL@FAR=1e-3 (10-fold, insightface, %)" in text and "TAR@FAR=1e-3 (one ROC, %)" in text
    assert "python benchmarks/open_set.py --data" in text
