"""An exponential moving average of the weights, updated after every optimizer step:
``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn(decay)`` and ``use_buffers=True``, so that
the BN running statistics are averaged with the weights (the average is evaluated as it is, with no BN pass
of its own). The first update copies the model; each later one is ``ema = decay * ema + (1 - decay) * w``.

With ``warmup`` the decay of the k-th update (k = 0, 1, ... the updates made before it) is timm's
ModelEmaV3 warm-up (``timm/utils/model_ema.py``, ``get_decay`` with ``use_warmup=True``, ``warmup_gamma=1``,
``warmup_power=2/3``, ``min_decay=0``, called with ``step = k + 1``): ``min(decay, 1 - (1 + k) ** (-2/3))``,
which is 0 for the first update (a copy). With ``rule="gowal"`` it is DM-Improves-AT's (imrahulr's port of
Gowal et al., ``gowal21uncovering/utils/watrain.py`` ``ema_update`` with ``dynamic_decay=True``, called after
step ``g = k + 1``): 0 (a copy) while ``g < start``, the lr warm-up's length in steps (:attr:`WeightEMA.start`,
set by the loop), then ``min(decay, (1 + d) / (10 + d))`` with ``d = g - start``. With ``buffers="copy"`` only
the parameters are averaged and the
average takes the model's buffers (BN's running statistics) as they are after every update, as FixMatch's
``tf.train.ExponentialMovingAverage`` over the trainable variables, whose average is evaluated with the
model's moving statistics. Under fp16 an update after a step the grad scaler skipped leaves
the average as it is (and does not count); this is decided on the device, with no host sync.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

WARMUP_POWER = 2 / 3  # timm ModelEmaV3's default warmup_power (warmup_gamma 1)


class WeightEMA:
    """The average of ``model`` (the plain model, not a DDP or compile wrapper): :meth:`update` after each
    optimizer step; :attr:`module` is the averaged network (it carries the model's ``config``)."""

    def __init__(
        self,
        model: torch.nn.Module,
        decay: float,
        warmup: bool = False,
        buffers: str = "average",
        rule: str = "timm",
    ) -> None:
        if buffers not in ("average", "copy"):
            raise ValueError(f"buffers must be 'average' or 'copy', not {buffers!r}")
        if rule not in ("timm", "gowal"):
            raise ValueError(f"rule must be 'timm' or 'gowal', not {rule!r}")
        self.model = model
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.rule = rule
        # rule "gowal": the steps of the lr warm-up, before which the average copies the model
        self.start = 0.0
        self.copy_buffers = buffers == "copy"
        self.averaged = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=not self.copy_buffers
        )
        # the tensors averaged (parameters, and buffers unless copied), first in the update's list
        self._n_averaged = sum(1 for _ in model.parameters()) + (
            0 if self.copy_buffers else sum(1 for _ in model.buffers())
        )

    @property
    def module(self) -> torch.nn.Module:
        return self.averaged.module

    def update(self, skipped: torch.Tensor | None = None) -> None:
        """One update; ``skipped`` (a device flag, fp16) true leaves the average unchanged."""
        if skipped is None and not self.warmup:
            self.averaged.update_parameters(self.model)  # AveragedModel's own update
            if self.copy_buffers:
                with torch.no_grad():
                    for a, w in zip(self.averaged.module.buffers(), self.model.buffers(), strict=True):
                        a.copy_(w)
        else:
            self._masked_update(skipped)

    def current_decay(self, device: torch.device) -> torch.Tensor:
        """The decay of the next update, a 0-d float32 tensor on ``device`` (0 for the first: a copy)."""
        k = self.averaged.n_averaged.to(device=device, dtype=torch.float32)
        if self.warmup and self.rule == "gowal":  # ema_update: after step g = k + 1, d = g - warmup_steps
            d = k + 1.0 - self.start
            return torch.where(d >= 0, torch.clamp((1.0 + d) / (10.0 + d), max=self.decay), 0.0)
        if self.warmup:
            return torch.clamp(1.0 - (1.0 + k) ** -WARMUP_POWER, min=0.0, max=self.decay)
        return torch.where(k == 0, 0.0, self.decay)

    @torch.no_grad()
    def _masked_update(self, skipped: torch.Tensor | None) -> None:
        averaged = [*self.averaged.module.parameters(), *self.averaged.module.buffers()]
        current = [*self.model.parameters(), *self.model.buffers()]
        copied = self._n_averaged
        device = current[0].device if current else torch.device("cpu")
        decay = self.current_decay(device)
        keep = torch.ones((), device=device) if skipped is None else (~skipped).float()
        weight = (1.0 - decay) * keep  # 0: left as it is
        for i, (a, w) in enumerate(zip(averaged, current, strict=True)):
            w = w.detach()
            if i >= copied:  # a buffer the average takes as it is
                new = w
            elif a.is_floating_point():
                new = torch.lerp(a, w, weight.to(a.dtype))
            else:  # an integer buffer (BN's batch count): AveragedModel's formula, truncated
                new = (a * (1.0 - weight) + w * weight).to(a.dtype)
            # a skipped step's weights are not taken in, not even as NaN * 0
            a.copy_(new if skipped is None else torch.where(skipped, a, new))
        n = self.averaged.n_averaged
        if n.device != device:  # the count lives beside the weights: no host sync per step
            self.averaged.n_averaged = n = n.to(device)
        n.add_(keep.long())

    def state_dict(self) -> dict[str, Any]:
        return {k: v.detach().cpu() for k, v in self.averaged.state_dict().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state)


__all__ = ["WeightEMA"]
