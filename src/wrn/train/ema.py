"""An exponential moving average of the weights, updated after every optimizer step:
``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn(decay)`` and ``use_buffers=True``, so that
the BN running statistics are averaged with the weights (the average is evaluated as it is, with no BN pass
of its own). The first update copies the model; each later one is ``ema = decay * ema + (1 - decay) * w``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class WeightEMA:
    """The average of ``model`` (the plain model, not a DDP or compile wrapper): :meth:`update` after each
    optimizer step; :attr:`module` is the averaged network (it carries the model's ``config``)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.model = model
        self.decay = float(decay)
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)

    @property
    def module(self) -> torch.nn.Module:
        return self.averaged.module

    def update(self) -> None:
        self.averaged.update_parameters(self.model)

    def state_dict(self) -> dict[str, Any]:
        return {k: v.detach().cpu() for k, v in self.averaged.state_dict().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state)


__all__ = ["WeightEMA"]
