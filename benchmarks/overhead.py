"""The overhead of ``wrn train`` over the bare training step: one epoch of ``wrn train`` versus ``wrn bench train``.

    python benchmarks/overhead.py [--model wrn-16-4] [--batch-size 128] [--images 2048] [--device cpu]

Everything runs in this one process, on the same configuration (model, batch, amp, channels_last, threads
as ``wrn train`` resolves them), in this order:

1. ``bench``: ``wrn bench train``'s measurement (:func:`wrn.bench.train.measure_ours`): the same number of
   steps as the epoch, each "DeviceLoader batch + TrainStep", after warm-up steps;
2. ``step only``: TrainStep on one fixed batch (no loader), the same number of steps, to show the data cost;
3. ``wrn train``: one epoch of :func:`wrn.train.train` on random CIFAR-10 files written in the real format
   (``--images`` training and ``--test-images`` test images), with its progress output, metrics.jsonl and
   TensorBoard logging, and checkpoints as configured by default;
4. ``bench`` again, so that drift of a shared machine shows (the ratio uses the mean of 1 and 4).

It prints two answers. (a) Inside the epoch itself: the time ``wrn train`` spent outside its TrainStep calls
(next batch, the loop's accounting, progress, checkpoint writes, logging) as a share of the TrainStep calls;
this needs no second measurement, so the drift of a shared machine between measurements does not enter it.
(b) The headline ratio of the issue, the epoch of ``wrn train`` over the bench's time for as many steps.

What the headline ratio counts, on the ``wrn train`` side: the epoch's training time as the loop records it
(data, step, the loop's per-step accounting, the progress display) PLUS the time of every checkpoint write
(the one before the first step and the one at the epoch's end) PLUS the per-epoch logging (metrics.jsonl,
TensorBoard). Not counted there, and printed apart: the evaluation of the test set (other work than
training), and the once-per-run costs (reading the data files, building the model, the final model file and
curves.png). Process start-up and imports are outside everything (this process has them already).
The bench side counts the mean ms of its timed steps times the number of steps.

Each part is timed by wrapping the loop's own functions (checkpoint.atomic_save, evaluate, RunLogger,
save_model, plot_run, build_loaders, build_model, and TrainStep.__call__, which is synchronous on the CPU, so
the loop's own work per step shows as the epoch's training time minus its TrainStep calls) from outside; the
loop itself is not changed. Every figure is also given in CPU time of this process, which other programs
sharing the cores disturb much less than wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def timed_calls(durations: dict, cpu: dict):
    """Wrap the loop's collaborators: the wall seconds of each call go to ``durations[label]`` (a list), the
    CPU seconds add up in ``cpu[label]``."""
    import wrn
    import wrn.train.checkpoint
    import wrn.train.epoch
    import wrn.train.logging
    import wrn.train.plot
    import wrn.train.run
    import wrn.train.step

    targets = [
        ("checkpoint writes", wrn.train.checkpoint, "atomic_save"),
        ("evaluation", wrn.train.epoch, "evaluate"),
        ("read data files", wrn.train.run, "build_loaders"),
        ("build model", wrn.train.run, "build_model"),
        ("logging", wrn.train.logging.RunLogger, "__init__"),
        ("logging", wrn.train.logging.RunLogger, "log_epoch"),
        ("logging", wrn.train.logging.RunLogger, "close"),
        ("final model file", wrn, "save_model"),
        ("curves.png", wrn.train.plot, "plot_run"),
        ("train steps", wrn.train.step.TrainStep, "__call__"),  # synchronous on the CPU
    ]
    saved = []
    for label, owner, name in targets:
        original = getattr(owner, name, None)
        if original is None:
            print(f"note: cannot time {label}: {owner.__name__}.{name} is not there", file=sys.stderr)
            continue

        def wrapper(*args, _original=original, _label=label, **kwargs):
            start, start_cpu = time.perf_counter(), time.process_time()
            try:
                return _original(*args, **kwargs)
            finally:
                durations[_label].append(time.perf_counter() - start)
                cpu[_label] += time.process_time() - start_cpu

        saved.append((owner, name, original))
        setattr(owner, name, wrapper)
    try:
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


def bench(args, settings, x, y, steps: int) -> tuple[list[float], float]:
    """``wrn bench train``'s measurement: (ms of each step, CPU seconds of the timed steps)."""
    from wrn.bench.train import measure_ours, release

    r = measure_ours(args.model, settings, x, y, args.batch_size, 10, args.warmup, steps)
    release(settings.device)
    return r["step_ms"], r["cpu_s"]


