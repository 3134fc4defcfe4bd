"""Sharpness-Aware Minimization (Foret et al., "Sharpness-Aware Minimization for Efficiently Improving
Generalization", ICLR 2021), as the authors' code does it (google-research/sam,
``sam_jax/training_utils/flax_training.py``: ``train_step``, ``get_sam_gradient``, ``dual_vector``):

1. the gradient ``g`` at the weights ``w`` of the batch's loss *with* its weight-decay term (their loss adds
   ``0.5 * weight_decay * ||w||^2``, so ``g = grad L(w) + weight_decay * w``, over the parameters that decay);
2. ``e = rho * g / ||g||``, the norm over every parameter at once (``dual_vector``);
3. the gradient at ``w + e``, again with the weight-decay term taken at ``w + e``;
4. back to ``w`` and the optimizer's step with that second gradient. SGD adds ``weight_decay * w`` itself, so
   the second loss adds only a term whose gradient is ``weight_decay * e``, to make it theirs (in the loss, so
   that under DDP it is averaged over the processes as their ``pmean`` averages their whole gradient).

Their BN statistics are those of the first pass (``get_sam_gradient`` returns the first pass's ``inner_state``
and drops the second's): the buffers are put back after the second forward. Both passes use the same dropout
masks (their ``forward_and_loss`` runs both under one ``prng_key``): the RNG is rewound for the second.

Over several processes (DDP) ``g`` is each process's own (their default ``sync_perturbations=False``:
m-sharpness with m the per-process batch), so the first backward runs under ``no_sync()``; the second
gradient is averaged over the processes as usual (their ``jax.lax.pmean(grad, 'batch')``), and clipping, if
on, comes after that average, as in their code.

m-sharpness in one process (``optim.replica_batch``, :mod:`wrn.train.replicas`): the batch split into slices
of m images, as on their 8 accelerators of 32 images each; :meth:`SAM.add_gradient` takes one slice's SAM
gradient, from its own ascent ``e_i = rho g_i / ||g_i||``, and adds it, weighted, to every ``.grad``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch


class SAM:
    """The SAM gradient of one step: ``sam.gradient(net, optimizer, loss_fn)`` leaves in every ``.grad`` the
    gradient to step with and returns the first pass's ``(loss, logits)``.

    ``loss_fn()`` runs the forward pass and returns ``(loss, logits)``; it is called twice.
    """

    def __init__(self, rho: float, device: torch.device) -> None:
        self.rho = float(rho)
        self.device = torch.device(device)

    def gradient(
        self,
        net: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rng = _rng_state(self.device)
        no_sync = getattr(net, "no_sync", None)  # DDP: each process's own ascent gradient
        with no_sync() if no_sync is not None else nullcontext():
            loss, logits = loss_fn()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        groups = param_groups(optimizer)
        saved_weights = self._ascend(groups, [[p.grad for p in params] for params, _ in groups])
        buffers = [b for b in net.buffers()]
        saved_buffers = [b.detach().clone() for b in buffers]
        optimizer.zero_grad(set_to_none=True)
        _set_rng_state(self.device, rng)
        second, _ = loss_fn()
        (second + _decay_at_e(groups, saved_weights)).backward()
        _put_back(buffers, saved_buffers, groups, saved_weights)  # the first pass's BN statistics
        return loss, logits

    def add_gradient(
        self,
        net: torch.nn.Module,
        groups: list[tuple[list[torch.Tensor], float]],
        loss_fn: Callable[[], tuple[torch.Tensor, torch.Tensor]],
        weight: float,
        sync: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Adds ``weight`` times the SAM gradient of ``loss_fn``'s batch (a slice of the step's) to every
        ``.grad``; the ascent is this batch's own. Leaves the weights as they were and the BN buffers as the
        first pass left them; returns the first pass's ``(loss, logits)``. ``sync``: the second backward
        averages over the processes (DDP; the last slice's), else it runs under ``no_sync()``."""
        rng = _rng_state(self.device)
        no_sync = getattr(net, "no_sync", None)
        with no_sync() if no_sync is not None else nullcontext():
            loss, logits = loss_fn()
            params = [p for params, _ in groups for p in params if p.requires_grad]
            found = iter(torch.autograd.grad(loss, params, allow_unused=True))
        grads = [[next(found) if p.requires_grad else None for p in params] for params, _ in groups]
        saved_weights = self._ascend(groups, grads)
        buffers = list(net.buffers())
        saved_buffers = [b.detach().clone() for b in buffers]
        _set_rng_state(self.device, rng)
        with no_sync() if no_sync is not None and not sync else nullcontext():
            second, _ = loss_fn()
            ((second + _decay_at_e(groups, saved_weights)) * weight).backward()
        _put_back(buffers, saved_buffers, groups, saved_weights)
        return loss, logits

    @torch.no_grad()
    def _ascend(self, groups, grads) -> list[list[torch.Tensor]]:
        """``w += rho * g / ||g||`` with ``g`` the gradient ``grads`` (one per parameter, None where it has
        none) plus weight decay; returns the weights ``w``."""
        moves = [
            [g + decay * p if decay else g for p, g in zip(params, given, strict=True) if g is not None]
            for (params, decay), given in zip(groups, grads, strict=True)
        ]
        flat = [g for group in moves for g in group]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in flat]))
        scale = self.rho / norm.clamp_min(1e-12)  # (an all-zero gradient: no step, not NaN)
        saved = []
        for (params, _), given, group in zip(groups, grads, moves, strict=True):
            kept = []
            move = iter(group)
            for p, g in zip(params, given, strict=True):
                kept.append(p.detach().clone())
                if g is not None:
                    p.add_(next(move) * scale)
            saved.append(kept)
        return saved


def _put_back(buffers, saved_buffers, groups, saved_weights) -> None:
    """The BN buffers as the first pass left them, and the weights ``w`` themselves (not ``w + e - e``)."""
    with torch.no_grad():
        for b, kept in zip(buffers, saved_buffers, strict=True):
            b.copy_(kept)
        for (params, _), kept in zip(groups, saved_weights, strict=True):
            for p, w in zip(params, kept, strict=True):
                p.copy_(w)


def _decay_at_e(groups, saved_weights) -> torch.Tensor | float:
    """A term whose gradient is ``weight_decay * e``: with SGD's own ``weight_decay * w`` the step's gradient
    then holds the decay at ``w + e``, as theirs; in the loss, so that DDP averages it with the rest."""
    terms = [
        decay * (p * (p.detach() - w)).sum()
        for (params, decay), kept in zip(groups, saved_weights, strict=True)
        if decay
        for p, w in zip(params, kept, strict=True)
        if p.requires_grad
    ]
    return torch.stack(terms).sum() if terms else 0.0


def param_groups(optimizer: torch.optim.Optimizer) -> list[tuple[list[torch.Tensor], float]]:
    return [(list(g["params"]), float(g.get("weight_decay", 0.0))) for g in optimizer.param_groups]


def _rng_state(device: torch.device):
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return torch.get_rng_state()


def _set_rng_state(device: torch.device, state) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


__all__ = ["SAM", "param_groups"]
