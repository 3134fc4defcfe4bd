"""Loading a state dict strictly, with one sentence naming the missing, unexpected or mis-shaped keys.

Its own home, below the registry, the weights files and the importers that all use it."""

from __future__ import annotations

import torch
from torch import nn

from wrn.errors import CheckpointError


def load_state_dict_checked(
    model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "the checkpoint"
) -> None:
    """``model.load_state_dict(state_dict, strict=True)`` with one clear message on missing, unexpected or
    mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")

    problems = []
    if missing:
        problems.append(f"missing keys {few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {few(unexpected)}")
    if shapes:
        problems.append(f"mismatched shapes (file vs model) {few(shapes)}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit {model.config.get('name', type(model).__name__) if hasattr(model, 'config') else type(model).__name__}: "
            + "; ".join(problems)
            + " (was it saved from another architecture or number of classes?)."
        )
    model.load_state_dict(state_dict, strict=True)
