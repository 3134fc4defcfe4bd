"""The ``wrn`` command line: a thin layer over the library.

Each sub-command lives in its own module of this package with a ``register(subparsers)`` function that adds
its parser and sets ``func``. A :class:`wrn.errors.WRNError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from wrn.errors import WRNError

# Modules of this package, in the order their commands appear in ``wrn --help``.
COMMANDS = ("models", "convert", "export", "data", "train", "eval", "presets", "plot", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wrn", description="Wide Residual Networks: models, data, training and the paper's experiments."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"wrn.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except WRNError as exc:
        print(f"wrn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"wrn {args.command}: interrupted", file=sys.stderr)
        return 130