def step_only(args, settings, x, y, steps: int) -> tuple[list[float], float]:
    """TrainStep on one normalised batch, reused: the step without any data loading."""
    from wrn.bench.train import Runner, build_model, device_loader, make_step

    model = build_model(args.model, 10, settings.device, 0)
    step = make_step(model, settings, args.batch_size)
    images, labels = next(iter(device_loader(x, y, args.batch_size, settings.device)))

    def same_batch():
        while True:
            yield images, labels

    runner = Runner(lambda a, b: step(a, b)[0], same_batch(), settings.device)
    runner.warm(args.warmup)
    runner.timed(steps)
    return runner.step_ms, runner.cpu_s


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="wrn-16-4")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--images", type=int, default=2048, help="training images (one epoch)")
    p.add_argument("--test-images", type=int, default=512, help="test images (evaluated once, not counted)")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default=None, help="off, bf16 or fp16 (default: as wrn train resolves it)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--warmup", type=int, default=3, help="untimed bench steps before each bench")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args()

    from wrn.bench.cifar_files import write_random_cifar10
    from wrn.bench.common import machine_info, prepare_device, random_images, resolve_settings
    from wrn.bench.train import release
    from wrn.train.compose import build_config
    from wrn.train.run import train

    settings = resolve_settings(
        args.model,
        device=args.device,
        amp=args.amp,
        channels_last=args.channels_last,
        batch_size=args.batch_size,
    )
    prepare_device(settings.device)
    steps = args.images // args.batch_size
    if steps < 1:
        p.error("--images must hold at least one batch")
    x, y = random_images(args.images, 3, 32, 10)
    machine = machine_info(settings.device)
    print(
        f"overhead: {args.model}, batch {args.batch_size}, amp {settings.amp}, "
        f"{'channels_last' if settings.channels_last else 'NCHW'}, one epoch of {steps} steps "
        f"({args.images} images), on {machine['device']} ({machine['device_name']}, {machine['threads']} threads), "
        f"torch {machine['torch']}",
        flush=True,
    )

    t0 = time.perf_counter()
    bench_before, cpu_before = bench(args, settings, x, y, steps)
    print(f"bench (before):  {statistics.fmean(bench_before):8.1f} ms/step mean", flush=True)
    only, cpu_only = step_only(args, settings, x, y, steps)
    release(settings.device)
    print(f"step only:       {statistics.fmean(only):8.1f} ms/step mean", flush=True)

    durations: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, float] = defaultdict(float)
    with tempfile.TemporaryDirectory(prefix="wrn-overhead-") as tmp:
        root = Path(tmp) / "data"
        write_random_cifar10(root, train=args.images, test=args.test_images)
        overrides = {
            "model.name": args.model,
            "dataset.name": "cifar10",
            "dataset.root": str(root),
            "dataset.verify": False,
            "schedule.epochs": 1,
            "optim.batch_size": args.batch_size,
            "run.device": str(settings.device),
            "run.amp": settings.amp,
            "run.channels_last": settings.channels_last,
        }
        cfg = build_config(None, None, overrides)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the --no-verify note
            with timed_calls(durations, cpu):
                start, start_cpu = time.perf_counter(), time.process_time()
                train(cfg, Path(tmp) / "run")
                wall, wall_cpu = time.perf_counter() - start, time.process_time() - start_cpu
        record = json.loads((Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    bench_after, cpu_after = bench(args, settings, x, y, steps)
    print(f"bench (after):   {statistics.fmean(bench_after):8.1f} ms/step mean", flush=True)

    totals = {k: sum(v) for k, v in durations.items()}
    totals = defaultdict(float, totals)
    counts = defaultdict(int, {k: len(v) for k, v in durations.items()})
    step_calls = durations["train steps"]
    bench_s = statistics.fmean([statistics.fmean(bench_before), statistics.fmean(bench_after)]) * steps / 1000
    only_s = statistics.fmean(only) * steps / 1000
    epoch_train = float(record["train_time"])
    recurring = epoch_train + totals["checkpoint writes"] + totals["logging"]
    once = sum(totals[k] for k in ("read data files", "build model", "final model file", "curves.png"))
    other = wall - recurring - totals["evaluation"] - once
    # The same in CPU time of this process: robust to other programs sharing the machine's cores.
    once_keys = ("read data files", "build model", "final model file", "curves.png")
    train_cpu = wall_cpu - cpu["evaluation"] - sum(cpu[k] for k in once_keys)
    bench_cpu = (cpu_before + cpu_after) / 2
    result = {
        "machine": machine,
        "settings": {
            "model": args.model,
            "batch_size": args.batch_size,
            "amp": settings.amp,
            "channels_last": settings.channels_last,
            "steps": steps,
            "images": steps * args.batch_size,
            "test_images": args.test_images,
        },
        "bench_ms_per_step": {
            "before": statistics.fmean(bench_before),
            "after": statistics.fmean(bench_after),
            "step_only": statistics.fmean(only),
        },
        "bench_epoch_s": bench_s,
        "step_only_epoch_s": only_s,
        "train": {
            "wall_s": wall,
            "epoch_train_time_s": epoch_train,
            "checkpoint_writes_s": totals["checkpoint writes"],
            "checkpoint_writes": counts["checkpoint writes"],
            "logging_s": totals["logging"],
            "evaluation_s": totals["evaluation"],
            "once_per_run_s": once,
            "other_s": other,
            "step_calls": len(step_calls),
            "step_calls_s": sum(step_calls),
            "step_first_ms": 1000 * step_calls[0] if step_calls else None,
            "step_median_ms": 1000 * statistics.median(step_calls) if step_calls else None,
            "loop_own_work_s": epoch_train - sum(step_calls),
        },
        "ratio": recurring / bench_s,
        "ratio_vs_step_only": recurring / only_s,
        "ratio_wall": wall / bench_s,
        "cpu_s": {
            "bench_before": cpu_before,
            "bench_after": cpu_after,
            "step_only": cpu_only,
            "train_call": wall_cpu,
            "train_without_evaluation_and_once_per_run": train_cpu,
            **{f"train_{k.replace(' ', '_')}": v for k, v in cpu.items()},
        },
        "ratio_cpu": train_cpu / bench_cpu,
        # Within the one run, independent of the machine's drift between measurements: everything the epoch
        # spent outside TrainStep (next batch, accounting, progress, checkpoint writes, logging) per step time.
        "overhead_in_epoch": (recurring - sum(step_calls)) / sum(step_calls) if step_calls else None,
        "ratio_cpu_vs_step_only": train_cpu / cpu_only,
    }
    t = result["train"]
    print(
        "\n".join(
            [
                "",
                f"bench train:     {bench_s:8.2f} s  = {steps} steps x mean ms of the two benches "
                "(DeviceLoader batch + TrainStep)",
                f"step only:       {only_s:8.2f} s  (TrainStep on a fixed batch: no data loading)",
                f"wrn train epoch: {recurring:8.2f} s  = training time {epoch_train:.2f} s (data, step, accounting, "
                f"progress) + {t['checkpoint_writes']} checkpoint writes {t['checkpoint_writes_s']:.2f} s "
                f"+ logging {t['logging_s']:.2f} s",
                f"  of which:      {len(step_calls)} TrainStep calls {sum(step_calls):.2f} s (first "
                f"{t['step_first_ms'] or 0:.0f} ms, median {t['step_median_ms'] or 0:.0f} ms); the loop's own work "
                f"(next batch, accounting, progress) {t['loop_own_work_s']:.2f} s",
                f"  not counted:   evaluation of {args.test_images} test images {t['evaluation_s']:.2f} s; once per "
                f"run {once:.2f} s (reading the files, building the model, model file, curves.png); "
                f"the rest {other:.2f} s (config, run directory, messages)",
                f"  whole train() call: {wall:.2f} s",
                "",
                f"overhead ratio  wrn train epoch / bench train  = {result['ratio']:.3f}  "
                f"({100 * (result['ratio'] - 1):+.1f}%; target under +5%)",
                f"                wrn train epoch / step only    = {result['ratio_vs_step_only']:.3f}  "
                "(data loading included)",
                f"                whole train() call / bench     = {result['ratio_wall']:.3f}  "
                "(with evaluation and the once-per-run costs of a one-epoch run)",
                f"inside the epoch itself: next batch + accounting + progress + checkpoints + logging = "
                f"{recurring - sum(step_calls):.2f} s over {sum(step_calls):.2f} s of TrainStep calls = "
                f"{100 * (result['overhead_in_epoch'] or 0):.1f}% (no comparison across measurements)",
                f"in CPU time of this process (robust to other programs on the cores): train() without evaluation "
                f"and once-per-run parts {train_cpu:.2f} s / bench {bench_cpu:.2f} s = {result['ratio_cpu']:.3f}; "
                f"/ step only {cpu_only:.2f} s = {result['ratio_cpu_vs_step_only']:.3f}",
                f"total time of this script: {time.perf_counter() - t0:.0f} s",
            ]
        ),
        flush=True,
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
