"""``wrn bench``: training speed beside a plain baseline (train), the paper's Figure 4 (figure4), the loader (data)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    return value


def _run_options(p: argparse.ArgumentParser, *, batch_size: int, steps: int, warmup: int) -> None:
    p.add_argument(
        "--batch-size", type=_int, default=batch_size, help=f"images per step (default {batch_size})"
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--steps", type=_int, default=steps, help=f"timed steps (default {steps})")
    p.add_argument("--warmup", type=_int, default=warmup, help=f"untimed steps first (default {warmup})")
    p.add_argument(
        "--amp",
        default="auto",
        help="auto, off, bf16 or fp16 (CUDA); auto picks what `wrn train` picks (bf16 on CUDA, off on the CPU)",
    )
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels_last memory format (default: as `wrn train`, on for CUDA and the CPU)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model, as `wrn train --compile`")
    p.add_argument(
        "--compile-mode",
        default="default",
        help="torch.compile mode with --compile: default, reduce-overhead (adds CUDA graphs), max-autotune or "
        "max-autotune-no-cudagraphs (default: default)",
    )
    p.add_argument(
        "--rounds",
        type=_int,
        default=1,
        help="alternate the timed steps of the sides (ours/baseline, or the models) in this many chunks, "
        "so that a passing load on a shared machine falls on all alike (default 1: one after the other)",
    )
    p.add_argument(
        "--num-samples",
        type=_int,
        default=None,
        help="random images kept on the device (default 50,000, as CIFAR's training set)",
    )


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure training speed: beside a plain baseline, the paper's Figure 4, the loader alone",
        description=(
            "Time real training steps, the ones `wrn train` takes, on random data kept on the device. "
            "`train` prints ms/step, images/s, TFLOP/s and peak memory (and, with --baseline, the same model "
            "trained the plain way); `figure4` times the networks of the paper's Figure 4 and writes "
            "figure4.json and figure4.png; `data` times the data loader alone. See docs/benchmarks.md."
        ),
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    _register_train(actions)
    _register_figure4(actions)
    _register_data(actions)


def _register_train(actions) -> None:
    from wrn.train.options import add_options, command_keys

    t = actions.add_parser(
        "train",
        help="time the training step of one model (and a plain baseline with --baseline)",
        description=(
            "Time forward, backward and update of training steps of MODEL, each with its batch drawn by the "
            "device-resident loader (flip + crop, normalisation), after warm-up steps. --baseline also times "
            "the same model as common ports train it: eager fp32, NCHW, per-sample torchvision transforms "
            "through a DataLoader, a plain SGD step; and prints ours / baseline."
        ),
    )
    t.add_argument(
        "--model", default="wrn-28-10", help="model name (`wrn models` lists them; default wrn-28-10)"
    )
    _run_options(t, batch_size=128, steps=20, warmup=5)
    t.add_argument(
        "--image-size", type=_int, default=None, help="image side (default the model's, 32 on CIFAR)"
    )
    t.add_argument(
        "--baseline", action="store_true", help="also time the plain baseline, in the same process"
    )
    t.add_argument(
        "--baseline-workers",
        type=_int,
        default=None,
        help="DataLoader worker processes of the baseline (default min(4, CPU cores))",
    )
    add_options(t, command_keys("bench"))  # --sam, --grad-clip, ...: as `wrn train` has them
    t.add_argument(
        "--vs-plain",
        action="store_true",
        help="also time the step without those options, interleaved over --rounds, and print the cost ratio",
    )
    t.add_argument("--json", type=Path, metavar="FILE", help="write every figure to FILE (JSON)")
    t.set_defaults(func=run_train)


def _register_figure4(actions) -> None:
    f = actions.add_parser(
        "figure4",
        help="the paper's Figure 4: ms per minibatch of ResNet-164/1001 and WRN-40-4/16-10/28-10",
        description=(
            "Time forward + backward + update of one minibatch for pre-act ResNet-164 and ResNet-1001 and "
            "WRN-40-4, WRN-16-10 and WRN-28-10, print our ms and speed ratios beside the paper's, and write "
            "DIR/figure4.json and DIR/figure4.png."
        ),
    )
    _run_options(f, batch_size=32, steps=10, warmup=3)
    f.add_argument(
        "--models",
        default=None,
        help="comma-separated subset, e.g. preact-resnet-164,wrn-40-4 (default all five)",
    )
    f.add_argument("--out", type=Path, default=Path("."), metavar="DIR", help="where to write (default .)")
    f.set_defaults(func=run_figure4)


def _register_data(actions) -> None:
    d = actions.add_parser(
        "data",
        help="time the device-resident data loader alone",
        description=(
            "Time passes of the training loader of a data set (its augmentation and normalisation, batches "
            "built on the device). Uses the data set's files when they are under --data-dir, otherwise random "
            "images of its shape (the output says which)."
        ),
    )
    d.add_argument("--dataset", default="cifar10", help="cifar10, cifar100, svhn or digits (default cifar10)")
    d.add_argument("--data-dir", default="data", help="folder holding the data set's files (default ./data)")
    d.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    d.add_argument("--batch-size", type=_int, default=128, help="images per batch (default 128)")
    d.add_argument("--epochs", type=_int, default=3, help="timed passes (default 3)")
    d.add_argument(
        "--augment", default=None, help="none, crop, flip-crop or imagenet (default: the data set's)"
    )
    d.add_argument("--num-samples", type=_int, default=None, help="use only this many images")
    d.add_argument(
        "--policy",
        default="none",
        help="also time a per-image policy (a name of wrn train --policy), or all of them in a table: "
        "microseconds per image in one process and the loader with --workers (default none)",
    )
    d.add_argument(
        "--strong-policy",
        default=None,
        help="also time semi-supervised training's loader of unlabelled images (the weak view on the device, "
        "the strong view in --workers processes) with this strong augmentation (a name of wrn train "
        "--strong-policy, or all): microseconds per image of the strong view in one process, and the loader",
    )
    d.add_argument("--randaugment-n", type=_int, default=2, help="RandAugment's N (default 2)")
    d.add_argument("--randaugment-m", type=_int, default=9, help="RandAugment's M, 0..30 (default 9)")
    d.add_argument(
        "--random-erasing", type=float, default=0.0, help="random erasing's probability (default 0: off)"
    )
    d.add_argument("--workers", type=int, default=4, help="the loader's worker processes (default 4)")
    d.add_argument(
        "--no-verify", dest="verify", action="store_false", help="skip the md5 checks of the files"
    )
    d.add_argument("--json", type=Path, metavar="FILE", help="write the figures to FILE (JSON)")
    d.set_defaults(func=run_data)


def _write_json(path: Path | None, result: dict) -> None:
    if path is None:
        return
    import json

    from wrn.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def _amp(text: str) -> str | None:
    return None if text == "auto" else text


def run_train(args: argparse.Namespace) -> int:
    from wrn.bench import train
    from wrn.bench.common import Progress
    from wrn.train.options import given

    result = train.run(
        args.model,
        batch_size=args.batch_size,
        image_size=args.image_size,
        device=args.device,
        amp=_amp(args.amp),
        channels_last=args.channels_last,
        compile=args.compile,
        compile_mode=args.compile_mode,
        baseline=args.baseline,
        baseline_workers=args.baseline_workers,
        steps=args.steps,
        warmup=args.warmup,
        num_samples=args.num_samples,
        rounds=args.rounds,
        progress=Progress(),
        options=given(args),
        vs_plain=args.vs_plain,
    )
    print(train.format_report(result), flush=True)
    _write_json(args.json, result)
    return 0


def run_figure4(args: argparse.Namespace) -> int:
    from wrn.bench import figure4
    from wrn.bench.common import Progress, readable

    def progress(name: str, entry: dict) -> None:
        print(f"  {name}: {readable(entry['ms'])} ms per minibatch", file=sys.stderr, flush=True)

    result = figure4.run(
        batch_size=args.batch_size,
        device=args.device,
        steps=args.steps,
        warmup=args.warmup,
        models=args.models,
        amp=_amp(args.amp),
        channels_last=args.channels_last,
        compile=args.compile,
        compile_mode=args.compile_mode,
        num_samples=args.num_samples,
        rounds=args.rounds,
        progress=progress,
        step_progress=Progress(),
    )
    print(figure4.format_table(result), flush=True)
    json_path, png_path = figure4.write(result, args.out)
    print(f"wrote {json_path} and {png_path}")
    return 0


def run_data(args: argparse.Namespace) -> int:
    from wrn.bench import data

    result = data.run(
        args.dataset,
        data_dir=args.data_dir,
        device=args.device,
        batch_size=args.batch_size,
        epochs=args.epochs,
        augment=args.augment,
        num_samples=args.num_samples,
        verify=args.verify,
        policy=args.policy,
        randaugment_n=args.randaugment_n,
        randaugment_m=args.randaugment_m,
        random_erasing=args.random_erasing,
        workers=args.workers,
        strong_policy=args.strong_policy,
    )
    print(data.format_report(result), flush=True)
    _write_json(args.json, result)
    return 0
