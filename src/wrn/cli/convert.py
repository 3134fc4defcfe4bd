"""``wrn convert FORMAT SRC OUT_DIR``: import a checkpoint written by other code (docs/models.md has the table)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from wrn.models.checkpoints import FORMATS, OPTIONS, formats_taking, help_text
from wrn.train.rundir import CHECKPOINT, CONFIG, METRICS

# files that only `wrn train` writes: a directory holding one is a run, never written into by convert
RUN_FILES = (CONFIG, CHECKPOINT, METRICS)  # what makes a folder a run directory


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="import a checkpoint of other code: " + ", ".join(FORMATS),
        description="Convert a checkpoint into OUT_DIR/model.safetensors + model.json, which wrn.load_model, "
        "`wrn eval`, `wrn predict` and `wrn export` read. Formats (and the options each takes): "
        + help_text()
        + ". Depth, width and classes are read off the tensors. Files are read once, with "
        "torch.load(weights_only=True); a file that another format claims is refused, naming that format.",
    )
    p.add_argument(
        "source", metavar="FORMAT", choices=tuple(FORMATS), help=f"checkpoint format: {', '.join(FORMATS)}"
    )
    p.add_argument("src", metavar="SRC", help="the checkpoint file (.pt7 / .pt / .pth / .tar)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="a new directory to write the converted model to")
    for option in OPTIONS.values():
        p.add_argument(
            f"--{option.name}",
            choices=option.choices,
            type=float if option.choices is None else str,
            default=None,
            help=f"{', '.join(formats_taking(option.name))}: {option.help}",
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


def run(args: argparse.Namespace) -> int:
    import warnings

    from wrn.models import checkpoints
    from wrn.models.checkpoints import ConversionWarning
    from wrn.models.complexity import count_parameters
    from wrn.models.io import save_model

    options = {name: getattr(args, name) for name in OPTIONS}
    checkpoints.check_options(args.source, options)
    check_paths(Path(args.src), Path(args.out_dir), args.force)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConversionWarning)
        model = checkpoints.load(args.source, args.src, **options)
    for w in caught:
        if issubclass(w.category, ConversionWarning):
            print(f"note: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    save_model(model, args.out_dir, metadata={"converted_from": str(args.src)})
    print(
        f"{args.src} -> {args.out_dir}: {model.config['name']}, {model.config['num_classes']} classes, "
        f"{count_parameters(model):,} parameters (format {args.source})"
    )
    record = (getattr(model, "wrn_metadata", None) or {}).get("input")
    if record:
        print(
            f"input recorded for eval, predict and export: {record['size']}x{record['size']}, normalisation "
            f"{record['normalization']} (their --normalization overrides it)"
        )
    else:
        print(
            "no input recorded: give `wrn predict` --normalization and --image-size, `wrn eval` --normalization"
        )
    return 0
