"""``wrn convert {official,xternalz} SRC OUT_DIR``: import a checkpoint written by other code."""

from __future__ import annotations

import argparse
import sys

FORMATS = {
    "official": "the authors' code: the CIFAR port's model.pt7 (or its params dict), or the BN-folded ImageNet "
    "WRN-50-2 export",
    "xternalz": "the widely copied PyTorch WideResNet port (wideresnet.py: conv1, block{1,2,3}.layer.{i}.*, "
    "bn1, fc), as in TRADES, RobustBench and many FixMatch ports: a state dict, bare or under "
    "'state_dict'/'model', with or without DataParallel's 'module.' prefix",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="import a checkpoint of the authors' code or of the common WideResNet port",
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
    p.add_argument("out_dir", metavar="OUT_DIR", help="directory to write the converted model to")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import warnings

    from wrn.models.complexity import count_parameters
    from wrn.models.io import save_model
    from wrn.models.xternalz import ConversionWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConversionWarning)
        if args.source == "xternalz":
            from wrn.models.xternalz import load_xternalz

            model = load_xternalz(args.src)
        else:
            from wrn.models.official import load_official

            model = load_official(args.src)
    for w in caught:
        if issubclass(w.category, ConversionWarning):
            print(f"note: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    save_model(model, args.out_dir, metadata={"converted_from": str(args.src), "format": args.source})
    print(
        f"{args.src} -> {args.out_dir}: {model.config['name']}, {model.config['num_classes']} classes, "
        f"{count_parameters(model):,} parameters"
    )
    return 0
