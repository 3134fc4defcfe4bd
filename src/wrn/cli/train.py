"""``wrn train``: train a network from a preset and/or a YAML config, with command-line overrides."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from wrn.errors import ConfigError
from wrn.train.options import BY_KEY, add_options, flag_of, keys, overrides_from


def parse_checkpoint_every(text: str) -> dict[str, Any]:
    """``30m`` / ``30`` (minutes), ``500steps`` (optimizer steps) or ``off`` (only at epoch ends)."""
    value = text.strip().lower()
    if value in ("off", "none", "epoch"):
        return {"checkpoint_every_minutes": None, "checkpoint_every_steps": None}
    m = re.fullmatch(r"(\d+)\s*(?:steps?)", value)
    if m and int(m.group(1)) > 0:
        return {"checkpoint_every_minutes": None, "checkpoint_every_steps": int(m.group(1))}
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*(?:m|min|mins|minutes?)?", value)
    if m and float(m.group(1)) > 0:
        return {"checkpoint_every_minutes": float(m.group(1)), "checkpoint_every_steps": None}
    raise ConfigError(
        f"--checkpoint-every {text!r} is not understood; use minutes (e.g. 10 or 10m), steps (e.g. 500steps) or off"
    )


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a network (a preset, a YAML config, overrides; resumable)",
        description=(
            "Train a network. Start from a shipped preset (`wrn presets` lists them) and/or a YAML config; "
            "the options below override single values. The run directory (--out) receives config.yaml, "
            "metrics.jsonl, TensorBoard events, checkpoint.pt, model.safetensors + model.json and curves.png. "
            "Several GPUs or machines: torchrun --nproc-per-node=N -m wrn train ..."
        ),
    )
    src = p.add_argument_group("what to run")
    src.add_argument("--preset", help="a shipped recipe, e.g. cifar10-wrn-28-10 or demo")
    src.add_argument("--config", metavar="FILE.yaml", help="a YAML config (applied on top of --preset)")
    src.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    src.add_argument(
        "--out", metavar="DIR", help="run directory to create (default runs/<preset>-<timestamp>)"
    )
    src.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="any config value by its dotted key, e.g. --set optim.nesterov=false (repeatable)",
    )

    # One option per config field that has a flag (wrn.train.config's option(...) markers).
    r = add_options(p)["run"]
    r.add_argument(
        "--checkpoint-every",
        metavar="EVERY",
        help="mid-epoch checkpoints: minutes (10, 10m), steps (500steps) or off; always at each epoch end",
    )
    r.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (what would run, as config.yaml) and start nothing",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wrn.train.signals import catch_early, release_early

    catch_early()  # a SIGTERM from here on is kept until the run can save and stop
    try:
        return _run(args)
    finally:
        release_early()


def _run(args: argparse.Namespace) -> int:
    """A stopped run (a signal, a NaN) raises :class:`wrn.errors.RunStopped`: the command line says what was
    kept and exits with its code (130 for SIGINT, 143 for SIGTERM)."""
    from wrn.train.compose import build_config
    from wrn.train.run import resume, train

    overrides = overrides_from(args)
    if args.checkpoint_every is not None:
        overrides.update({f"run.{k}": v for k, v in parse_checkpoint_every(args.checkpoint_every).items()})
    if args.resume is not None:
        _check_resume_options(args, overrides)
        resume(
            args.resume,
            epochs=overrides.get("schedule.epochs"),
            run={k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("run.")},
            verbose=True,
        )
        return 0
    if args.preset is None and args.config is None and not {"model.name", "dataset.name"} <= set(overrides):
        raise ConfigError(
            "say what to train with --preset NAME (see 'wrn presets'), --config FILE.yaml, "
            "or both --model and --dataset"
        )
    cfg = build_config(args.preset, args.config, overrides)
    if args.print_config:
        from wrn.train.compose import dump_yaml
        from wrn.train.resolve import config_warnings, resolve

        resolved = resolve(cfg)
        print(dump_yaml(resolved), end="")
        for text in config_warnings(resolved):
            print(f"warning: {text}", file=sys.stderr)
        return 0
    train(cfg, args.out, verbose=True)
    return 0


def _check_resume_options(args: argparse.Namespace, overrides: dict[str, Any]) -> None:
    """--resume continues a run with its saved config: only the options that cannot change its result."""
    extra = sorted(flag_of(k) for k in overrides if k not in keys("on_resume"))
    names = ("preset", "config", "out", "set", "print_config")
    given = extra + [f"--{n.replace('_', '-')}" for n in names if getattr(args, n)]
    if given:
        allowed = sorted(
            {BY_KEY[k].flag for k in keys("on_resume") if BY_KEY[k].flag} | {"--checkpoint-every"}
        )
        raise ConfigError(
            f"--resume continues a run with its saved config, so {', '.join(given)} cannot be used with it; "
            f"only {', '.join(allowed[:-1])} and {allowed[-1]} can"
        )
