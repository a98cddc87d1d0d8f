"""The ``facemargin`` command: ``facemargin train | eval | export``.

Each sub-command lives in its own module ``keras_facemargin/cli/<name>.py`` exposing
``add_parser(subparsers) -> argparse.ArgumentParser`` (which sets ``func=run`` as default)
and ``run(args) -> int``. Modules are imported lazily so ``facemargin --help`` stays fast.
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
