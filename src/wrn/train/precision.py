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


def cpu_bf16_times(model: torch.nn.Module, example: torch.Tensor) -> tuple[float, float]:
    """(bf16, fp32) seconds of one training-mode forward and backward of a copy of ``model`` on ``example``
    (the run's own network, memory format and image shape, a few images), the best of 2 after a warm-up; the
    random state is left as it was."""
    import copy
    import time

    net = copy.deepcopy(model).train()

    def best_time(amp: bool) -> float:
        best = float("inf")
        for _ in range(3):  # the first is a warm-up
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                y = net(example)
            y.float().sum().backward()
            best = min(best, time.perf_counter() - start)
        return best

    with torch.random.fork_rng(devices=[]):
        return best_time(True), best_time(False)


def amp_warning(device: torch.device, amp: str, model: torch.nn.Module, example: torch.Tensor) -> str | None:
    """A one-line warning when ``amp`` is slower than full precision on ``device`` (bf16 on most CPUs), timed
    on the run's ``model`` and an ``example`` batch of its inputs (only when bf16 is asked for on a CPU)."""
    if torch.device(device).type != "cpu" or amp != "bf16":
        return None
    bf16, fp32 = cpu_bf16_times(model, example)
    if bf16 <= 1.05 * fp32:
        return None
    native = cpu_has_native_bf16()
    why = (
        "this CPU has no native bf16 (AVX512-BF16 or AMX), so PyTorch emulates it"
        if native is False
        else "PyTorch's CPU bf16 kernels are slower than fp32 here"
    )
    return (
        f"--amp bf16 took {1e3 * bf16:.0f} ms per step of this model against {1e3 * fp32:.0f} ms in fp32 on this "
        f"CPU ({bf16 / fp32:.1f}x; {why}); use --amp off for speed"
    )
