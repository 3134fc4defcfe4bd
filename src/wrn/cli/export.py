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


def _check_onnx_extra() -> None:
    """ONNX export needs the packages of the ``onnx`` extra; say which is missing and how to install it."""
    from wrn.errors import ConfigError

    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            raise ConfigError(
                f"exporting to ONNX needs the package {module}, which is not installed; install the onnx "
                "extra with pip install 'wrn[onnx]', or export to .pt2 or .ts"
            ) from None


def run(args: argparse.Namespace) -> int:
    from wrn.errors import ConfigError
    from wrn.models.export import FORMATS, format_for
    from wrn.paths import check_length, check_new_output_file

    out = check_new_output_file(args.out, force=args.force, what="OUT")
    fmt = format_for(args.out)
    if fmt == "onnx":
        _check_onnx_extra()
    path = Path(args.model)
    metadata = None
    if check_length(path, "RUN_DIR").exists() or "/" in args.model or args.model.startswith("."):
        from wrn.models.io import load_model
        from wrn.predict import model_dir, read_metadata

        model_dir(
            path,
            "RUN_DIR",
            "it is not a run or model directory: pass a directory written by `wrn train`, or a model name "
            "such as wrn-28-10",
        )
        if args.num_classes is not None:
            raise ConfigError(
                f"--num-classes applies to a model name only; {path} is a trained model with its own classes"
            )

        metadata = {k: v for k, v in read_metadata(path).items() if k in ("input", "classes", "dataset")}
        model = load_model(path)
    else:
        from wrn.models.registry import create_model

        model = create_model(args.model, num_classes=args.num_classes)
    from wrn.models.export import export_model

    written = export_model(model, out, fmt, image_size=args.image_size, metadata=metadata)
    names = {v: k for k, v in FORMATS.items()}
    print(f"{model.config.get('name', args.model)} -> {written} ({fmt}, {names[fmt]})")
    return 0
