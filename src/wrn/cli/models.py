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
        "--name", action="append", metavar="NAME", help="show this model (any wrn-D-K works); repeatable"
    )
    p.add_argument(
        "--filter",
        metavar="PATTERN",
        help="shell pattern over the registered names, any case, e.g. 'WRN-40-*' (with --name: both)",
    )
    p.add_argument(
        "--num-classes", type=int, default=None, help="classifier outputs (default: the family's own)"
    )
    p.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import fnmatch

    from wrn.errors import ConfigError
    from wrn.models.table import shipped_rows

    if args.num_classes is not None and args.num_classes < 1:
        raise ConfigError(f"--num-classes must be a positive integer, got {args.num_classes}.")
    shipped = shipped_rows()
    names: list[str] = []
    if args.filter is not None or not args.name:
        pattern = (args.filter or "*").strip().lower()
        names = [n for n in shipped if fnmatch.fnmatchcase(n, pattern)]
        if args.filter is not None and not names:
            raise ConfigError(
                f"no registered model matches {args.filter!r}; run `wrn models` to see every name."
            )
    for name in args.name or []:  # --name and --filter together: both kinds of rows
        if name.strip().lower() not in names:
            names.append(name.strip().lower())
    rows = []
    for name in names:
        row = shipped.get(name)
        if row is None or args.num_classes not in (None, row["num_classes"]):
            from wrn.models.complexity import describe  # counted now: another name or head (imports torch)

            row = describe(name, args.num_classes)
        rows.append(row)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        from wrn.models.table import format_table

        print(format_table(rows, markdown=args.format == "markdown"))
    return 0
