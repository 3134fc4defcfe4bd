"""``wrn export (NAME | DIR) --format onnx|torchscript OUT``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX or TorchScript",
        description="Export a model directory (model.safetensors + model.json, e.g. a training run) or a "
        "registered name (freshly initialised weights) to ONNX, with a dynamic batch dimension, or TorchScript.",
    )
    p.add_argument("model", help="a model directory or a model name such as wrn-28-10")
    p.add_argument("out", help="output file")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    p.add_argument("--num-classes", type=int, default=None, help="for a model name: classifier outputs")
    p.add_argument(
        "--image-size", type=int, default=None, help="example input size (default: native 32 or 224)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wrn.models.export import export_model
    from wrn.models.io import load_model
    from wrn.models.registry import create_model

    path = Path(args.model)
    if path.is_dir():
        model = load_model(path)
    else:
        model = create_model(args.model, num_classes=args.num_classes)
    out = export_model(model, args.out, args.format, image_size=args.image_size)
    print(f"{model.config.get('name', args.model)} -> {out} ({args.format})")
    return 0
