"""The ``wrn`` command line: a thin layer over the library.

Each sub-command lives in its own module of this package with a ``register(subparsers)`` function that adds
its parser and sets ``func``; modules import torch and the rest of the library only inside the function that
runs the command, so ``wrn --help`` stays fast. A :class:`wrn.errors.WRNError` becomes one line on stderr and
exit code 2.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys

from wrn.errors import RunStopped, WRNError

# Modules of this package, in the order their commands appear in ``wrn --help``.
COMMANDS = (
    "models", "convert", "export", "predict", "data", "train", "eval", "presets", "plot", "reproduce", "report",
    "bench",
)  # fmt: skip


class Parser(argparse.ArgumentParser):
    """argparse without prefix abbreviations (``--epoch`` is not ``--epochs``: a prefix accepted today could
    mean another option tomorrow); its subcommands' parsers are of the same kind."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        """The mistake first, in one sentence, then one short usage line (not the whole usage block)."""
        self.exit(2, f"{self.prog}: error: {message}\nusage: {self.prog} ... (see {self.prog} --help)\n")

    def unknown(self, extras: list[str]) -> None:
        """Exit with this parser's usage and the unknown arguments, suggesting the closest options."""
        options = [o for action in self._actions for o in action.option_strings if o.startswith("--")]
        hints = []
        for extra in extras:
            if extra.startswith("-"):
                close = difflib.get_close_matches(extra.split("=", 1)[0], options, n=1, cutoff=0.6)
                if close:
                    hints.append(f"did you mean {close[0]}?")
        message = f"unrecognized arguments: {' '.join(extras)}"
        self.error(message + (f"; {' '.join(hints)}" if hints else f" (see {self.prog} --help)"))


def build_parser() -> Parser:
    from wrn import __version__

    parser = Parser(
        prog="wrn", description="Wide Residual Networks: models, data, training and the paper's experiments."
    )
    parser.add_argument("--version", action="version", version=f"wrn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        importlib.import_module(f"wrn.cli.{name}").register(sub)
    return parser


def _deepest_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the command that ``args`` selected, e.g. ``wrn data download``'s."""
    while True:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions:
            return parser
        chosen = getattr(args, actions[0].dest, None)
        if chosen is None or chosen not in actions[0].choices:
            return parser
        parser = actions[0].choices[chosen]


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as the command line shows it: ``warning: ...``, without the code location."""
    return f"warning: {message}\n"


def _once(show):
    """``warnings.showwarning`` that shows each text once per command, whatever line it came from: torch's
    DataLoader gives its warning of too many workers from two places of each loader."""
    seen: set[str] = set()

    def show_once(message, category, filename, lineno, file=None, line=None):
        text = f"{category.__name__}: {message}"
        if text not in seen:
            seen.add(text)
            show(message, category, filename, lineno, file, line)

    return show_once


def main(argv: list[str] | None = None) -> int:
    import warnings

    formatted, shown = warnings.formatwarning, warnings.showwarning
    warnings.formatwarning = _one_line_warning
    warnings.showwarning = _once(shown)
    try:
        return _main(argv)
    finally:
        warnings.formatwarning, warnings.showwarning = formatted, shown


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if extras:
        target = _deepest_parser(parser, args)
        target.unknown(extras) if isinstance(target, Parser) else target.error(
            f"unrecognized arguments: {extras}"
        )
    if not hasattr(args, "func"):  # a command group such as `wrn data` without its action
        _deepest_parser(parser, args).print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except WRNError as exc:
        print(f"wrn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RunStopped as exc:  # a NaN, SIGINT or SIGTERM: what was kept and how to go on
        print(f"wrn {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"wrn {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`wrn models | head`): stop quietly, as Unix tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a path too long for the system that no check of wrn.paths saw: one sentence too
        from wrn.paths import too_long

        error = too_long(exc)
        if error is None:
            raise
        print(f"wrn {args.command}: error: {error}", file=sys.stderr)
        return 2
