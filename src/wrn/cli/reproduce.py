"""``wrn reproduce EXPERIMENT``: run a table or figure of the paper as a resumable grid of `wrn train` runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wrn.errors import ConfigError
from wrn.reproduce.experiments import EXPERIMENTS
from wrn.train.options import BY_KEY, add_options, command_keys
from wrn.train.rundir import RunDir

# The `wrn train` options a grid passes to every one of its runs (the fields marked for `reproduce`), by the
# name experiment.yaml records them under: --data-dir -> data_dir.
TRAIN_OPTIONS = {BY_KEY[key].flag.lstrip("-").replace("-", "_"): key for key in command_keys("reproduce")}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="run a table or figure of the paper as a resumable grid of runs (locally or on Ray)",
        description=(
            "Run one of the paper's experiments, or one of today's recipes beside its paper (`wrn reproduce "
            "list` shows them), as a grid of ordinary "
            "`wrn train` runs in OUT/<row>/seed-<s>. Running the same command again skips finished runs, "
            "resumes partial ones and retries failed ones once. `wrn report OUT` sets the results beside the "
            "paper's. Figures 2 and 3 are drawn from the runs of Tables 5 and 6: by default they use the same "
            "folder (repro/table5, repro/table6)."
        ),
    )
    p.add_argument(
        "experiment",
        metavar="EXPERIMENT",
        help=f"{', '.join(EXPERIMENTS)}, or list (which describes them)",
    )
    g = p.add_argument_group("the grid")
    g.add_argument(
        "--out",
        metavar="DIR",
        help="the grid's folder (default repro/<experiment>; figure2 and figure3: the folder of table5 / table6)",
    )
    g.add_argument(
        "--runs", type=int, default=None, metavar="N", help="seeds per row (default 5, the paper's)"
    )
    g.add_argument(
        "--rows",
        metavar="ROWS",
        help="train only these rows now: comma-separated row names or shell patterns (e.g. 'cifar10-*')",
    )
    g.add_argument(
        "--dry-run", action="store_true", help="print every run's config and command; start nothing"
    )
    x = p.add_argument_group("where the runs train")
    x.add_argument(
        "--jobs", type=int, metavar="N", help="runs at once (default: one per visible GPU, else 1)"
    )
    x.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run on Ray, one task per run: auto (the running cluster), local (a new local instance), "
        "HOST:PORT or ray://HOST:PORT; results must be on a disk every node shares",
    )
    x.add_argument(
        "--gpus-per-run", type=float, metavar="G", help="Ray: GPUs per run (default 1 on a GPU cluster)"
    )
    x.add_argument(
        "--cpus-per-run", type=float, default=None, metavar="C", help="Ray: CPUs per run (default 1)"
    )
    o = p.add_argument_group("scaling down: applied to every run, the grid is then marked as scaled down")
    add_options(p, tuple(TRAIN_OPTIONS.values()), group=o)  # `wrn train`'s options of the same fields
    o.add_argument("--download", action="store_true", help="fetch a missing data set first (once)")
    o.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="any config value of every run (repeatable)",
    )
    f = p.add_argument_group("figure4 (the speed benchmark) and list")
    f.add_argument("--device", help="figure4: the device to time (default: the GPU if there is one)")
    f.add_argument("--steps", type=int, metavar="N", help="figure4: timed steps per network")
    f.add_argument("--warmup", type=int, metavar="N", help="figure4: untimed steps per network first")
    f.add_argument(
        "--bench",
        metavar="FIGURE4.json",
        help="list: estimate GPU-hours from this `wrn bench figure4` result instead of the assumed rate",
    )
    p.set_defaults(func=run)


def _overrides(args: argparse.Namespace):
    from wrn.reproduce.grid import Overrides
    from wrn.train.options import overrides_from

    root = BY_KEY["dataset.root"].dest
    if getattr(args, root):
        setattr(args, root, str(Path(getattr(args, root)).expanduser().absolute()))
    values = overrides_from(args)
    argv: list[str] = []
    record: dict = {}
    for name, key in TRAIN_OPTIONS.items():
        value = values.get(key)
        record[name] = value
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    for item in args.set:
        argv += ["--set", item]
    record["set"] = list(args.set)
    return Overrides(tuple(argv), values, record)


def _train_options_given(args: argparse.Namespace) -> list[str]:
    return [BY_KEY[key].flag for key in TRAIN_OPTIONS.values() if getattr(args, BY_KEY[key].dest) is not None]


def _default_out(name: str) -> Path:
    from wrn.reproduce.experiments import base_experiment, get_experiment

    return Path("repro") / base_experiment(get_experiment(name)).name


def run(args: argparse.Namespace) -> int:
    from wrn.reproduce.runner import ctrl_c_interrupts

    with ctrl_c_interrupts():  # from the start: a Ctrl-C while the grid is planned stops it too
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from wrn.reproduce.experiments import get_experiment

    if args.experiment == "list":
        return run_list(args)
    exp = get_experiment(args.experiment)
    if args.bench is not None:
        raise ConfigError("--bench is an option of 'wrn reproduce list' only")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs} is not a positive number of runs at once")
    if args.ray is None and (args.gpus_per_run is not None or args.cpus_per_run is not None):
        raise ConfigError("--gpus-per-run and --cpus-per-run apply to Ray runs only; add --ray ADDRESS")
    if args.gpus_per_run is not None and args.gpus_per_run < 0:
        raise ConfigError(f"--gpus-per-run {args.gpus_per_run:g} is negative; give 0 or more")
    if args.cpus_per_run is not None and args.cpus_per_run <= 0:
        raise ConfigError(f"--cpus-per-run {args.cpus_per_run:g} is not positive; give 1 or more")
    out = Path(args.out) if args.out else _default_out(exp.name)
    if exp.kind == "bench":
        return run_figure4(args, exp, out)
    if args.device is not None or args.steps is not None or args.warmup is not None:
        raise ConfigError(
            "--device, --steps and --warmup apply to figure4 only; for training runs use --set run.device=..."
        )
    return run_grid(args, exp, out)


def run_grid(args: argparse.Namespace, exp, out: Path) -> int:
    from wrn.reproduce import grid as G
    from wrn.reproduce.runner import run_grid as execute

    overrides = _overrides(args)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
    plan = G.make_plan(exp.name, out, exp.default_runs if args.runs is None else args.runs, overrides, rows)
    if args.dry_run:
        return dry_run(plan)
    if plan.experiment.attack:  # its package is there before hours of training that it would attack
        from wrn.train.robust_eval import require_attack

        require_attack(plan.experiment.attack)
    summary = execute(
        plan,
        jobs=args.jobs,
        ray_address=args.ray,
        gpus_per_run=args.gpus_per_run,
        cpus_per_run=args.cpus_per_run or 1.0,
        download=args.download,
    )
    return finish(summary, plan.out)


def dry_run(plan) -> int:
    from wrn.reproduce import grid as G
    from wrn.reproduce.runner import train_args
    from wrn.train.compose import dump_yaml

    G.check_out(plan)
    scaled = f", scaled down ({', '.join(plan.scaled)})" if plan.scaled else ""
    print(
        f"# {plan.experiment.name}: {len(plan.todo)} runs in {plan.out}{scaled}; nothing is started (--dry-run)"
    )
    for spec in plan.todo:
        if spec.finished():
            what = "done: would be skipped"
        elif RunDir(spec.dir).state() == "done":
            what = f"trained: would attack: wrn {' '.join(spec.attack)}"
        else:  # the command the grid would run, as the runner makes it
            args, how = train_args(spec)
            what = f"would {how}: wrn {' '.join(args)}"
            if spec.attack:
                what += f"; then attack: wrn {' '.join(spec.attack)}"
        print(f"\n# {spec.key}: {what}")
        print(dump_yaml(plan.resolved[spec.key]).rstrip())
    print(
        f"\n# {len(plan.todo)} runs; the config files above are written to {plan.out / G.CONFIGS_DIR} when the grid starts"
    )
    return 0


def finish(summary, out: Path) -> int:
    if summary.interrupted is not None:
        print(
            "wrn reproduce: stopped; run the same command again to continue (finished runs are kept)",
            file=sys.stderr,
        )
        return 128 + int(summary.interrupted)
    done, before, failed = summary.count("done"), summary.count("skipped"), summary.failed
    attacked = sum(o.status == "done" and o.attacked_only for o in summary.outcomes)
    now = f"{done - attacked} trained now" + (
        f", {attacked} trained before and attacked now" if attacked else ""
    )
    print(
        f"{done + before} of {len(summary.outcomes)} runs done ({now}, {before} before), "
        f"{len(failed)} failed. Report: wrn report {out}"
    )
    for o in failed:
        print(f"FAILED {o.key} after {o.attempts} tries: {o.last_line}", file=sys.stderr)
    return 1 if failed else 0


def run_figure4(args: argparse.Namespace, exp, out: Path) -> int:
    from wrn.reproduce import grid as G
    from wrn.reproduce.runner import run_bench

    given = [f"--{n}" for n in ("rows", "runs", "jobs", "ray") if getattr(args, n)] + _train_options_given(
        args
    )
    if args.set:
        given.append("--set")
    if args.download:
        given.append("--download")
    if given:
        raise ConfigError(
            f"figure4 is a speed benchmark on synthetic data, so {', '.join(given)} "
            f"{'does' if len(given) == 1 else 'do'} not apply; "
            "it takes --device, --steps and --warmup"
        )
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps {args.steps} is not a positive number of steps")
    if args.warmup is not None and args.warmup < 0:
        raise ConfigError(f"--warmup {args.warmup} is negative; give 0 or more warm-up steps")
    options: list[str] = []
    if args.device:
        options += ["--device", args.device]
    if args.steps is not None:
        options += ["--steps", str(args.steps)]
    record = {"device": args.device, "steps": args.steps}
    if args.warmup is not None:  # recorded only when given: grids written before --warmup existed still match
        options += ["--warmup", str(args.warmup)]
        record["warmup"] = args.warmup
    plan = G.make_plan(exp.name, out, 1, G.Overrides(tuple(options), {}, record))
    if args.dry_run:
        G.check_out(plan)
        print(
            f"# figure4: would run: wrn bench figure4 --out {plan.out / G.BENCH_DIR} {' '.join(options)}".rstrip()
        )
        return 0
    existing = G.check_out(plan)
    G.write_experiment(plan, existing)
    summary = run_bench(plan.out, options)
    if summary.interrupted is not None:
        return 128 + int(summary.interrupted)
    if summary.failed:
        print(f"FAILED figure4: {summary.failed[0].last_line}", file=sys.stderr)
        return 1
    print(f"figure4 done: {plan.out / G.BENCH_DIR / G.BENCH_FILE}. Report: wrn report {plan.out}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from wrn.reproduce import experiments as E

    unused = [n for n in ("out", "rows", "ray", "device") if getattr(args, n)] + _train_options_given(args)
    if unused or args.set or args.dry_run:
        raise ConfigError("'wrn reproduce list' takes no options but --bench FIGURE4.json")
    rate, eff, how = (
        E.ASSUMED_TFLOPS_WIDE,
        None,
        f"an assumed {E.ASSUMED_TFLOPS_WIDE:g} TFLOP/s for wide nets",
    )
    if args.bench:
        import json

        try:
            doc = json.loads(Path(args.bench).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ConfigError(
                f"--bench {args.bench} is not a readable figure4.json of 'wrn bench figure4'"
            ) from None
        rate, eff = E.bench_rates(doc)
        how = f"{rate:.1f} TFLOP/s measured for WRN-28-10 by {args.bench}"
    seeds = args.runs
    seeds_text = (
        f"{seeds} seeds per row" if seeds else "the default seeds (5 per row; ImageNet tables and robust 1)"
    )
    head = f"{'experiment':<11} {'rows':>4} {'runs/seed':>9} {'epochs/seed':>11} {'GPU-h*':>8}  {'data sets':<24} what"
    print(head)
    for exp in E.EXPERIMENTS.values():
        rows = exp.runnable_rows
        if exp.kind == "bench":
            print(
                f"{exp.name:<11} {'-':>4} {'-':>9} {'-':>11} {'<0.1':>8}  {'none (synthetic)':<24} {exp.description}; a GPU"
            )
            continue
        data = ", ".join(dict.fromkeys(r.dataset for r in rows))
        hours = E.experiment_gpu_hours(exp, seeds, tflops_wide=rate, efficiencies=eff)
        what = exp.description + (f" (the {exp.view_of} runs)" if exp.view_of else "")
        print(
            f"{exp.name:<11} {len(exp.rows):>4} {len(rows):>9} {E.total_epochs(exp):>11,} {hours:>8,.0f}  {data:<24} {what}"
        )
    print(
        f"* estimated GPU-hours (no GPU was measured) of {seeds_text}: FLOPs of each row's recipe (SAM: two "
        "passes per step; adversarial training with K attack steps: K + 1 with PGD-AT, K + 2 with TRADES, one "
        f"more with AWP; AutoAttack after training not counted) at {how}, "
        "thin nets at the share of it the paper's own timings give them (docs/reproduce.md)"
    )
    return 0


__all__ = ["register", "run"]
