"""Verification pair sets: insightface's ``.bin`` (lfw.bin, cfp_fp.bin, agedb_30.bin) and LFW's
``pairs.txt`` with an image folder.

A ``.bin`` is a pickle of ``(list of encoded images, issame list)``: image ``2i`` and ``2i+1``
form pair ``i``. It is loaded with a restricted unpickler that builds only lists, tuples, bytes,
strings, numbers and booleans: any global (class or function) is refused, so a malicious file
cannot execute code. NumPy booleans (written by some conversion scripts) are accepted through
a whitelist of exactly two reconstructors that build nothing but a boolean.

Pure Python here; decoding to pixels is :func:`keras_facemargin.data.pipeline.decode_pairs`.
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
from dataclasses import dataclass

_NUMPY_SCALAR = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}
_NUMPY_DTYPE = {("numpy", "dtype")}
_NUMPY_RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"),
                      ("numpy._core.multiarray", "_reconstruct")}
_NUMPY_NDARRAY = {("numpy", "ndarray")}
_CODECS_ENCODE = {("_codecs", "encode")}
_NUMPY_FROMBUFFER = {("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}


class _BoolDType:
    """Stand-in for ``numpy.dtype("b1")``: the only dtype a ``.bin`` may name."""

    def __init__(self, spec, align=False, copy=False):
        if spec not in ("b1", b"b1", "?", b"?", "bool"):
            raise pickle.UnpicklingError(
                f"Refusing a numpy dtype other than bool in a verification .bin. Received: {spec!r}")

    def __setstate__(self, state):
        pass


def _bool_scalar(dtype, data=b""):
    if not isinstance(dtype, _BoolDType) or not isinstance(data, (bytes, bytearray)) or len(data) != 1:
        raise pickle.UnpicklingError("Refusing a numpy scalar that is not a boolean")
    return bool(data[0])


def _latin1_encode(text, encoding="latin1"):
    """Protocol-2 pickles of ``bytes`` written by Python 3 call ``_codecs.encode(str, "latin1")``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("Refusing _codecs.encode other than (str, 'latin1')")
    return text.encode("latin1")


class _NDArrayMarker:
    """Stand-in for the ``numpy.ndarray`` class argument of ``_reconstruct``."""


class _BoolArray(list):
    """A 1-D numpy boolean array rebuilt as a list of Python bools (nothing else accepted)."""

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("Refusing a numpy array with an unexpected state")
        _, shape, dtype, _, raw = state
        if not isinstance(dtype, _BoolDType) or not isinstance(raw, (bytes, bytearray)) or \
                tuple(shape) != (len(raw),):
            raise pickle.UnpicklingError("Refusing a numpy array that is not 1-D boolean")
        self[:] = [bool(b) for b in raw]


def _reconstruct(cls, shape=(0,), typecode=b"b"):
    if cls is not _NDArrayMarker:
        raise pickle.UnpicklingError("Refusing numpy _reconstruct of a class other than ndarray")
    return _BoolArray()


def _frombuffer(buf, dtype, shape, order="C"):
    """Protocol-5 numpy arrays: accepted only as a 1-D bool array."""
    if not isinstance(dtype, _BoolDType) or not isinstance(buf, (bytes, bytearray)) or \
            tuple(shape) != (len(buf),):
        raise pickle.UnpicklingError("Refusing a numpy array that is not 1-D boolean")
    return [bool(b) for b in buf]


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except the few that rebuild bytes and booleans.

    Allowed: ``_codecs.encode`` of a str in latin1 (how Python 3 pickles bytes at protocol 2),
    and numpy's scalar / array reconstructors, replaced by stand-ins that accept only the bool
    dtype and return Python bools. Everything else raises ``pickle.UnpicklingError``.

    Args:
        file: a binary file object.

    Returns:
        An unpickler; ``load()`` returns the object or raises ``pickle.UnpicklingError``.

    Example:

    >>> import io, pickle
    >>> from keras_facemargin.data.verification import SafeUnpickler
    >>> SafeUnpickler(io.BytesIO(pickle.dumps(([b"a"], [True])))).load()
    ([b'a'], [True])
    """

    def __init__(self, file):
        super().__init__(file, encoding="bytes")  # Python 2 pickles: str -> bytes

    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_SCALAR:
            return _bool_scalar
        if (module, name) in _NUMPY_DTYPE:
            return _BoolDType
        if (module, name) in _NUMPY_RECONSTRUCT:
            return _reconstruct
        if (module, name) in _NUMPY_NDARRAY:
            return _NDArrayMarker
        if (module, name) in _NUMPY_FROMBUFFER:
            return _frombuffer
        if (module, name) in _CODECS_ENCODE:
            return _latin1_encode
        raise pickle.UnpicklingError(
            f"Refusing to load {module}.{name}: a verification .bin may only hold a list of "
            "image bytes and a list of booleans")


@dataclass
class VerificationPairs:
    """Encoded images of a verification set and whether each pair is the same identity.

    Args:
        name: the set's name (file stem, e.g. ``"lfw"``).
        images: list of 2P encoded images (bytes); images 2i and 2i+1 are pair i.
        issame: list of P booleans.

    Returns:
        A plain record.

    Example:

    >>> from keras_facemargin.data.verification import VerificationPairs
    >>> len(VerificationPairs("x", [b"a", b"b"], [True]))
    1
    """

    name: str
    images: list
    issame: list

    def __len__(self) -> int:
        return len(self.issame)


def _validate(obj, path: str) -> tuple[list, list]:
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise ValueError(f"A verification .bin must hold a pair (images, issame). Received: "
                         f"{type(obj).__name__} in {path!r}")
    images, issame = obj
    if not isinstance(images, (list, tuple)) or not isinstance(issame, (list, tuple)):
        raise ValueError(f"A verification .bin must hold two lists. Received: "
                         f"({type(images).__name__}, {type(issame).__name__}) in {path!r}")
    bad = [i for i, b in enumerate(images) if not isinstance(b, (bytes, bytearray))]
    if bad:
        raise ValueError(f"Every image of a verification .bin must be encoded bytes. Received: "
                         f"{type(images[bad[0]]).__name__} at index {bad[0]} in {path!r}")
    bad = [i for i, b in enumerate(issame) if not isinstance(b, bool)]
    if bad:
        raise ValueError(f"`issame` of a verification .bin must hold booleans. Received: "
                         f"{issame[bad[0]]!r} at index {bad[0]} in {path!r}")
    if len(images) != 2 * len(issame) or not issame:
        raise ValueError(f"A verification .bin must hold 2 images per pair: {len(issame)} issame "
                         f"entries need {2 * len(issame)} images. Received: {len(images)} images "
                         f"in {path!r}")
    return [bytes(b) for b in images], list(issame)


def load_bin(path: str | os.PathLike) -> VerificationPairs:
    """Load an insightface verification ``.bin`` safely (no code execution).

    Args:
        path: e.g. ``"faces_emore/lfw.bin"``.

    Returns:
        :class:`VerificationPairs` with the encoded images (decode them with
        :func:`keras_facemargin.data.decode_pairs`).

    Example:

    >>> from keras_facemargin.data import load_bin
    >>> pairs = load_bin("faces_emore/lfw.bin")  # doctest: +SKIP
    >>> len(pairs)  # doctest: +SKIP
    6000
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`path` must be an existing verification .bin. Received: path={path!r}")
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise ValueError(f"The verification .bin is empty. Received: path={path!r}")
    try:
        obj = SafeUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as err:
        raise ValueError(f"Refused or unreadable verification .bin {path!r}: {err}") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            MemoryError, OverflowError) as err:
        raise ValueError(f"Unreadable verification .bin {path!r}: {type(err).__name__}: {err}") from None
    images, issame = _validate(obj, path)
    name = os.path.splitext(os.path.basename(path))[0]
    return VerificationPairs(name, images, issame)


