"""The glyph open-set benchmark data: deterministic, disjoint, written in the library's formats."""

import json

import numpy as np
import pytest

pytest.importorskip("PIL")

from keras_facemargin.data import RecordIOReader, glyphs, load_bin  # noqa: E402

FONTS = glyphs.find_cjk_fonts()
needs_fonts = pytest.mark.skipif(len(FONTS) < 2, reason="needs 2 CJK fonts: run `make fonts`")


def _decode(png):
    import io

    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@needs_fonts
def test_fonts_are_distinct_designs_that_draw_cjk():
    names = [f.name for f in FONTS]
    assert len(set(names)) == len(names)
    # no two faces render the probe identically (regional variants were folded)
    renders = [glyphs._draw(f.load(32), glyphs.PROBE[0], 32) for f in FONTS]
    for i in range(len(renders)):
        for j in range(i):
            assert not np.array_equal(renders[i], renders[j]), (names[i], names[j])
    assert not any(w in n.split() for n in names for w in ("SC", "TC", "KR", "HK", "Mono"))


@needs_fonts
def test_identities_are_distinct_cjk_and_seeded():
    a = glyphs.cjk_identities(20, FONTS[:2], seed=1)
    assert a == glyphs.cjk_identities(20, FONTS[:2], seed=1)
    assert a != glyphs.cjk_identities(20, FONTS[:2], seed=2)
    assert len(set(a)) == 20
    assert all(0x4E00 <= ord(c) <= 0x9FFF for c in a)
    # every font draws every chosen character (not .notdef, not empty)
    for f in FONTS[:2]:
        font = f.load(24)
        notdef = glyphs._draw(font, glyphs._MISSING, 24)
        assert all(glyphs._draws(font, c, notdef, 24) for c in a)


@needs_fonts
def test_renderings_are_deterministic_and_vary():
    chars = glyphs.cjk_identities(3, FONTS[:2], seed=0)
    x1, y1 = glyphs.render_glyphs(chars, 4, FONTS[:2], size=24, seed=5)
    x2, _ = glyphs.render_glyphs(chars, 4, FONTS[:2], size=24, seed=5)
    x3, _ = glyphs.render_glyphs(chars, 4, FONTS[:2], size=24, seed=6)
    np.testing.assert_array_equal(x1, x2)
    assert not np.array_equal(x1, x3)
    assert x1.shape == (12, 24, 24, 3) and x1.dtype == np.uint8 and y1.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # image k of a character does not depend on the other characters or on the count
    x4, _ = glyphs.render_glyphs(chars[1:2], 2, FONTS[:2], size=24, seed=5)
    np.testing.assert_array_equal(x4, x1[4:6])
    # offset gives the later looks
    x5, _ = glyphs.render_glyphs(chars[1:2], 2, FONTS[:2], size=24, seed=5, offset=2)
    np.testing.assert_array_equal(x5, x1[6:8])
    # the looks of one identity differ from each other (augmented), grey in all channels
    assert len({im.tobytes() for im in x1}) == 12
    np.testing.assert_array_equal(x1[..., 0], x1[..., 2])


@needs_fonts
def test_benchmark_files_disjoint_and_readable(tmp_path):
    kw = dict(num_train=5, num_test=4, train_images=3, test_images=3, num_pairs=20, size=24,
              seed=3, fonts=FONTS[:2], image_folder=True)
    b = glyphs.write_glyph_benchmark(tmp_path / "a", **kw)
    assert not set(b.train_chars) & set(b.test_chars)
    assert len(b.train_chars) == 5 and len(b.test_chars) == 4
    # the same seed writes the same bytes
    glyphs.write_glyph_benchmark(tmp_path / "b", **kw)
    for name in ("train.rec", "train.idx", "test.rec", "pairs.bin", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["train_chars"] == "".join(b.train_chars)
    # RecordIO through the library's reader: labels, class count, pixels
    train = RecordIOReader(b.train_rec)
    assert train.num_classes == 5 and sorted(train.labels()) == sorted([0, 1, 2, 3, 4] * 3)
    x, y = glyphs.render_glyphs(b.train_chars, 3, FONTS[:2], size=24, seed=3)
    for i, key in enumerate(train.image_keys):
        header, png = train.read_image(key)
        assert int(header.label[0]) == y[i]
        np.testing.assert_array_equal(_decode(png), x[i])
    # image folder: one sub-folder per identity, same pixels
    folders = sorted(p.name for p in (tmp_path / "a" / "train").iterdir())
    assert folders == [f"{i:06d}" for i in range(5)]
    np.testing.assert_array_equal(_decode((tmp_path / "a" / "train" / "000002" / "0001.png")
                                          .read_bytes()), x[7])
    test = RecordIOReader(b.test_rec)
    test_imgs = [_decode(test.read_image(k)[1]) for k in test.image_keys]
    test_labels = np.array(test.labels())
    # pairs: positives join two different images of one unseen identity, negatives two identities
    pairs = load_bin(b.pairs_bin)
    assert len(pairs) == 20 and pairs.issame == [True, False] * 10  # 10 folds of 1 + 1
    lookup = {im.tobytes(): lab for im, lab in zip(test_imgs, test_labels, strict=True)}
    for i, same in enumerate(pairs.issame):
        a, c = (_decode(pairs.images[2 * i + j]) for j in (0, 1))
        assert a.tobytes() in lookup and c.tobytes() in lookup
        assert (lookup[a.tobytes()] == lookup[c.tobytes()]) == same
        if same:
            assert a.tobytes() != c.tobytes()


def test_pairs_layout_like_lfw():
    labels = np.repeat(np.arange(6), 4)
    idx, same = glyphs.lfw_like_pairs(labels, 40, seed=0)
    assert same.tolist() == ([True] * 2 + [False] * 2) * 10
    assert np.all(labels[idx[same, 0]] == labels[idx[same, 1]])
    assert np.all(labels[idx[~same, 0]] != labels[idx[~same, 1]])
    assert np.all(idx[:, 0] != idx[:, 1])
    with pytest.raises(ValueError, match="num_pairs"):
        glyphs.lfw_like_pairs(labels, 30)


def test_bad_input_names_the_argument(tmp_path):
    with pytest.raises(ValueError, match="num"):
        glyphs.cjk_identities(0, FONTS)
    with pytest.raises(RuntimeError, match="make fonts"):
        glyphs.cjk_identities(3, [])
    with pytest.raises(ValueError, match="num_test"):
        glyphs.write_glyph_benchmark(tmp_path, 3, 1, fonts=FONTS)
    with pytest.raises(FileNotFoundError, match="paths"):
        glyphs.find_cjk_fonts(paths=[str(tmp_path / "none.ttf")])
