"""``wrn train``: train a network from a preset and/or a YAML config, with command-line overrides."""

from __future__ import annotations

import argparse
import re
import signal
import sys
from typing import Any

import yaml

from wrn.errors import ConfigError

# --flag -> dotted config key. Values are validated by the config, not by argparse, so that every bad value
# gets the same one-sentence message.
OVERRIDES: dict[str, str] = {
    "model": "model.name",
    "dropout": "model.dropout",
    "dataset": "dataset.name",
    "data_dir": "dataset.root",
    "image_size": "dataset.image_size",
    "augment": "dataset.augment",
    "normalization": "dataset.normalization",
    "workers": "dataset.workers",
    "download": "dataset.download",
    "verify": "dataset.verify",
    "epochs": "schedule.epochs",
    "schedule": "schedule.name",
    "milestones": "schedule.milestones",
    "gamma": "schedule.gamma",
    "reset_momentum": "schedule.reset_momentum",
    "batch_size": "optim.batch_size",
    "eval_batch_size": "optim.eval_batch_size",
    "lr": "optim.lr",
    "momentum": "optim.momentum",
    "weight_decay": "optim.weight_decay",
    "label_smoothing": "optim.label_smoothing",
    "seed": "run.seed",
    "device": "run.device",
    "amp": "run.amp",
    "compile": "run.compile",
    "compile_mode": "run.compile_mode",
    "channels_last": "run.channels_last",
    "sync_bn": "run.sync_bn",
    "deterministic": "run.deterministic",
}
# What may change when continuing a run (anything else would break the exact resume).
RESUME_OPTIONS = {"epochs"}


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


def _yaml_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _milestones(text: str) -> list[Any]:
    return [_yaml_value(p) for p in text.replace(",", " ").split()]


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

    m = p.add_argument_group("model and data")
    m.add_argument("--model", help="model name, e.g. wrn-28-10 (`wrn models` lists them)")
    m.add_argument("--dropout", type=_yaml_value, help="dropout rate in [0, 1) between the convs of a block")
    m.add_argument("--dataset", help="cifar10, cifar100, svhn, imagenet, imagefolder or digits")
    m.add_argument("--data-dir", help="folder that holds (or will hold) the data set (default ./data)")
    m.add_argument("--download", action="store_true", default=None, help="fetch a missing data set")
    m.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        default=None,
        help="skip the md5 checks of the data files (re-packed copies only; still safely unpickled)",
    )
    m.add_argument("--image-size", type=_yaml_value, help="training crop side (ImageNet / image folders)")
    m.add_argument("--augment", help="none, crop, flip-crop or imagenet (default: the data set's recipe)")
    m.add_argument("--normalization", help="cifar10, cifar100, svhn, digits, imagenet, zca or none")
    m.add_argument("--workers", type=_yaml_value, help="data loading processes (image folders)")

    o = p.add_argument_group("optimization")
    o.add_argument("--epochs", type=_yaml_value, help="number of epochs")
    o.add_argument("--batch-size", type=_yaml_value, help="global batch size (split over processes)")
    o.add_argument("--eval-batch-size", type=_yaml_value, help="batch size of evaluation")
    o.add_argument("--lr", type=_yaml_value, help="initial learning rate")
    o.add_argument("--momentum", type=_yaml_value, help="SGD momentum (Nesterov)")
    o.add_argument("--weight-decay", type=_yaml_value, help="L2 weight decay on all parameters")
    o.add_argument("--label-smoothing", type=_yaml_value, help="label smoothing of the training loss")
    o.add_argument("--schedule", help="multistep (the paper's) or cosine")
    o.add_argument("--milestones", type=_milestones, help="1-indexed epochs of the lr drops, e.g. 60,120,160")
    o.add_argument("--gamma", type=_yaml_value, help="lr factor at each milestone (0.2 in the paper)")
    o.add_argument(
        "--reset-momentum",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="clear momentum buffers at each lr drop, as the authors' code (default on)",
    )

    r = p.add_argument_group("run")
    r.add_argument("--seed", type=_yaml_value, help="random seed")
    r.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    r.add_argument("--amp", help="bf16, fp16 (CUDA only; uses a grad scaler) or off (default: bf16 on CUDA)")
    r.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile")
    r.add_argument(
        "--compile-mode",
        help="torch.compile's mode: default, reduce-overhead (CUDA graphs), max-autotune, "
        "max-autotune-no-cudagraphs",
    )
    r.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels_last memory format (default on CUDA)",
    )
    r.add_argument(
        "--sync-bn", action=argparse.BooleanOptionalAction, default=None, help="SyncBatchNorm (DDP)"
    )
    r.add_argument(
        "--deterministic", action=argparse.BooleanOptionalAction, default=None, help="deterministic kernels"
    )
    r.add_argument(
        "--checkpoint-every",
        metavar="EVERY",
        help="mid-epoch checkpoints: minutes (10, 10m), steps (500steps) or off; always at each epoch end",
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    r.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (what would run, as config.yaml) and start nothing",
    )
    p.set_defaults(func=run)


