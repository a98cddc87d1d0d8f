"""An offline analogue of face verification: CJK characters as identities, font styles as looks.

Each identity is one CJK ideograph; its images are renderings of it in every installed CJK font
design (Noto Sans / Serif CJK, AR PL UKai / UMing, WenQuanYi, IPA Gothic / Mincho, ...), each
augmented the way photos of one face differ: affine jitter (rotation, scale, shear,
translation), stroke thickening or thinning, blur, contrast, noise and a partial occlusion.
Thousands of identities, no download at run time (the fonts come from the system's packages:
``make fonts`` or ``benchmarks/install_fonts.sh``), deterministic given the seed and the fonts.

* :func:`find_cjk_fonts`: the installed font faces that draw CJK ideographs, one per design.
* :func:`cjk_identities`: a seeded choice of characters that every one of those fonts draws.
* :func:`render_glyphs`: the augmented images of some characters.
* :func:`write_glyph_benchmark`: disjoint train / test identities written through the library's
  own formats (RecordIO ``train.rec``/``.idx``, optional image folder, ``test.rec``/``.idx`` for
  1:N identification and an LFW-sized verification ``.bin``).

Pillow is needed (``pip install Pillow``; it comes with matplotlib). Pure Python + NumPy, no
TensorFlow.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from keras_facemargin.data.pairs import lfw_like_pairs  # noqa: F401 (re-exported)

#: where Debian / Ubuntu / macOS keep fonts.
FONT_DIRECTORIES = ("/usr/share/fonts", "/usr/local/share/fonts", os.path.expanduser("~/.fonts"),
                    "/Library/Fonts", "/System/Library/Fonts")
#: characters whose design does not vary by region: two faces that draw them identically are
#: the same design (Noto's JP / KR / SC / TC / HK faces, UKai's CN / TW variants...).
PROBE = "永東水火山人大中"
#: the CJK Unified Ideographs block.
CJK_RANGE = (0x4E00, 0x9FFF)
_VARIANT_WORDS = {"JP", "KR", "SC", "TC", "HK", "CN", "TW", "MBE", "Mono"}
_MISSING = "\U0010fffd"  # a private-use code point no font draws: its rendering is .notdef


def _pil():
    try:
        from PIL import Image, ImageDraw, ImageFilter, ImageFont
    except ImportError:
        raise ImportError("keras_facemargin.data.glyphs needs Pillow: pip install Pillow") from None
    return Image, ImageDraw, ImageFilter, ImageFont


@dataclass(frozen=True)
class GlyphFont:
    """One font face: a file and the face index inside it (``.ttc`` collections hold several).

    Args:
        path: font file.
        index: face index in the file.
        name: family and style, e.g. ``"Noto Serif CJK JP Bold"``.

    Returns:
        A frozen record.

    Example:

    >>> from keras_facemargin.data.glyphs import GlyphFont
    >>> GlyphFont("/usr/share/fonts/truetype/arphic/ukai.ttc", 0, "AR PL UKai CN Book").index
    0
    """

    path: str
    index: int
    name: str

    def load(self, size: int):
        """The Pillow font at ``size`` pixels."""
        return _pil()[3].truetype(self.path, size, index=self.index)


def _draw(font, text: str, size: int) -> np.ndarray:
    Image, ImageDraw, _, _ = _pil()
    img = Image.new("L", (size, size), 0)
    ImageDraw.Draw(img).text((size / 2, size / 2), text, fill=255, font=font, anchor="mm")
    return np.asarray(img)


def _draws(font, ch: str, notdef: np.ndarray, size: int) -> bool:
    """Whether ``font`` has a glyph for ``ch`` (not empty, not the .notdef box)."""
    img = _draw(font, ch, size)
    return bool(img.any()) and not np.array_equal(img, notdef)


def find_cjk_fonts(directories: Sequence[str] | None = None, paths: Sequence[str] | None = None,
                   probe: str = PROBE) -> list[GlyphFont]:
    """Installed font faces that draw CJK ideographs, one face per design.

    Every face of every ``.ttf``/``.ttc``/``.otf``/``.otc`` file (sorted by path, then index) that
    draws all of ``probe``; a face is left out when it draws ``probe`` pixel-identically to an
    earlier one, or when its name without region / width words (JP, SC, TC, HK, KR, CN, TW, MBE,
    Mono) is an earlier one's (Noto's regional faces, IPA's proportional ones, WenQuanYi's Mono).

    Args:
        directories: folders searched recursively. Defaults to `None` (:data:`FONT_DIRECTORIES`).
        paths: font files to use instead of searching. Defaults to `None`.
        probe: characters that identify a design. Defaults to :data:`PROBE`.

    Returns:
        list of :class:`GlyphFont` (empty when no CJK font is installed).

    Example:

    >>> from keras_facemargin.data.glyphs import find_cjk_fonts
    >>> fonts = find_cjk_fonts()  # doctest: +SKIP
    >>> [f.name for f in fonts][:2]  # doctest: +SKIP
    ['IPAGothic Regular', 'IPAMincho Regular']
    """
    if paths is None:
        found = []
        for root in (FONT_DIRECTORIES if directories is None else directories):
            for dirpath, _, names in os.walk(root):
                found += [os.path.join(dirpath, n) for n in names
                          if n.lower().endswith((".ttf", ".ttc", ".otf", ".otc"))]
        paths = sorted(set(os.path.realpath(p) for p in found))
    fonts, seen = [], set()
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"`paths` must hold font files. Received: {path!r}")
        index = 0
        while True:
            try:
                font = GlyphFont(path, index, "").load(32)
            except OSError:
                break
            name = " ".join(font.getname())
            notdef = _draw(font, _MISSING, 32)
            if all(_draws(font, ch, notdef, 32) for ch in probe):
                pixels = b"".join(_draw(font, ch, 32).tobytes() for ch in probe)
                design = " ".join(w for w in name.split() if w not in _VARIANT_WORDS)
                if pixels not in seen and design not in seen:
                    seen.update((pixels, design))
                    fonts.append(GlyphFont(path, index, name))
            index += 1
    return fonts


def _no_fonts_error() -> RuntimeError:
    return RuntimeError("No CJK font is installed. Run `make fonts` (Debian/Ubuntu, as root: "
                        "apt-get install fonts-noto-cjk fonts-arphic-ukai fonts-arphic-uming "
                        "fonts-wqy-zenhei fonts-wqy-microhei fonts-ipafont-gothic "
                        "fonts-ipafont-mincho) or pass `fonts=` font files.")


def cjk_identities(num: int, fonts: Sequence[GlyphFont], seed: int = 0,
                   min_fonts: int | None = None) -> list[str]:
    """``num`` distinct CJK ideographs, in a seeded order, each drawn by at least ``min_fonts`` fonts.

    Args:
        num: how many characters.
        fonts: the fonts (see :func:`find_cjk_fonts`).
        seed: order of the candidate characters. Defaults to `0`.
        min_fonts: fonts that must draw a character. Defaults to `None` (all of them).

    Returns:
        list of ``num`` one-character strings.

    Example:

    >>> from keras_facemargin.data.glyphs import cjk_identities, find_cjk_fonts
    >>> cjk_identities(3, find_cjk_fonts())  # doctest: +SKIP
    ['鍵', '掲', '詠']
    """
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"`num` must be an integer >= 1. Received: num={num!r}")
    if not fonts:
        raise _no_fonts_error()
    need = len(fonts) if min_fonts is None else min_fonts
    if not 1 <= need <= len(fonts):
        raise ValueError(f"`min_fonts` must lie in [1, {len(fonts)}]. Received: min_fonts={min_fonts!r}")
    loaded = [f.load(24) for f in fonts]
    notdefs = [_draw(f, _MISSING, 24) for f in loaded]
    codes = np.random.default_rng(seed).permutation(np.arange(CJK_RANGE[0], CJK_RANGE[1] + 1))
    out = []
    for code in codes:
        ch = chr(int(code))
        hits = 0
        for i, (font, notdef) in enumerate(zip(loaded, notdefs, strict=True)):
            hits += _draws(font, ch, notdef, 24)
            if hits + len(loaded) - i - 1 < need:
                break
        if hits >= need:
            out.append(ch)
            if len(out) == num:
                return out
    raise ValueError(f"`num` must be at most {len(out)}: only that many characters are drawn by "
                     f"{need} of the {len(fonts)} fonts. Received: num={num}")


def _augment(glyph: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """One look of a glyph rendered on a (2 size, 2 size) canvas -> uint8 (size, size)."""
    Image, ImageDraw, ImageFilter, _ = _pil()
    img = Image.fromarray(glyph)
    stroke = rng.choice(4, p=[0.5, 0.25, 0.15, 0.1])  # none, thicker, thinner, much thicker
    if stroke == 1:
        img = img.filter(ImageFilter.MaxFilter(3))
    elif stroke == 2:
        img = img.filter(ImageFilter.MinFilter(3))
    elif stroke == 3:
        img = img.filter(ImageFilter.MaxFilter(5))
    # output pixel (x, y) reads input A @ ((x, y) - c_out) + c_in
    canvas = glyph.shape[0]
    theta = np.deg2rad(rng.uniform(-12, 12))
    zoom = rng.uniform(0.85, 1.15)
    shear = rng.uniform(-0.2, 0.2)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    a = (canvas / size) / zoom * rot @ np.array([[1.0, shear], [0.0, 1.0]])
    c_in = canvas / 2 + rng.uniform(-0.08, 0.08, 2) * canvas
    c_out = np.array([size / 2, size / 2])
    offset = c_in - a @ c_out
    img = img.transform((size, size), Image.AFFINE,
                        (a[0, 0], a[0, 1], offset[0], a[1, 0], a[1, 1], offset[1]),
                        resample=Image.BILINEAR)
    radius = rng.uniform(0.0, 0.9)
    if radius > 0.3:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    mask = np.asarray(img, dtype=np.float32) / 255.0
    bg, fg = rng.uniform(0, 90), rng.uniform(160, 255)
    out = bg + (fg - bg) * mask
    if rng.random() < 0.4:  # partial occlusion: a grey rectangle over up to a quarter
        h, w = (rng.uniform(0.2, 0.5, 2) * size).astype(int)
        y0, x0 = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        out[y0:y0 + h, x0:x0 + w] = rng.uniform(0, 255)
    out = out + rng.normal(0.0, rng.uniform(0.0, 12.0), out.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def render_glyphs(chars: Sequence[str], images_per_identity: int, fonts: Sequence[GlyphFont],
                  size: int = 32, seed: int = 0, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Augmented renderings of characters: ``images_per_identity`` looks of each.

    Image ``k`` of character ``c`` uses font ``order[k % len(fonts)]`` (``order`` a permutation
    drawn per character) and augmentations drawn from ``numpy.random.default_rng([seed,
    ord(c), offset + k])``: the same image whatever the other characters or counts.

    Args:
        chars: the identities (one character each).
        images_per_identity: images per character.
        fonts: font designs (see :func:`find_cjk_fonts`).
        size: output side in pixels. Defaults to `32`.
        seed: seed of the looks. Defaults to `0`.
        offset: index of the first image (``offset=100`` gives looks 100, 101, ...: other
            images of the same identities). Defaults to `0`.

    Returns:
        ``(images uint8 (N, size, size, 3) grey as RGB, labels int64 (N,))``, label i = chars[i].

    Example:

    >>> from keras_facemargin.data.glyphs import find_cjk_fonts, render_glyphs
    >>> x, y = render_glyphs(["永", "東"], 4, find_cjk_fonts())  # doctest: +SKIP
    >>> x.shape, y.tolist()  # doctest: +SKIP
    ((8, 32, 32, 3), [0, 0, 0, 0, 1, 1, 1, 1])
    """
    if isinstance(images_per_identity, bool) or not isinstance(images_per_identity, int) or \
            images_per_identity < 1:
        raise ValueError("`images_per_identity` must be an integer >= 1. Received: "
                         f"images_per_identity={images_per_identity!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"`size` must be an integer >= 8. Received: size={size!r}")
    if not fonts:
        raise _no_fonts_error()
    canvas = 2 * size
    loaded = [f.load(int(0.8 * canvas)) for f in fonts]
    images = np.zeros((len(chars) * images_per_identity, size, size, 3), np.uint8)
    labels = np.repeat(np.arange(len(chars)), images_per_identity)
    for i, ch in enumerate(chars):
        if not isinstance(ch, str) or len(ch) != 1:
            raise ValueError(f"`chars` must hold single characters. Received: {ch!r}")
        order = np.random.default_rng([seed, ord(ch)]).permutation(len(fonts))
        glyphs = {}
        for k in range(offset, offset + images_per_identity):
            f = int(order[k % len(fonts)])
            if f not in glyphs:
                glyphs[f] = _draw(loaded[f], ch, canvas)
            grey = _augment(glyphs[f], size, np.random.default_rng([seed, ord(ch), k]))
            images[i * images_per_identity + k - offset] = grey[..., None]
    return images, labels


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (H, W, 3) or (H, W) image (lossless, so pairs decode exactly)."""
    Image = _pil()[0]
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def save_bin(path: str | os.PathLike, images: Sequence[bytes], issame: Sequence[bool]) -> str:
    """Write an insightface-style verification ``.bin`` (pickle of ``(images, issame)``), atomically.

    Args:
        path: output file.
        images: 2P encoded images, 2i and 2i+1 forming pair i.
        issame: P booleans.

    Returns:
        The path written. :func:`keras_facemargin.data.load_bin` reads it.

    Example:

    >>> import os, tempfile
    >>> from keras_facemargin.data import load_bin
    >>> from keras_facemargin.data.glyphs import save_bin
    >>> p = save_bin(os.path.join(tempfile.mkdtemp(), "t.bin"), [b"a", b"b"], [True])
    >>> load_bin(p).issame
    [True]
    """
    if len(images) != 2 * len(issame) or not issame:
        raise ValueError(f"`images` must hold 2 images per pair. Received: {len(images)} images "
                         f"for {len(issame)} pairs")
    return _atomic_write(path, pickle.dumps(([bytes(b) for b in images],
                                             [bool(s) for s in issame]), protocol=4))


def _atomic_write(path, data: bytes) -> str:
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                               prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@dataclass
class GlyphBenchmark:
    """What :func:`write_glyph_benchmark` wrote (paths) and the identities it used.

    Args:
        directory: the output folder.
        train_rec: RecordIO of the training identities (``train.idx`` beside it).
        test_rec: RecordIO of the unseen identities (gallery / probes for 1:N).
        pairs_bin: verification ``.bin`` on the unseen identities.
        train_folder: image folder of the training identities, or `None`.
        train_chars: the training identities (label i = train_chars[i]).
        test_chars: the unseen identities.
        fonts: names of the font designs used.

    Returns:
        A plain record.

    Example:

    >>> from keras_facemargin.data.glyphs import GlyphBenchmark
    >>> GlyphBenchmark("d", "d/train.rec", "d/test.rec", "d/pairs.bin", None, [], [], []).pairs_bin
    'd/pairs.bin'
    """

    directory: str
    train_rec: str
    test_rec: str
    pairs_bin: str
    train_folder: str | None
    train_chars: list
    test_chars: list
    fonts: list


def _write_rec(rec_path: str, images: np.ndarray, labels: np.ndarray, num_classes: int) -> None:
    from keras_facemargin.data.recordio import IRHeader, identity_records, pack, write_recordio

    n = len(images)
    records = [(k + 1, pack(IRHeader(0, (float(labels[k]),), k + 1), encode_png(images[k])))
               for k in range(n)]
    starts = np.searchsorted(labels, np.arange(num_classes + 1)) + 1
    ranges = [(int(starts[c]), int(starts[c + 1])) for c in range(num_classes)]
    write_recordio(rec_path, rec_path[:-4] + ".idx",
                   identity_records(n + 1, ranges) + records)


def write_glyph_benchmark(directory: str | os.PathLike, num_train: int, num_test: int,
                          train_images: int = 20, test_images: int = 10, num_pairs: int = 6000,
                          size: int = 32, seed: int = 0, fonts: Sequence[GlyphFont] | None = None,
                          image_folder: bool = False) -> GlyphBenchmark:
    """Write an open-set benchmark: disjoint train and test identities, in the library's formats.

    The first ``num_train`` characters of :func:`cjk_identities` train, the next ``num_test`` are
    unseen. Files: ``train.rec``/``.idx`` (insightface layout, header record with the identity
    ranges; :func:`keras_facemargin.data.recordio_dataset` reads it), optionally ``train/<label>/
    <k>.png``, ``test.rec``/``.idx`` (``test_images`` looks of each unseen identity), ``pairs.bin``
    (``num_pairs`` LFW-style pairs over the test images, :func:`lfw_like_pairs`) and
    ``manifest.json`` (characters, fonts, settings).

    Args:
        directory: output folder (created).
        num_train: training identities.
        num_test: unseen identities (>= 2).
        train_images: images per training identity. Defaults to `20`.
        test_images: images per unseen identity (>= 2). Defaults to `10`.
        num_pairs: verification pairs, a multiple of 20. Defaults to `6000` (LFW's size).
        size: image side. Defaults to `32`.
        seed: seed of everything. Defaults to `0`.
        fonts: font designs. Defaults to `None` (:func:`find_cjk_fonts`).
        image_folder: also write the training images as an image folder. Defaults to `False`.

    Returns:
        :class:`GlyphBenchmark`.

    Example:

    >>> from keras_facemargin.data.glyphs import write_glyph_benchmark
    >>> bench = write_glyph_benchmark("glyphs/", 2000, 500)  # doctest: +SKIP
    >>> bench.pairs_bin  # doctest: +SKIP
    'glyphs/pairs.bin'
    """
    for arg, v, low in (("num_train", num_train, 1), ("num_test", num_test, 2),
                        ("test_images", test_images, 2), ("train_images", train_images, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"`{arg}` must be an integer >= {low}. Received: {arg}={v!r}")
    fonts = list(find_cjk_fonts() if fonts is None else fonts)
    if not fonts:
        raise _no_fonts_error()
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    chars = cjk_identities(num_train + num_test, fonts, seed)
    train_chars, test_chars = chars[:num_train], chars[num_train:]
    x, y = render_glyphs(train_chars, train_images, fonts, size, seed)
    train_rec = os.path.join(directory, "train.rec")
    _write_rec(train_rec, x, y, num_train)
    folder = None
    if image_folder:
        folder = os.path.join(directory, "train")
        for k, (img, label) in enumerate(zip(x, y, strict=True)):
            sub = os.path.join(folder, f"{label:06d}")
            os.makedirs(sub, exist_ok=True)
            _atomic_write(os.path.join(sub, f"{k % train_images:04d}.png"), encode_png(img))
    # unseen identities: other seeds' looks (offset) so that no test image repeats a train look
    tx, ty = render_glyphs(test_chars, test_images, fonts, size, seed, offset=train_images)
    test_rec = os.path.join(directory, "test.rec")
    _write_rec(test_rec, tx, ty, num_test)
    index, same = lfw_like_pairs(ty, num_pairs, seed)
    pairs_bin = save_bin(os.path.join(directory, "pairs.bin"),
                         [encode_png(tx[i]) for i in index.ravel()], same.tolist())
    manifest = {"train_chars": "".join(train_chars), "test_chars": "".join(test_chars),
                "fonts": [f.name for f in fonts], "train_images": train_images,
                "test_images": test_images, "num_pairs": num_pairs, "size": size, "seed": seed}
    _atomic_write(os.path.join(directory, "manifest.json"),
                  json.dumps(manifest, ensure_ascii=False, indent=1).encode())
    return GlyphBenchmark(directory, train_rec, test_rec, pairs_bin, folder, train_chars,
                          test_chars, [f.name for f in fonts])
