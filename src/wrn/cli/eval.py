"""``wrn eval``: loss, accuracy and error of a trained model on a test set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wrn.data.registry import NORMALIZATION_CHOICES


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="test loss, accuracy and error of a run or model directory",
        description=(
            "Evaluate a run directory (written by `wrn train`; its final model, else its checkpoint) or a model "
            "directory (model.safetensors + model.json) on a test set. The data settings come from the run's "
            "config.yaml or the model's metadata; the options override them."
        ),
    )
    p.add_argument("path", metavar="RUN_DIR_OR_MODEL_DIR")
    p.add_argument("--dataset", help="cifar10, cifar100, svhn, imagenet, imagefolder or digits")
    p.add_argument("--data-dir", help="folder that holds the data set")
    p.add_argument("--download", action="store_true", help="fetch a missing data set (CIFAR, SVHN)")
    p.add_argument(
        "--split", help="the split to evaluate on (default: the test split; e.g. train, or SVHN's extra)"
    )
    p.add_argument("--normalization", help=", ".join(NORMALIZATION_CHOICES))
    p.add_argument("--image-size", type=int, help="evaluation crop side (ImageNet / image folders)")
    p.add_argument("--batch-size", type=int, default=256, help="evaluation batch size (default 256)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--amp", default="off", help="bf16, fp16 or off (default off: full precision)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wrn.train.evaluate import evaluate_dir

    result = evaluate_dir(
        Path(args.path),
        dataset=args.dataset,
        data_dir=args.data_dir,
        normalization=args.normalization,
        image_size=args.image_size,
        batch_size=args.batch_size,
        device=args.device,
        amp=args.amp,
        download=args.download,
        split=args.split,
    )
    if args.json:
        print(json.dumps(result))
    else:
        top5 = f"  top-5 error {result['top5_error']:.2f}%" if "top5_error" in result else ""
        # the weights of an unfinished run come from its checkpoint: say which one
        source = "" if result["source"] == "model" else f" [{result['source']} of an unfinished run]"
        print(
            f"{result['model']}{source} on {result['dataset']} {result['split']} ({result['n']} images): "
            f"loss {result['loss']:.4f}  accuracy {result['acc']:.2f}%  error {result['error']:.2f}%{top5}"
        )
    return 0
