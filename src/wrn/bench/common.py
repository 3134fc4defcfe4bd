"""What every benchmark shares: the machine's description, the run settings `wrn train` would pick, step timing.

Timing on CUDA uses events recorded between steps, read once at the end: no host sync between steps, so the
GPU queue runs ahead exactly as in the training loop, and any time the GPU waits for the host shows up in the
step it delays. On the CPU every step is synchronous and timed with ``time.perf_counter``.
"""

from __future__ import annotations

import math
import os
import resource
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from wrn.errors import ConfigError
from wrn.train.build import prepare_device  # noqa: F401  (threads, GPU and cuDNN as `wrn train` sets them)
from wrn.train.config import COMPILE_MODES  # the same choices as `wrn train --compile-mode`
from wrn.train.precision import amp_warning

# Training FLOPs per image = TRAIN_FLOPS_PER_MAC * forward multiply-adds: a multiply-add is 2 FLOPs and a
# training step (forward, backward for inputs, backward for weights) costs about 3x the forward (docs/benchmarks.md).
TRAIN_FLOPS_PER_MAC = 6


@dataclass(frozen=True)
class Settings:
    """How a benchmark runs the model, resolved exactly as ``wrn train`` resolves its config."""

    device: torch.device
    amp: str  # 'off', 'bf16' or 'fp16'
    channels_last: bool
    compile: bool
    compile_mode: str
    cfg: Any  # the resolved TrainConfig these settings came from (wrn.train.build.build_trainables takes it)


def resolve_settings(
    model: str,
    *,
    device: str = "auto",
    amp: str | None = None,
    channels_last: bool | None = None,
    compile: bool = False,
    compile_mode: str = "default",
    batch_size: int = 128,
) -> Settings:
    """Fill in ``auto`` device, amp and channels_last with :func:`wrn.train.resolve.resolve`, as ``wrn train`` does.

    Unknown model names, fp16 on a CPU, a missing GPU and other impossible choices raise :class:`ConfigError`.
    """
    from wrn.train.config import validate
    from wrn.train.resolve import resolve

    if compile_mode not in COMPILE_MODES:
        raise ConfigError(
            f"--compile-mode {compile_mode!r} is not known; choose one of {', '.join(COMPILE_MODES)}"
        )
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"--device {device!r} is not known; use auto, cpu, cuda or cuda:N")
    run: dict[str, Any] = {
        "device": device,
        "amp": amp or "auto",
        "compile": bool(compile),
        "compile_mode": compile_mode,
    }
    if channels_last is not None:
        run["channels_last"] = bool(channels_last)
    cfg = resolve(validate({"model": {"name": model}, "optim": {"batch_size": batch_size}, "run": run}))
    warning = None
    if cfg.run.amp == "bf16" and cfg.run.device == "cpu":  # the same one-line warning as `wrn train`
        from wrn.models import create_model

        net = create_model(model)
        example = torch.randn(min(16, batch_size), 3, 32, 32)
        warning = amp_warning(torch.device("cpu"), "bf16", net, example)
    if warning:
        warnings.warn(warning, UserWarning, stacklevel=2)
    return Settings(
        device=torch.device(cfg.run.device),
        amp=cfg.run.amp,
        channels_last=bool(cfg.run.channels_last),
        compile=bool(cfg.run.compile),
        compile_mode=cfg.run.compile_mode,
        cfg=cfg,
    )


def check_counts(steps: int, warmup: int, batch_size: int, rounds: int = 1) -> None:
    if steps < 1:
        raise ConfigError(f"--steps {steps} is too few; time at least 1 step")
    if warmup < 0:
        raise ConfigError(f"--warmup {warmup} is negative; give 0 or more warm-up steps")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size} is too small; give at least 1")
    if rounds < 1:
        raise ConfigError(f"--rounds {rounds} is too few; give 1 (one side after the other) or more")


def machine_info(device: torch.device) -> dict[str, Any]:
    """The device, its name, and the torch and CUDA versions."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name()
    return {
        "device": device.type,
        "device_name": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
    }


def _cpu_name() -> str:
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cores = os.cpu_count() or 1
                    return f"{line.split(':', 1)[1].strip()} ({cores} cores)"
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


class StepTimer:
    """Per-step times in ms: ``start()`` once, ``lap()`` after each step, ``finish()`` -> list of ms."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self._marks: list[Any] = []
        self.cpu_s = 0.0  # CPU time of this process (all its threads) between start() and finish()

    def _mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def start(self) -> None:
        synchronize(self.device)
        self._cpu = time.process_time()
        self._marks = [self._mark()]

    def lap(self) -> None:
        self._marks.append(self._mark())

    def finish(self) -> list[float]:
        synchronize(self.device)
        self.cpu_s = time.process_time() - self._cpu
        m = self._marks
        if self.cuda:
            return [m[i].elapsed_time(m[i + 1]) for i in range(len(m) - 1)]
        return [(m[i + 1] - m[i]) * 1000.0 for i in range(len(m) - 1)]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what they are): CUDA's peak allocated memory since the last reset, or the process's peak RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda max allocated"
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return int(kib) * 1024, "process peak RSS"


