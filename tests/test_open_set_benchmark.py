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


def test_optimizer_schedule_warms_up_then_follows_the_cosine():
    args = open_set.parse_args(["--quick", "--optimizer", "sgd", "--lr", "0.1", "--warmup", "2",
                                "--weight-decay", "5e-4", "--epochs", "10"])
    opt = open_set.make_optimizer(args)
    assert type(opt).__name__ == "SGD" and opt.momentum == 0.9 and opt.weight_decay == 5e-4
    n, warm = 10 * args.steps_per_epoch, 2 * args.steps_per_epoch
    schedule = open_set.lr_schedule(args)
    lr = lambda step: float(schedule(step))  # noqa: E731
    assert lr(0) == pytest.approx(0.0, abs=1e-9)
    assert lr(warm // 2) == pytest.approx(0.1 * (warm // 2) / warm, rel=1e-5)
    assert lr(warm) == pytest.approx(0.1, rel=1e-5)
    mid = warm + (n - warm) // 2  # half-way through the cosine: lr / 2
    assert lr(mid) == pytest.approx(0.05 * (1 + np.cos(np.pi * (mid - warm) / (n - warm))), rel=1e-4)
    assert lr(n) == pytest.approx(0.0, abs=1e-7)
    assert "SGD (momentum 0.9) lr 0.1 cosine, 2 warm-up epochs, weight decay 0.0005" == \
        open_set.describe_optimizer(args)
    adam = open_set.make_optimizer(open_set.parse_args(["--quick", "--optimizer", "adam",
                                                        "--lr", "2e-3", "--warmup", "0"]))
    assert type(adam).__name__ == "Adam" and float(adam.learning_rate) == pytest.approx(2e-3)
    quick = open_set.parse_args(["--quick"])  # insightface's recipe by default
    assert (quick.optimizer, quick.lr, quick.weight_decay, quick.warmup) == ("sgd", 0.1, 5e-4, 1)
    assert quick.heads == ["Softmax", "CosFace", "ArcFace"] and quick.epochs == 20


def test_partial_fc_rows_and_export_argument():
    args = open_set.parse_args(["--quick", "--heads", "ArcFace r=1.0", "ArcFace r=0.1",
                                "--size", "16", "--dim", "8"])
    built = open_set.build("ArcFace r=0.1", 50, args)
    import keras_facemargin as kfm

    assert isinstance(built.model, kfm.FaceRecognizer) and built.head.sample_rate == 0.1
    assert open_set.build("ArcFace r=1.0", 50, args).head.sample_rate == 1.0
    with pytest.raises(SystemExit):
        open_set.parse_args(["--quick", "--heads", "Softmax", "--export", "ArcFace"])
    with pytest.raises(SystemExit):  # a sample of 5 centres cannot hold a batch of 32 identities
        open_set.parse_args(["--quick", "--train-ids", "50", "--heads", "ArcFace r=0.1"])


@pytest.mark.slow
def test_tiny_run_end_to_end(tmp_path, capsys):
    from keras_facemargin.data.glyphs import find_cjk_fonts

    if len(find_cjk_fonts()) < 2:
        pytest.skip("needs CJK fonts: run `make fonts`")
    rc = open_set.main(["--data", str(tmp_path / "d"), "--train-ids", "40", "--test-ids", "10",
                        "--ids-per-batch", "4",
                        "--train-images", "4", "--test-images", "4", "--pairs", "40",
                        "--epochs", "1", "--seeds", "0", "--size", "16", "--dim", "8",
                        "--heads", "Softmax", "ArcFace", "Softmax + Center", "ArcFace r=0.1",
                        "--export", "ArcFace", "--out", str(tmp_path / "t.md")])
    assert rc == 0
    text = (tmp_path / "t.md").read_text()
    assert "| Softmax |" in text and "| ArcFace |" in text and "| Softmax + Center |" in text
    assert "VAL@FAR=1e-3 (10-fold, insightface, %)" in text and "TAR@FAR=1e-3 (one ROC, %)" in text
    assert "python benchmarks/open_set.py --data" in text
    assert "| ArcFace r=0.1 |" in text
    # every export variant read back through the runtime, close to Keras
    rows = [line for line in text.splitlines() if line.startswith(("| TFLite", "| ONNX"))]
    assert len(rows) == len(open_set.EXPORTS)
    for line in rows:
        min_cos = float(line.split("|")[4])
        assert min_cos > (0.98 if "int8" in line else 0.999), line
    # the command line evaluated the float32 files on the same pairs.bin
    assert text.count("10-fold verification, with flip test") == 2
