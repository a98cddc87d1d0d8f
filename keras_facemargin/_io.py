"""Atomic file writes: the one home of "write beside, then rename over the target".

No TensorFlow or Keras here: the runtime, the evaluation metrics and the export pipeline all use
it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, prefix: str | None = None) -> Iterator[str]:
    """A temporary path beside ``path`` that replaces ``path`` when the block succeeds.

    The temporary file is created in ``path``'s folder (so ``os.replace`` is atomic on POSIX)
    with ``path``'s extension (writers that pick a format from it still work). When the block
    ends without an error it gets the usual file mode (``0o666 & ~umask``; ``mkstemp`` creates
    ``0o600``) and is renamed over ``path``; on any error it is removed and ``path`` is untouched:
    nothing is ever written half-way.

    Args:
        path: the file to write.
        prefix: prefix of the temporary name. Defaults to `"." + basename + "."`.

    Yields:
        The temporary path to write to.

    Example:

    >>> with atomic_path("model.keras") as tmp:  # doctest: +SKIP
    ...     model.save(tmp)
    """
    path = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix or f".{name}.",
                               suffix=os.path.splitext(name)[1])
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
