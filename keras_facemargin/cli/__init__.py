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
import sys

SUBCOMMANDS = ("train", "eval", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facemargin", description="Train, evaluate and export face-recognition models."
    )
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's native (C++/absl/gRPC) log lines, silenced by "
                             "default; put it before the sub-command")
    sub = parser.add_subparsers(dest="command", required=True)
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
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


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
