"""``wrn convert official SRC OUT_DIR``: import a checkpoint of the authors' code."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="import a checkpoint of the authors' code",
        description="Convert the authors' checkpoint (the CIFAR port's model.pt7 or its params dict, or the "
        "BN-folded ImageNet WRN-50-2 export) into OUT_DIR/model.safetensors + model.json. Files are read with "
        "torch.load(weights_only=True).",
    )
    p.add_argument("source", choices=("official",), help="checkpoint format")
    p.add_argument("src", help="the checkpoint file (.pt7 / .pt / .pth)")
    p.add_argument("out_dir", help="directory to write the converted model to")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wrn.models.complexity import count_parameters
    from wrn.models.io import save_model
    from wrn.models.official import load_official

    model = load_official(args.src)
    save_model(model, args.out_dir, metadata={"converted_from": str(args.src)})
    print(
        f"{args.src} -> {args.out_dir}: {model.config['name']}, {model.config['num_classes']} classes, "
        f"{count_parameters(model):,} parameters"
    )
    return 0
