"""Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017), the softmax form: each
example's cross-entropy weighted by ``(1 - p)^gamma``, ``p`` the probability of its class, so that the
examples the network already gets right weigh less. ``gamma = 0`` is the cross-entropy.

With soft targets ``t`` (label smoothing, mixup/CutMix) the loss of an example is
``-sum_c t_c (1 - p_c)^gamma log p_c``; label smoothing ``e`` makes ``t = (1 - e) onehot + e / C``, as torch's
``CrossEntropyLoss`` does.
"""

from __future__ import annotations

import torch
from torch.nn.functional import log_softmax, one_hot

from wrn.train.objectives.base import Context, Objective


class FocalLoss(Objective):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.gamma = float(ctx.cfg.objective.focal.gamma)
        self.smoothing = float(ctx.cfg.optim.label_smoothing)

    def criterion(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_p = log_softmax(logits, dim=1)
        if targets.dim() == 1:
            targets = one_hot(targets, logits.shape[1]).to(log_p.dtype)
        if self.smoothing:
            targets = targets * (1.0 - self.smoothing) + self.smoothing / logits.shape[1]
        weight = (1.0 - log_p.exp()).clamp_min(0.0).pow(self.gamma)
        return -(targets * weight * log_p).sum(dim=1).mean()