def summarize(step_ms: list[float], batch_size: int, train_flops_per_image: float | None) -> dict[str, Any]:
    """Median, min, max and mean ms of the timed steps; images/s and TFLOP/s from the median."""
    if not step_ms or not all(math.isfinite(t) and t > 0 for t in step_ms):
        raise RuntimeError(f"step times must be finite and positive, got {step_ms}")
    ms = statistics.median(step_ms)
    out: dict[str, Any] = {
        "ms": ms,
        "ms_min": min(step_ms),
        "ms_max": max(step_ms),
        "ms_mean": statistics.fmean(step_ms),
        "steps": len(step_ms),
        "images_per_s": batch_size / (ms / 1000.0),
    }
    if train_flops_per_image is not None:
        out["tflops"] = batch_size * train_flops_per_image / (ms / 1000.0) / 1e12
    return out


def random_images(n: int, channels: int, size: int, num_classes: int, seed: int = 0):
    """``n`` random uint8 images [n, C, H, W] and int64 labels, the shape of a CIFAR-like data set."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return x, y


def sample_count(num_samples: int | None, batch_size: int, image_size: int, channels: int = 3) -> int:
    """``num_samples``, else :func:`default_num_samples`; at least one batch, or :class:`ConfigError`."""
    n = num_samples if num_samples is not None else default_num_samples(batch_size, image_size, channels)
    if n < batch_size:
        raise ConfigError(
            f"--num-samples {n} is fewer than one batch of {batch_size}; give at least {batch_size}"
        )
    return n


def default_num_samples(batch_size: int, image_size: int, channels: int = 3) -> int:
    """CIFAR's 50,000 training images, fewer for large images (at most about 1 GiB of uint8), at least a batch."""
    cap = (1 << 30) // (channels * image_size * image_size)
    return max(batch_size, min(50_000, cap))


# ---------------------------------------------------------------------------------------------- reading figures

# A figure from fewer timed steps, or from steps whose slowest took more than MAX_SPREAD x the fastest, is not
# a measurement of the step: the machine was busy, or the warm-up too short (allocator, cuDNN autotuning).
MIN_STEPS = 5
MAX_SPREAD = 1.5


def too_few(steps: int | None) -> str | None:
    """Why ``steps`` timed steps are too few to measure a step; None when they are enough."""
    if isinstance(steps, int) and steps < MIN_STEPS:
        return f"only {steps} timed step{'s' if steps != 1 else ''} (give --steps {MIN_STEPS} or more)"
    return None


def spread(ms_min: float | None, ms_max: float | None) -> float | None:
    """The slowest timed step over the fastest, when that is more than MAX_SPREAD; else None."""
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (ms_min, ms_max)) or ms_min <= 0:
        return None
    return ms_max / ms_min if ms_max / ms_min > MAX_SPREAD else None


SPREAD_WHY = f"more than {MAX_SPREAD}x apart: a busy machine or too short a warm-up; time it on an idle machine, with more --warmup"


def unreliable(ms_min: float | None, ms_max: float | None, steps: int | None) -> str | None:
    """Why timings with this min, max and number of steps cannot be trusted; None when they can."""
    reasons = [too_few(steps)]
    apart = spread(ms_min, ms_max)
    if apart is not None:
        reasons.append(
            f"its steps took {readable(ms_min)} to {readable(ms_max)} ms, {apart:.1f}x apart ({SPREAD_WHY})"
        )
    return "; ".join(r for r in reasons if r) or None


def readable(value: float) -> str:
    """A figure rounded so that it stays readable: whole numbers from 100, 3 significant digits below."""
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return str(value)
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


class Progress:
    """Progress of a long benchmark on stderr: which network, which step, at most one line every ``every`` s.

    Called as ``progress(label, phase, i, n)`` after step ``i`` of ``n`` of a phase ("warm-up" or "timed");
    the first and the last step of each phase always show. The check costs one clock read per step.
    """

    def __init__(self, every: float = 2.0, stream=None):
        self.every = every
        self.stream = stream if stream is not None else sys.stderr
        self._last = -math.inf

    def __call__(self, label: str, phase: str, i: int, n: int) -> None:
        now = time.monotonic()
        if i not in (1, n) and now - self._last < self.every:
            return
        self._last = now
        print(f"  {label}: {phase} step {i}/{n}", file=self.stream, flush=True)
