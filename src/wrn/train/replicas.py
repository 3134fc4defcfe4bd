"""The batch as google-research/sam trains it on several accelerators, in one process (``optim.replica_batch``).

Their CIFAR runs (Foret et al. 2021, Section 3.1 and Appendix C.1) take a batch of 256 on 8 GPUs: each takes 32
of the images (``flax_training.py``, ``shard_batch``), normalises BN over them (Flax's BatchNorm has no
cross-device axis there), takes the gradient of their mean loss and, with SAM, its own ascent from its own
gradient (``get_sam_gradient`` with ``sync_perturbations`` off: m-sharpness, the paper's Section 4.1); the step
takes the mean of the 8 gradients (``jax.lax.pmean(grad, 'batch')``). Each device keeps BN running statistics
of its own, and their evaluation (``eval_step``) and checkpoints average them over the devices; the running
statistics are a linear recursion, so that average is the mean of the slices' updates, which is what is kept
here, in the one set of buffers.

:func:`replica_gradient` does that with slices of ``size`` images of one process's batch, one after another:
for each slice its forward and backward (with SAM, :meth:`~wrn.train.sam.SAM.add_gradient`: its own ascent,
the same dropout masks for both passes), its gradient added with weight ``size / batch``, the BN buffers put
back before the next slice and set at the end to the mean of the slices' updates (of the first pass with SAM).
Under DDP every backward but the last slice's runs under ``no_sync()``, so the processes average the sum once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from wrn.train.objectives.base import Batch
    from wrn.train.sam import SAM


def slices(batch: Batch, size: int) -> list[Batch]:
    """``batch`` cut along its first dimension into slices of ``size`` (each of its tensors alike)."""
    n = len(batch.labels)
    return [
        dataclasses.replace(
            batch, **{f.name: getattr(batch, f.name)[i : i + size] for f in dataclasses.fields(batch)}
        )
        for i in range(0, n, size)
    ]


def replica_gradient(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_of: Callable[[Batch], tuple[torch.Tensor, torch.Tensor]],
    batch: Batch,
    size: int,
    *,
    sam: SAM | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Leaves in every ``.grad`` the mean of the gradients of ``batch``'s slices of ``size`` images (SAM's, each
    from its own ascent, when ``sam`` is given) and in the BN buffers the mean of their updates; returns the
    batch's mean loss and its logits (SAM: the first passes')."""
    from wrn.train.sam import param_groups

    parts = slices(batch, size)
    n = len(batch.labels)
    buffers = list(net.buffers())
    start = [b.detach().clone() for b in buffers]
    moved = [torch.zeros_like(b) if b.is_floating_point() else None for b in buffers]
    groups = param_groups(optimizer)
    no_sync = getattr(net, "no_sync", None)
    optimizer.zero_grad(set_to_none=True)
    losses, outputs = [], []
    for i, part in enumerate(parts):
        weight, last = len(part.labels) / n, i == len(parts) - 1
        with torch.no_grad():
            for b, b0 in zip(buffers, start, strict=True):
                b.copy_(b0)
        if sam is not None:
            loss, logits = sam.add_gradient(net, groups, lambda part=part: loss_of(part), weight, sync=last)
        else:
            with no_sync() if no_sync is not None and not last else nullcontext():
                loss, logits = loss_of(part)
                scaled = loss * weight
                (scaler.scale(scaled) if scaler is not None and scaler.is_enabled() else scaled).backward()
        with torch.no_grad():
            for b, b0, total in zip(buffers, start, moved, strict=True):
                if total is not None:
                    total.add_(b - b0, alpha=weight)
        losses.append(loss.detach() * weight)
        outputs.append(logits.detach())
    with torch.no_grad():
        for b, b0, total in zip(buffers, start, moved, strict=True):
            if total is not None:  # (an integer buffer, BN's batch count, as every slice left it)
                b.copy_(b0 + total)
    return torch.stack(losses).sum(), torch.cat(outputs)


__all__ = ["replica_gradient", "slices"]
