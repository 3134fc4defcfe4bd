"""``wrn export (RUN_DIR | NAME) OUT.{onnx,pt2,ts}``: a model for inference."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX, torch.export (.pt2) or TorchScript (.ts)",
        description="Export a run or model directory (model.safetensors + model.json) or a registered name "
        "(freshly initialised weights). The format follows OUT's extension: .onnx, .pt2 (torch.export) or .ts "
        "(TorchScript). Batch, height and width are dynamic; the example input has the channels and size the "
        "model was trained on, and the file carries the run's preprocessing record (normalisation, classes).",
    )
    p.add_argument(
        "model", metavar="RUN_DIR_OR_NAME", help="a run/model directory or a name such as wrn-28-10"
    )
    p.add_argument("out", metavar="OUT", help="output file: .onnx, .pt2 or .ts")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("--num-classes", type=int, default=None, help="for a model name: classifier outputs")
    p.add_argument(
        "--image-size", type=int, default=None, help="example input size (default: the training size)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wrn.errors import ConfigError
    from wrn.models.export import FORMATS, format_for

    fmt = format_for(args.out)
    out = Path(args.out)
    if out.exists() and not args.force:
        raise ConfigError(f"{out} already exists; pass --force to replace it, or choose another OUT")
    path = Path(args.model)
    metadata = None
    if path.is_dir():
        if args.num_classes is not None:
            raise ConfigError(
                f"--num-classes applies to a model name only; {path} is a trained model with its own classes"
            )
        from wrn.models.io import load_model
        from wrn.predict import read_metadata

        model = load_model(path)
        metadata = {k: v for k, v in read_metadata(path).items() if k in ("input", "classes", "dataset")}
    elif path.exists() or "/" in args.model or args.model.startswith("."):
        raise ConfigError(
            f"{args.model} is not a run or model directory (it "
            + ("is a file" if path.exists() else "does not exist")
            + "); pass a directory written by `wrn train` or a model name such as wrn-28-10"
        )
    else:
        from wrn.models.registry import create_model

        model = create_model(args.model, num_classes=args.num_classes)
    from wrn.models.export import export_model

    written = export_model(model, out, fmt, image_size=args.image_size, metadata=metadata)
    names = {v: k for k, v in FORMATS.items()}
    print(f"{model.config.get('name', args.model)} -> {written} ({fmt}, {names[fmt]})")
    return 0
