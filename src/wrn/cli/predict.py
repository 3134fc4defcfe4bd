"""``wrn predict RUN IMAGE...``: the most likely classes of image files, with names and probabilities."""

from __future__ import annotations

import argparse

from wrn.data.registry import NORMALIZATION_CHOICES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify image files with a trained model",
        description="Print the top-k classes (names and probabilities) of each image file, read as the run's "
        "test transform reads its data: the model's channels, its training size (short side resized, centre "
        "cropped) and its normalisation, all from the run's model.json.",
    )
    p.add_argument(
        "model", metavar="RUN_DIR", help="a run directory (or model directory) written by `wrn train`"
    )
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--top-k", type=int, default=5, help="classes to show per image (default 5)")
    p.add_argument("--image-size", type=int, default=None, help="input size, if not the training size")
    p.add_argument(
        "--normalization",
        default=None,
        help="the input's normalisation, where model.json does not record it or records another: "
        + ", ".join(n for n in NORMALIZATION_CHOICES if n != "zca")
        + " (pixels: pixels / 255, for models that normalise inside their forward)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from wrn.predict import predict

    results = predict(
        args.model,
        args.images,
        top_k=args.top_k,
        device=args.device,
        image_size=args.image_size,
        normalization=args.normalization,
    )
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
        return 0
    for r in results:
        shown = "  ".join(
            f"{name if name is not None else index} {100 * prob:.1f}%" for index, name, prob in r.top
        )
        print(f"{r.image}: {shown}")
    return 0
