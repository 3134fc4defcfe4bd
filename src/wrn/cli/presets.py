"""``wrn presets``: the shipped training recipes, one line each, or one preset's full config."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "presets",
        help="list the training presets (the paper's recipes and the offline demo)",
        description="List the presets that `wrn train --preset NAME` accepts, or print one as YAML.",
    )
    p.add_argument("name", nargs="?", help="print this preset's full config as YAML")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wrn.train.compose import build_config, dump_yaml, list_presets

    if args.name:
        print(dump_yaml(build_config(args.name)), end="")
        return 0
    presets = list_presets()
    width = max(len(n) for n in presets)
    for name, description in presets.items():
        print(f"{name:<{width}}  {description}")
    return 0
