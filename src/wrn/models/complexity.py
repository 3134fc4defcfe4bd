"""Parameter counts and forward multiply-adds, and the model table of ``wrn models``.

Multiply-adds are counted by PyTorch's FLOP counter (``torch.utils.flop_counter``; one multiply-add = 2
FLOPs) on the ``meta`` device: shapes only, no memory and no arithmetic, so even WRN-101-2 costs nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from wrn.models.registry import create_model, list_models, model_info


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Trainable parameters (conv and Linear weights, BN gamma and beta; BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, input_size: int | tuple[int, int], in_channels: int | None = None) -> int:
    """Forward multiply-adds of one image of ``input_size`` through ``model``."""
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    if in_channels is None:
        in_channels = getattr(model, "config", {}).get("in_channels", 3)
    device = next(model.parameters()).device
    x = torch.empty(1, in_channels, *input_size, device=device)
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2


def describe(name: str, num_classes: int | None = None) -> dict[str, Any]:
    """One row of the model table: parameters and multiply-adds at the native input size."""
    info = model_info(name)
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes)
    return {
        "name": name,
        "arch": info["arch"],
        "num_classes": model.config["num_classes"],
        "input_size": info["input_size"],
        "params": count_parameters(model),
        "macs": count_macs(model, info["input_size"]),
        "paper": info["paper"],
    }


def model_table(names: list[str] | None = None, num_classes: int | None = None) -> list[dict[str, Any]]:
    return [describe(n, num_classes) for n in (names if names is not None else list_models())]
