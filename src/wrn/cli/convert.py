"""``wrn convert FORMAT SRC OUT_DIR``: import a checkpoint written by other code (docs/models.md has the table)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from wrn.train.rundir import CHECKPOINT, CONFIG, METRICS

FORMATS = {
    "official": "the authors' code: the CIFAR port's model.pt7 (or its params dict), or the BN-folded ImageNet "
    "WRN-50-2 export",
    "xternalz": "the widely copied PyTorch WideResNet port (wideresnet.py: conv1, block{1,2,3}.layer.{i}.*, "
    "bn1, fc), as in TRADES and RobustBench: a state dict, bare or under 'state_dict'/'model', with or without "
    "DataParallel's 'module.' prefix",
    "fixmatch": "FixMatch's WRN (kekmodel/FixMatch-pytorch and its copies): xternalz's names, another network; "
    "its train.py checkpoint (EMA weights by default) or a state dict",
    "usb": "USB's WRN (microsoft/Semi-supervised-learning): {'model', 'ema_model', ...}, a 'classifier' head",
    "dm": "DeepMind's WRN (RobustBench's DMWideResNet: init_conv, layer.G.block.I.*, logits), swish by default",
    "robustness": "DM-Improves-AT / adversarial_robustness_pytorch: {'model_state_dict', "
    "'unaveraged_model_state_dict'} with module.0./module.1. prefixes",
}
# files that only `wrn train` writes: a directory holding one is a run, never written into by convert
RUN_FILES = (CONFIG, CHECKPOINT, METRICS)  # what makes a folder a run directory


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="import a checkpoint of the authors' code, the common WideResNet port, FixMatch, USB or DeepMind",
        description="Convert a checkpoint into OUT_DIR/model.safetensors + model.json, which wrn.load_model "
        "and `wrn eval` read. Formats: "
        + "; ".join(f"{k}: {v}" for k, v in FORMATS.items())
        + ". Depth, width and classes are read off the tensors. Files are read with "
        "torch.load(weights_only=True).",
    )
    p.add_argument(
        "source", metavar="FORMAT", choices=tuple(FORMATS), help=f"checkpoint format: {', '.join(FORMATS)}"
    )
    p.add_argument("src", metavar="SRC", help="the checkpoint file (.pt7 / .pt / .pth / .tar)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="a new directory to write the converted model to")
    p.add_argument(
        "--weights",
        choices=("ema", "model"),
        default=None,
        help="for files holding both: the averaged (EMA) weights their project reports (default) or the trained ones",
    )
    p.add_argument(
        "--act",
        choices=("silu", "relu"),
        default=None,
        help="dm/robustness: the activation of DeepMind's WRN, which its files do not hold (default: silu = "
        "swish, with a note)",
    )
    p.add_argument(
        "--force", action="store_true", help="replace the model files of an existing OUT_DIR (never a run's)"
    )
    p.set_defaults(func=run)


def check_paths(src: Path, out: Path, force: bool) -> None:
    """Every check of SRC and OUT_DIR, before anything is read or written."""
    from wrn.errors import ConfigError

    if src.is_dir():
        raise ConfigError(f"{src} is a directory; give the checkpoint file itself (.pt7, .pt, .pth or .tar)")
    if not src.exists():
        raise ConfigError(f"{src} does not exist; give the path of the checkpoint file to convert")
    for parent in (out, *out.parents):
        if parent.exists() and not parent.is_dir():
            raise ConfigError(
                f"{parent} is a file, not a directory; give OUT_DIR as a new directory to write the model into"
            )
        if parent.exists():
            if parent != out and not os.access(parent, os.W_OK | os.X_OK):
                raise ConfigError(
                    f"{parent} is not writable; choose an OUT_DIR in a directory you can write to"
                )
            break
    if out.is_dir():
        run_files = [name for name in RUN_FILES if (out / name).exists()]
        if run_files:
            raise ConfigError(
                f"{out} is a run directory of `wrn train` (it holds {run_files[0]}); convert never writes into "
                "a run: choose a new OUT_DIR"
            )
        if any(out.iterdir()) and not force:
            raise ConfigError(
                f"{out} already exists; pass --force to replace its model files, or choose another OUT_DIR"
            )
        if not os.access(out, os.W_OK | os.X_OK):
            raise ConfigError(f"{out} is not writable; choose another OUT_DIR")


def load(fmt: str, src: str, weights: str | None, act: str):
    """The model a checkpoint of format ``fmt`` holds."""
    from wrn.errors import ConfigError
    from wrn.models import imports

    if weights is not None and fmt in ("official", "xternalz", "dm"):
        raise ConfigError(
            f"--weights applies to files holding two sets of weights (fixmatch, usb, robustness), not {fmt}"
        )
    if act is not None and fmt not in ("dm", "robustness"):
        raise ConfigError(
            f"--act applies to DeepMind's WRN (dm, robustness), whose files do not hold it, not {fmt}"
        )
    if fmt == "xternalz":
        from wrn.models.xternalz import load_xternalz

        return load_xternalz(src)
    if fmt == "official":
        from wrn.models.official import load_official

        return load_official(src)
    if fmt == "fixmatch":
        return imports.load_fixmatch(src, weights=weights)
    if fmt == "usb":
        return imports.load_usb(src, weights=weights)
    if fmt == "dm":
        return imports.load_dm(src, act=act)
    return imports.load_robustness(src, weights=weights, act=act)


def run(args: argparse.Namespace) -> int:
    import warnings

    from wrn.models.complexity import count_parameters
    from wrn.models.io import save_model
    from wrn.models.xternalz import ConversionWarning

    check_paths(Path(args.src), Path(args.out_dir), args.force)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConversionWarning)
        model = load(args.source, args.src, args.weights, args.act)
    for w in caught:
        if issubclass(w.category, ConversionWarning):
            print(f"note: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    save_model(model, args.out_dir, metadata={"converted_from": str(args.src), "format": args.source})
    print(
        f"{args.src} -> {args.out_dir}: {model.config['name']}, {model.config['num_classes']} classes, "
        f"{count_parameters(model):,} parameters (format {args.source})"
    )
    return 0
