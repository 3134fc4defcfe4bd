"""``wrn models``: every registered network with its parameters and multiply-adds."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list the networks with parameters and multiply-adds",
        description="Every registered network with its trainable parameters (10 classes for CIFAR/SVHN networks, "
        "1000 for ImageNet ones unless --num-classes), its forward multiply-adds at its native input "
        "(32x32 or 224x224) and the paper's figure.",
    )
    p.add_argument(
        "--name", action="append", metavar="NAME", help="show only this model (any wrn-D-K works); repeatable"
    )
    p.add_argument(
        "--filter", metavar="PATTERN", help="shell pattern over the registered names, e.g. 'wrn-40-*'"
    )
    p.add_argument(
        "--num-classes", type=int, default=None, help="classifier outputs (default: the family's own)"
    )
    p.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wrn.errors import ConfigError
    from wrn.models.complexity import format_table, model_table
    from wrn.models.registry import list_models

    if args.num_classes is not None and args.num_classes < 1:
        raise ConfigError(f"--num-classes must be a positive integer, got {args.num_classes}.")
    names = args.name if args.name else list_models(args.filter)
    if not names:
        raise ConfigError(f"no registered model matches {args.filter!r}; run `wrn models` to see every name.")
    rows = model_table(names, args.num_classes)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows, markdown=args.format == "markdown"))
    return 0
