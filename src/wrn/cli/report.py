"""``wrn report OUT [OUT ...]``: the results of reproduction grids beside the paper's (Markdown, HTML, PNG)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="set the results of `wrn reproduce` grids beside the paper's (report.md, report.html, figures)",
        description=(
            "Read the grids written by `wrn reproduce` (folders with experiment.yaml, or a folder of such "
            "folders) and a figure4.json of `wrn bench figure4`, and write report.md (for GitHub), report.html "
            "(one self-contained file) and the PNG figures. Works on partial and running grids."
        ),
    )
    p.add_argument("grids", nargs="+", metavar="OUT", type=Path, help="a grid folder (or a folder of grids)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where to write (default OUT/report, or ./report for several)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wrn.reproduce.report import write_report

    folder = write_report(args.grids, args.out)
    print(folder / "report.md")
    print(folder / "report.html")
    return 0
