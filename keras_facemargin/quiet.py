"""Keep TensorFlow's native (C++, absl, gRPC) logging out of a command's output.

TensorFlow 2.21 writes ``I0000 ...``/``W0000 ...``/``E0000 ...`` lines from C++ straight to file
descriptor 2, some of them through absl's logger before it is initialised, which no environment
variable silences (``TF_CPP_MIN_LOG_LEVEL`` covers only part of them). A newcomer reads
``E0000 ... NodeDef mentions attribute use_unbounded_threadpool`` as a failure. For the
``facemargin`` command and the example scripts, :func:`quiet_native_logging` therefore

* sets ``TF_CPP_MIN_LOG_LEVEL=3``, ``GRPC_VERBOSITY=NONE`` and the absl/TensorFlow Python loggers
  to ``ERROR``, and
* points file descriptor 2 at a pipe whose reader drops native log lines (and the lines of the same
  message) and passes everything else through; Python's own ``sys.stderr`` (argparse errors,
  warnings, tracebacks, the package's messages) is moved to a copy of the original descriptor,
  so it is neither delayed nor filtered. Fatal native lines (``F...``) pass through.

It must run before TensorFlow is imported, and only in a process's entry point: it changes
process-wide state (environment, file descriptor 2), so library code and tests never call it.
Because importing ``keras_facemargin`` imports Keras (to register its classes), the package's
``__init__`` calls :func:`quiet_if_entry_point` first: it quiets the process when it is the
``facemargin`` command (``facemargin ...`` or ``python -m keras_facemargin.cli ...``) without
``facemargin --verbose``, or when ``FACEMARGIN_QUIET_NATIVE=1`` (what the example scripts set
before importing the package; ``0`` forces the logs on). Nothing here imports TensorFlow or Keras.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import re
import sys
import threading

# absl C++: "I0000 00:00:1796217940.846382    6727 port.cc:153] ..."; older TF/glog:
# "2026-12-02 13:00:00.123456: W tensorflow/core/...] ..."; absl's pre-init notice.
_NATIVE = re.compile(
    rb"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]"
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] \S+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR)"
)
_HEADER = re.compile(rb"^(?:[IWEF]\d{4} |\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] )")
_installed = False
_SUBCOMMANDS = ("train", "eval", "export")
ENV = "FACEMARGIN_QUIET_NATIVE"


def is_native_log_line(line: bytes) -> bool:
    """Whether ``line`` is an info/warning/error line of TensorFlow's native logging."""
    return bool(_NATIVE.match(line))


def filter_native_lines(chunk: bytes) -> bytes:
    """``chunk`` without native info/warning/error messages (with their continuation lines).

    A line without a log header that follows a dropped message in the same chunk belongs to
    that message (absl writes one message with one ``write``), e.g. the second line of
    ``cpu_feature_guard``'s notice.
    """
    kept, dropping = [], False
    for line in chunk.splitlines(keepends=True):
        if is_native_log_line(line):
            dropping = True
        elif dropping and not _HEADER.match(line):
            continue
        else:
            dropping = False
            kept.append(line)
    return b"".join(kept)


def _pump(read_fd: int, write_fd: int) -> None:
    pending = b""
    while True:
        try:
            chunk = os.read(read_fd, 1 << 16)
        except OSError:
            break
        if not chunk:
            break
        data = pending + chunk
        cut = data.rfind(b"\n") + 1  # keep a partial last line for the next read
        data, pending = data[:cut], data[cut:]
        out = filter_native_lines(data)
        if out:
            os.write(write_fd, out)
    if pending and not is_native_log_line(pending):
        os.write(write_fd, pending)
    os.close(read_fd)


def quiet_native_logging(verbose: bool = False) -> None:
    """Silence TensorFlow's native logging for this process, unless ``verbose``.

    Call it first thing in an entry point, before TensorFlow is imported; a second call does
    nothing.

    Args:
        verbose: keep every log line (only ``TF_CPP_MIN_LOG_LEVEL`` keeps its default of `2`
            where unset). Defaults to `False`.

    Example:
    >>> from keras_facemargin.quiet import quiet_native_logging
    >>> quiet_native_logging(verbose=True)  # an entry point's --verbose: nothing silenced
    """
    global _installed
    if verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        return
    if _installed:
        return
    _installed = True
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    os.environ.setdefault("GRPC_TRACE", "")
    for name in ("absl", "tensorflow", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_fd, write_fd = os.pipe()
    except (OSError, ValueError):  # no usable descriptor 2 (e.g. closed): nothing to filter
        return
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    sys.stderr = io.TextIOWrapper(io.FileIO(original, "w", closefd=False), encoding=encoding,
                                  errors="backslashreplace", line_buffering=True)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    pump = threading.Thread(target=_pump, args=(read_fd, original), daemon=True,
                            name="facemargin-native-log-filter")
    pump.start()

    def restore() -> None:  # the pipe's writer closes, the pump drains it and stops
        try:
            sys.stderr.flush()
            os.dup2(original, 2)
        except (OSError, ValueError):
            return
        pump.join(timeout=2.0)

    atexit.register(restore)


def verbose_requested(argv: list[str]) -> bool:
    """``--verbose`` given to ``facemargin`` itself (before the sub-command)."""
    for arg in argv:
        if arg in _SUBCOMMANDS:
            return False
        if arg == "--verbose":
            return True
    return False


def _command_arguments() -> list[str] | None:
    """The arguments after ``facemargin`` when this process is that command, else None."""
    argv = list(sys.argv)
    if argv and os.path.basename(argv[0]) in ("facemargin", "facemargin.exe"):
        return argv[1:]
    orig = list(getattr(sys, "orig_argv", []))
    for i, arg in enumerate(orig[:-1]):
        if arg == "-m":
            return orig[i + 2:] if orig[i + 1] == "keras_facemargin.cli" else None
    return None


def quiet_if_entry_point() -> None:
    """Quiet the process if it is the ``facemargin`` command or ``FACEMARGIN_QUIET_NATIVE=1``."""
    flag = os.environ.get(ENV)
    if flag is not None:
        if flag == "1":
            quiet_native_logging()
        return
    args = _command_arguments()
    if args is not None and not verbose_requested(args):
        quiet_native_logging()
