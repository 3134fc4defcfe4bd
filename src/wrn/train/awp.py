"""Adversarial Weight Perturbation (Wu, Xia, Wang, "Adversarial Weight Perturbation Helps Robust
Generalization", NeurIPS 2020), as the authors' code does it (csdongxian/AWP, ``AT_AWP/utils_awp.py`` with
``AT_AWP/train_cifar10.py`` for PGD-AT, ``trades_AWP/utils_awp.py`` with ``trades_AWP/train_trades_cifar.py``
for TRADES; ``docs/robustness.md`` names the lines):

1. after the attack has made the step's adversarial batch, a proxy network is loaded with the network's state
   (weights and BN buffers), put in training mode, and takes one plain SGD step (no momentum, no weight
   decay) *up* the objective's loss on that batch: its loss is minus the training loss (PGD-AT: minus the
   cross-entropy at the adversarial images; TRADES: minus the TRADES loss);
2. for every weight with more than one dimension whose name holds ``weight`` (the convolutions and the
   classifier; not BN nor biases) the proxy's move ``diff = w_proxy - w`` is scaled to the weight's norm,
   ``||w|| / (||diff|| + 1e-20) * diff``;
3. ``gamma`` times it is added to the network's weights, the step's loss and gradient are taken there and the
   optimizer steps; then ``gamma`` times it is subtracted from the updated weights.

The proxy's own BN statistics are thrown away (it is reloaded every step): the network's running statistics
see only the training passes. The proxy keeps no state from step to step (its SGD has no momentum), so a
checkpoint needs nothing of it. Under DDP the proxy is a plain copy of this process's network, run on its
share of the batch (its BN statistics are the share's, as their ``DataParallel`` proxy's are each GPU's), and
its gradient is averaged over the processes before its step, as ``DataParallel`` sums theirs over the GPUs: the
perturbation is then the same in every process, and so are the weights after it is taken away.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from wrn.train.objectives.base import Batch, Objective

EPS = 1e-20  # utils_awp.py's


class AWP:
    """``moved = awp.perturb(objective, batch, epoch)`` before the step's loss, ``awp.restore(moved)`` after
    the optimizer's step; ``moved`` is ``None`` (and nothing is done) during the first ``warmup`` epochs.

    ``model``: the plain network (no DDP / compile wrapper), whose ``named_parameters`` are perturbed;
    ``gamma``: the perturbation's size relative to each weight's norm; ``lr``: the proxy's SGD rate (it
    cancels in the scaling but for rounding, and is kept to round as theirs does); ``forward``: makes the
    proxy's forward pass (the step's channels_last and autocast) from the proxy network.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        gamma: float,
        lr: float,
        warmup: int,
        forward,
        world_size: int = 1,
    ) -> None:
        self.model = model
        self.gamma = float(gamma)
        self.warmup = int(warmup)
        self.world_size = int(world_size)
        self.proxy = copy.deepcopy(model)  # (before any DDP wrapper: a plain module)
        self.proxy_optim = torch.optim.SGD(self.proxy.parameters(), lr=lr)
        self.forward = forward(self.proxy)
        # diff_in_weights: the entries with more than one dimension whose name holds "weight"
        self.perturbed = [
            (p, q)
            for (name, p), q in zip(model.named_parameters(), self.proxy.parameters(), strict=True)
            if p.dim() > 1 and "weight" in name
        ]

    def perturb(self, objective: Objective, batch: Batch, epoch: int | None) -> list[torch.Tensor] | None:
        """The proxy's step on ``batch`` and the network's weights moved by ``gamma`` times its scaled diff;
        returns the diffs for :meth:`restore`. ``epoch`` (from 1; ``None``: a benchmark's step, AWP on)
        within the warm-up: nothing, ``None``."""
        if epoch is not None and epoch <= self.warmup:
            return None
        diff = self._calc(objective, batch)
        self._add(diff, 1.0 * self.gamma)
        return diff

    def restore(self, diff: list[torch.Tensor] | None) -> None:
        """The perturbation taken away from the updated weights (after ``optimizer.step()``), as theirs:
        ``w -= gamma * diff``."""
        if diff is not None:
            self._add(diff, -1.0 * self.gamma)

    def _calc(self, objective: Objective, batch: Batch) -> list[torch.Tensor]:
        """calc_awp: the proxy loaded and in training mode, one SGD step up the objective's loss on the
        batch, then diff_in_weights."""
        self.proxy.load_state_dict(self.model.state_dict())
        self.proxy.train()
        loss, _ = objective.loss(self.forward, batch)
        loss = -loss
        self.proxy_optim.zero_grad()
        loss.backward()
        if self.world_size > 1:
            self._average_gradient()
        self.proxy_optim.step()
        with torch.no_grad():
            out = []
            for old_w, new_w in self.perturbed:
                diff_w = new_w - old_w
                out.append(old_w.norm() / (diff_w.norm() + EPS) * diff_w)
        return out

    def _add(self, diff: list[torch.Tensor], coeff: float) -> None:
        """add_into_weights: ``param.add_(coeff * diff)``."""
        with torch.no_grad():
            for (param, _), d in zip(self.perturbed, diff, strict=True):
                param.add_(coeff * d)

    def _average_gradient(self) -> None:
        """The proxy's gradient averaged over the processes, in one collective."""
        import torch.distributed as dist

        grads = [q.grad for q in self.proxy.parameters() if q.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads]).div_(self.world_size)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


__all__ = ["AWP"]