def collect_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The dotted-key overrides of the options and of ``--set``; one key given both ways is refused."""
    out: dict[str, Any] = {}
    by_option: dict[str, str] = {}
    for attr, key in OVERRIDES.items():
        value = getattr(args, attr, None)
        if value is not None:
            out[key] = value
            by_option[key] = "--" + attr.replace("_", "-")
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} needs the form KEY=VALUE, e.g. --set optim.lr=0.05")
        key, value = (part.strip() for part in item.split("=", 1))
        if key in by_option:
            raise ConfigError(
                f"--set {key}=... and {by_option[key]} both set {key}; give it once (either is fine)"
            )
        out[key] = _milestones(value) if key == "schedule.milestones" else _yaml_value(value)
    return out


def run(args: argparse.Namespace) -> int:
    from wrn.train.config import build_config
    from wrn.train.loop import Interrupted, train

    overrides = collect_overrides(args)
    every = parse_checkpoint_every(args.checkpoint_every) if args.checkpoint_every is not None else None
    progress = False if args.no_progress else None
    try:
        if args.resume is not None:
            extra = sorted(
                "--" + a.replace("_", "-")
                for a, k in OVERRIDES.items()
                if k in overrides and a not in RESUME_OPTIONS
            )
            if args.preset or args.config or args.out or args.set or args.print_config or extra:
                names = ("preset", "config", "out", "set", "print_config")
                given = extra + [f"--{n.replace('_', '-')}" for n in names if getattr(args, n)]
                raise ConfigError(
                    f"--resume continues a run with its saved config, so {', '.join(given)} cannot be used with it; "
                    "only --epochs, --checkpoint-every and --no-progress can"
                )
            train(
                None,
                resume=args.resume,
                epochs=overrides.get("schedule.epochs"),
                checkpoint_every=every,
                progress=progress,
                verbose=True,
            )
            return 0
        if (
            args.preset is None
            and args.config is None
            and not {"model.name", "dataset.name"} <= set(overrides)
        ):
            raise ConfigError(
                "say what to train with --preset NAME (see 'wrn presets'), --config FILE.yaml, "
                "or both --model and --dataset"
            )
        cfg = build_config(args.preset, args.config, overrides)
        if args.print_config:
            from wrn.train import recipe
            from wrn.train.config import dump_yaml, resolve

            resolved = resolve(cfg)
            print(dump_yaml(resolved), end="")
            for text in recipe.warnings_for(resolved.schedule):
                print(f"warning: {text}", file=sys.stderr)
            return 0
        train(cfg, args.out, checkpoint_every=every, progress=progress, verbose=True)
        return 0
    except Interrupted as exc:
        print(f"wrn train: {exc}", file=sys.stderr)
        return 128 + int(exc.signum) if exc.signum in (signal.SIGINT, signal.SIGTERM) else 1
