"""Precision and memory format of one model's training step, side by side in one run (ratios, not absolutes).

    python benchmarks/precision.py [--model wrn-16-4] [--batch-size 128] [--device cpu] [--steps 8]
        [--warmup 3] [--rounds 4] [--configs off:nchw,off:cl,bf16:nchw,bf16:cl] [--json FILE]

Each config is ``AMP:FORMAT[:compile[=MODE]]`` with AMP off, bf16 or fp16 and FORMAT nchw or cl
(channels_last); ``:compile`` adds torch.compile. Every config times the step ``wrn train`` takes (DeviceLoader
batch + TrainStep, :mod:`wrn.bench.train`); all are built and warmed up first, then their timed steps alternate
in ``--rounds`` chunks so that a load that comes and goes on a shared machine falls on all alike. Prints each
config's median ms/step and images/s, and its speed relative to the first config.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parse_config(text: str) -> dict:
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[0] not in ("off", "bf16", "fp16") or parts[1] not in ("nchw", "cl"):
        raise SystemExit(
            f"config {text!r} is not AMP:FORMAT[:compile[=MODE]], e.g. bf16:cl or off:nchw:compile"
        )
    compile_mode = None
    if len(parts) == 3:
        word, _, mode = parts[2].partition("=")
        if word != "compile":
            raise SystemExit(f"config {text!r}: the third part must be compile or compile=MODE")
        compile_mode = mode or "default"
    return {"label": text, "amp": parts[0], "channels_last": parts[1] == "cl", "compile_mode": compile_mode}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="wrn-16-4")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--configs", default="off:nchw,off:cl,bf16:nchw,bf16:cl")
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    from wrn.bench.common import (
        default_num_samples,
        machine_info,
        prepare_device,
        random_images,
        resolve_settings,
        summarize,
    )
    from wrn.bench.train import maker, measure_sides, model_flops, ours_runner
    from wrn.train.precision import cpu_has_native_bf16

    configs = [parse_config(c.strip()) for c in args.configs.split(",") if c.strip()]
    settings = [
        resolve_settings(
            args.model,
            device=args.device,
            amp=c["amp"],
            channels_last=c["channels_last"],
            compile=c["compile_mode"] is not None,
            compile_mode=c["compile_mode"] or "default",
            batch_size=args.batch_size,
        )
        for c in configs
    ]
    device = settings[0].device
    prepare_device(device)
    info = model_flops(args.model, 32)
    x, y = random_images(default_num_samples(args.batch_size, 32), 3, 32, info["num_classes"])
    m = machine_info(device)
    native = cpu_has_native_bf16() if device.type == "cpu" else None
    print(
        f"{args.model}, batch {args.batch_size}, on {m['device']} ({m['device_name']}, {m['threads']} threads), "
        f"torch {m['torch']}; native CPU bf16: {native}; {args.steps} timed steps per config after "
        f"{args.warmup} warm-up, alternating in {args.rounds} rounds",
        flush=True,
    )
    makers = [
        maker(ours_runner, device, args.model, s, x, y, args.batch_size, info["num_classes"])
        for s in settings
    ]
    sides = measure_sides(makers, args.warmup, args.steps, args.rounds)
    rows = []
    for c, side in zip(configs, sides, strict=True):
        rows.append({**c, **summarize(side["step_ms"], args.batch_size, info["train_flops_per_image"])})
    first = rows[0]["images_per_s"]
    print(f"\n{'config':<24} {'ms/step':>9} {'min - max':>19} {'images/s':>9} {'vs first':>9}")
    for r in rows:
        r["relative"] = r["images_per_s"] / first
        print(
            f"{r['label']:<24} {r['ms']:>9.1f} {r['ms_min']:>9.1f} - {r['ms_max']:<7.1f} "
            f"{r['images_per_s']:>9.1f} {r['relative']:>8.2f}x"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"machine": m, "native_cpu_bf16": native, "model": args.model, "rows": rows}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