def load_pairs_txt(pairs_path: str | os.PathLike, image_dir: str | os.PathLike,
                   extension: str = ".jpg") -> VerificationPairs:
    """LFW's ``pairs.txt`` (or ``pairsDevTest.txt``) with the image folder ``lfw/<name>/<name>_0001.jpg``.

    Lines with 3 fields ``name n1 n2`` are same-identity pairs, 4 fields ``name1 n1 name2 n2``
    different-identity pairs; a leading header line of 1 or 2 integers (folds, pairs per fold)
    is skipped. Pairs whose image file is missing are skipped and counted with a warning.

    Args:
        pairs_path: the pairs file.
        image_dir: the folder holding one sub-folder per person.
        extension: image file extension. Defaults to `".jpg"`.

    Returns:
        :class:`VerificationPairs` (images as file bytes).

    Example:

    >>> from keras_facemargin.data import load_pairs_txt
    >>> pairs = load_pairs_txt("lfw/pairs.txt", "lfw/images")  # doctest: +SKIP
    """
    pairs_path, image_dir = os.fspath(pairs_path), os.fspath(image_dir)
    if not os.path.isfile(pairs_path):
        raise FileNotFoundError(f"`pairs_path` must be an existing file. Received: pairs_path={pairs_path!r}")
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"`image_dir` must be an existing folder. Received: image_dir={image_dir!r}")

    def file_of(name: str, num: str, n: int) -> str:
        if not num.isdigit():
            raise ValueError(f"`pairs_path` pair {n}: the image number must be a whole number. "
                             f"Received: {num!r} in {pairs_path!r}")
        return os.path.join(image_dir, name, f"{name}_{int(num):04d}{extension}")

    images, issame, missing = [], [], 0
    try:
        with open(pairs_path, encoding="utf-8") as f:
            lines = [line.split() for line in f if line.strip()]
    except UnicodeDecodeError as err:
        raise ValueError(f"`pairs_path` is not a text file (byte {err.start} is not UTF-8). "
                         f"Received: pairs_path={pairs_path!r}") from None
    if lines and len(lines[0]) <= 2 and all(x.isdigit() for x in lines[0]):
        lines = lines[1:]
    for n, fields in enumerate(lines, 1):
        if len(fields) == 3:
            paths, same = (file_of(fields[0], fields[1], n), file_of(fields[0], fields[2], n)), True
        elif len(fields) == 4:
            paths, same = (file_of(fields[0], fields[1], n), file_of(fields[2], fields[3], n)), False
        else:
            raise ValueError(f"`pairs_path` line must have 3 (same) or 4 (different) fields. "
                             f"Received: {' '.join(fields)!r} (pair {n}) in {pairs_path!r}")
        if not all(os.path.isfile(p) for p in paths):
            missing += 1
            continue
        for p in paths:
            with open(p, "rb") as img:
                images.append(img.read())
        issame.append(same)
    if missing:
        warnings.warn(f"{missing} of {len(lines)} pairs of {pairs_path!r} skipped: image file "
                      "missing", stacklevel=2)
    if not issame:
        raise ValueError(f"No usable pair in {pairs_path!r} (images under {image_dir!r})")
    return VerificationPairs(os.path.splitext(os.path.basename(pairs_path))[0], images, issame)
