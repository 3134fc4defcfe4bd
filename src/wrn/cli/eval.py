"""``wrn eval``: loss, accuracy and error of a trained model on a test set; with ``--attack``, its clean and
robust accuracy under PGD or AutoAttack (:mod:`wrn.train.robust_eval`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wrn.data.registry import NORMALIZATION_CHOICES
from wrn.errors import ConfigError


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
        "--no-verify",
        action="store_true",
        help="skip the md5 checks of the data set's files (re-packed copies)",
    )
    p.add_argument(
        "--split", help="the split to evaluate on (default: the test split; e.g. train, or SVHN's extra)"
    )
    p.add_argument("--normalization", help=", ".join(NORMALIZATION_CHOICES))
    p.add_argument("--image-size", type=int, help="evaluation crop side (ImageNet / image folders)")
    p.add_argument("--batch-size", type=int, default=256, help="evaluation batch size (default 256)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--amp", default="off", help="bf16, fp16 or off (default off: full precision)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    robust = p.add_argument_group(
        "robustness",
        "clean and robust accuracy under an attack on pixels in [0, 1] (the model's normalisation inside the "
        "forward, as RobustBench evaluates); the record goes to RUN/robust-ATTACK-NORM-EPS.json",
    )
    robust.add_argument("--attack", help="pgd, or autoattack (the authors' standard version)")
    robust.add_argument("--eps", help="the radius on pixels in [0, 1], e.g. 8/255 or 0.031")
    # (the defaults are AttackSpec's: an option left out is None here)
    robust.add_argument("--norm", help="linf (default) or l2")
    robust.add_argument("--steps", type=int, help="PGD's steps (default 20)")
    robust.add_argument("--step-size", help="PGD's step (default 2.5 x eps / steps); 2/255 is accepted")
    robust.add_argument("--restarts", type=int, help="PGD's random starts per image (default 1)")
    robust.add_argument("--n", type=int, help="attack the first N test images (default: all)")
    robust.add_argument("--seed", type=int, help="seed of the attack's random draws (default 0)")
    robust.add_argument("--out", help="where to write the record (default: in the run directory)")
    robust.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _robust_flags(args: argparse.Namespace) -> list[str]:
    """The robustness options given: they need --attack."""
    names = ("eps", "norm", "steps", "step_size", "restarts", "n", "seed", "out", "no_progress")
    return [f"--{k.replace('_', '-')}" for k in names if getattr(args, k) not in (None, False)]


def run(args: argparse.Namespace) -> int:
    if args.attack is not None:
        return run_attack(args)
    given = _robust_flags(args)
    if given:
        raise ConfigError(f"{', '.join(given)} set an attack; add --attack pgd or --attack autoattack")
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
        verify=not args.no_verify,
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


def run_attack(args: argparse.Namespace) -> int:
    from wrn.train.robust_eval import AttackSpec, attack_dir

    if args.eps is None:
        raise ConfigError("--attack needs the radius: add --eps, e.g. --eps 8/255 (L-inf) or --eps 0.5 (L2)")
    if args.amp != "off" or args.normalization is not None or args.image_size is not None:
        raise ConfigError(
            "--amp, --normalization and --image-size set the clean evaluation; an attack runs in float32 on "
            "the model's own normalisation and size: leave them out with --attack"
        )
    given = {
        k: getattr(args, k) for k in ("norm", "steps", "restarts", "seed") if getattr(args, k) is not None
    }
    if args.step_size is not None:
        given["step_size"] = _number(args.step_size, "--step-size")
    spec = AttackSpec(args.attack, _number(args.eps, "--eps"), **given)
    result = attack_dir(
        args.path,
        spec,
        n=args.n,
        out=args.out,
        dataset=args.dataset,
        data_dir=args.data_dir,
        split=args.split,
        batch_size=args.batch_size,
        device=args.device,
        download=args.download,
        verify=not args.no_verify,
        progress=False if args.no_progress else None,
    )
    if args.json:
        print(json.dumps(result))
    else:
        source = "" if result["source"] == "model" else f" [{result['source']} of an unfinished run]"
        print(
            f"{result['model']}{source} on {result['dataset']} {result['split']} ({result['n']} images): "
            f"clean accuracy {result['clean_acc']:.2f}%  robust accuracy {result['robust_acc']:.2f}% under "
            f"{spec.attack} {spec.norm} eps {spec.eps_text()} ({result['time']:.0f} s); record: {result['record']}"
        )
    return 0


def _number(text: str, flag: str) -> float:
    from wrn.train.fields import fraction

    value = fraction(text)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag} {text!r} is not a number; give one such as 8/255 or 0.031") from None
