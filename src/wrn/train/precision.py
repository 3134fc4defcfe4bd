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
