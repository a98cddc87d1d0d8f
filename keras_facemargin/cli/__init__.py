"""The ``facemargin`` command: ``facemargin train | eval | export``.

Each sub-command lives in its own module ``keras_facemargin/cli/<name>.py`` exposing
``add_parser(subparsers) -> argparse.ArgumentParser`` (which sets ``func=run`` as default)
and ``run(args) -> int``. Modules are imported lazily so ``facemargin --help`` stays fast.

``console_main`` (the ``facemargin`` command, ``python -m keras_facemargin.cli``) silences
TensorFlow's native logging before anything imports TensorFlow, unless ``facemargin --verbose``;
``main`` (called in-process, e.g. by tests) leaves the process's logging alone.
"""

from __future__ import annotations

import argparse
import importlib
import pickle
import sys
import zipfile

SUBCOMMANDS = ("train", "eval", "export")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error: ``facemargin train: error: ... (see --help)``, exit 2."""

    def error(self, message: str):  # noqa: D102 - argparse hook
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# What a user's input (a file, a flag value) can raise below a sub-command: one line, exit 2.
USER_ERRORS = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile,
               pickle.UnpicklingError)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="facemargin", description="Train, evaluate and export face-recognition models."
    )
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's native (C++/absl/gRPC) log lines, silenced by "
                             "default; put it before the sub-command")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"keras_facemargin.cli.{name}")
        except ModuleNotFoundError as err:  # a sub-command not shipped in this build
            if err.name != f"keras_facemargin.cli.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``facemargin``; returns the exit status (0 ok, 1 a failed check, 2 bad input).

    A user error (bad flag value, missing or unreadable file, bad data) is one line on stderr
    and exit status 2, never a traceback; ``facemargin --verbose`` re-raises it with its
    traceback.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as err:
        if args.verbose:
            raise
        text = " ".join(str(err).split()) or type(err).__name__
        print(f"facemargin {args.command}: error: {type(err).__name__}: {text[:2000]}",
              file=sys.stderr)
        return 2


def console_main() -> int:
    """Entry point of the ``facemargin`` command: ``main`` on the command line's arguments.

    Importing the package already silenced TensorFlow's native logging for this command unless
    ``facemargin --verbose`` (``keras_facemargin.quiet.quiet_if_entry_point``).
    """
    from keras_facemargin.quiet import quiet_native_logging, verbose_requested

    argv = sys.argv[1:]
    quiet_native_logging(verbose=verbose_requested(argv))  # no-op if already quiet
    return main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(console_main())
