"""Numeric precision of training and evaluation: the autocast context of an ``amp`` setting."""

from __future__ import annotations

import contextlib

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# What each setting computes in, as recorded in metrics.jsonl and shown by the reproduction report.
PRECISION_NAMES = {"off": "fp32", "bf16": "bf16", "fp16": "fp16"}


def autocast(device: torch.device, amp: str):
    """The autocast context of an ``amp`` setting ('bf16', 'fp16' or 'off')."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def cpu_has_native_bf16() -> bool | None:
    """Whether this CPU computes bf16 in hardware (x86 AVX512-BF16 or AMX, Arm BF16); None if unknown.

    Without it, PyTorch emulates bf16 on the CPU and bf16 autocast runs several times slower than fp32
    (about 10x for a WRN-16-4 step on a 2-core AVX2 machine).
    """
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    if not flags:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


_BF16_SLOWDOWN: float | None = None


def cpu_bf16_slowdown() -> float:
    """How many times slower bf16 autocast runs than fp32 on this CPU, measured once per process on a small
    conv-BN-ReLU-conv forward and backward (about 0.2 s; more where bf16 is emulated)."""
    global _BF16_SLOWDOWN
    if _BF16_SLOWDOWN is None:
        import time

        def best_time(amp: bool) -> float:
            gen = torch.Generator().manual_seed(0)
            net = torch.nn.Sequential(
                torch.nn.Conv2d(64, 64, 3, padding=1, bias=False),
                torch.nn.BatchNorm2d(64),
                torch.nn.ReLU(),
                torch.nn.Conv2d(64, 64, 3, padding=1, bias=False),
            )
            x = torch.randn(32, 64, 16, 16, generator=gen)
            best = float("inf")
            for _ in range(4):
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                    y = net(x)
                y.float().sum().backward()
                best = min(best, time.perf_counter() - start)
            return best

        with torch.random.fork_rng(devices=[]):
            _BF16_SLOWDOWN = best_time(True) / best_time(False)
    return _BF16_SLOWDOWN


def amp_warning(device: torch.device, amp: str) -> str | None:
    """A one-line warning when ``amp`` is slower than full precision on ``device`` (bf16 on most CPUs)."""
    if torch.device(device).type != "cpu" or amp != "bf16":
        return None
    slowdown = cpu_bf16_slowdown()
    if slowdown <= 1.05:
        return None
    native = cpu_has_native_bf16()
    why = (
        "this CPU has no native bf16 (AVX512-BF16 or AMX), so PyTorch emulates it"
        if native is False
        else "PyTorch's CPU bf16 kernels are slower than fp32 here"
    )
    return (
        f"--amp bf16 measured {slowdown:.1f}x slower than fp32 on this CPU ({why}); use --amp off for speed"
    )
