"""``wrn plot RUN [RUN ...] [--out FILE.png]``: training curves in the style of the paper's Figure 2."""

from __future__ import annotations

import argparse
from pathlib import Path

from wrn.errors import ConfigError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="plot the training curves of one or more runs (test error and train loss per epoch)",
        description=(
            "Plot test error (solid) and training loss (dashed) per epoch, with the learning-rate drops marked, "
            "from each run's metrics.jsonl. Several runs share one figure, one colour per run."
        ),
    )
    parser.add_argument(
        "runs", nargs="+", metavar="RUN", type=Path, help="a run directory (holds metrics.jsonl)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="where to write the figure, .png, .svg or .pdf (default: RUN/curves.png for one run, "
        "./curves.png for several)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wrn.paths import check_input_dir, check_input_file, check_new_output_file
    from wrn.train.plot import FORMATS, plot_run, plot_runs
    from wrn.train.rundir import CURVES, METRICS

    fix = f"pass run directories written by `wrn train` (each holds {METRICS})"
    for run_dir in args.runs:
        check_input_dir(run_dir, "the run", fix)
        check_input_file(run_dir / METRICS, "the metrics file", fix)
    if args.out is not None and args.out.suffix.lower() not in FORMATS:
        raise ConfigError(f"--out {args.out}: give a file name ending in {', '.join(FORMATS)}")
    default = args.runs[0] / CURVES if len(args.runs) == 1 else Path(CURVES)
    out = check_new_output_file(args.out or default, force=True, what="--out" if args.out else "the figure")
    if len(args.runs) == 1:
        path = plot_run(args.runs[0], out=out)
    else:
        path = plot_runs(args.runs, out=out)
    print(path)
    return 0
