"""The paper's optimizer and learning-rate schedule (the paper, section 4; docs/training.md).

SGD with Nesterov momentum 0.9, dampening 0 and weight decay on every parameter. The multi-step schedule
counts epochs from 1 and a milestone ``m`` means "epoch m already runs at the lowered rate": with lr 0.1,
gamma 0.2 and milestones 60, 120, 160, epochs 1-59 run at 0.1, 60-119 at 0.02, 120-159 at 0.004 and
160-200 at 0.0008. The authors' code re-creates the optimizer at each drop, so the momentum buffers start
from zero again; :class:`Schedule` does the same by clearing the optimizer state (``reset_momentum``).
The cosine option anneals per step from ``lr`` to 0 over the whole run. FixMatch's (``fixmatch``, their
``fixmatch.py``) runs step ``k`` of ``K`` at ``lr * cos(7 pi k / (16 K))``: from ``lr`` down to 0.2 x ``lr``.

Linear warm-up (``schedule.warmup_epochs``, off by default) runs per step over ``W = round(warmup_epochs *
steps_per_epoch)`` steps: step ``t`` of the run (counted from 0 over all epochs) with ``t < W`` runs at
``lr * (t + 1) / W``. After it the schedule takes over: cosine anneals over the remaining steps,
``lr * (1 + cos(pi * (t - W) / (T - W))) / 2`` with ``T = epochs * steps_per_epoch``; multistep runs at its own
rate (the milestones stay where they are). With ``W = 0`` both are the formulas above.

With ``optim.decay_norm_and_bias`` off the optimizer has two parameter groups: the weights of two or more
dimensions with ``weight_decay``, the 1-d ones (BN's scale and shift, biases) with none; on (the paper's), it
keeps one group over every parameter.
"""

from __future__ import annotations

import math

import torch

from wrn.train.config import OptimSection, ScheduleSection


def parameter_groups(model: torch.nn.Module, optim: OptimSection):
    """``model.parameters()`` (one group), or with ``decay_norm_and_bias`` off two groups: weights of two or
    more dimensions, then the 1-d parameters with ``weight_decay`` 0."""
    if optim.decay_norm_and_bias:
        return model.parameters()
    params = list(model.parameters())
    return [
        {"params": [p for p in params if p.ndim > 1]},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def make_optimizer(model: torch.nn.Module, optim: OptimSection) -> torch.optim.SGD:
    return torch.optim.SGD(
        parameter_groups(model, optim),
        lr=optim.lr,
        momentum=optim.momentum,
        dampening=0.0,
        nesterov=optim.nesterov,
        weight_decay=optim.weight_decay,
    )


def lr_at(
    schedule: ScheduleSection, base_lr: float, epoch: int, step: int = 0, steps_per_epoch: int = 1
) -> float:
    """Learning rate of step ``step`` (0-indexed) of 1-indexed ``epoch`` (the formulas: the module's doc)."""
    if epoch < 1:
        raise ValueError("epochs are counted from 1")
    done = (epoch - 1) * steps_per_epoch + step
    warmup = warmup_steps(schedule, steps_per_epoch)
    if done < warmup:
        return base_lr * (done + 1) / warmup
    if schedule.name == "multistep":
        drops = sum(1 for m in schedule.milestones if epoch >= m)
        return base_lr * schedule.gamma**drops
    total = schedule.epochs * steps_per_epoch
    if schedule.name == "fixmatch":  # fixmatch.py: lr * cos(clip(k / K, 0, 1) * 7 pi / (2 * 8))
        return base_lr * math.cos(7 * math.pi * (done - warmup) / (16 * (total - warmup)))
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * (done - warmup) / (total - warmup)))


def warmup_steps(schedule: ScheduleSection, steps_per_epoch: int) -> int:
    """The warm-up's length in steps: ``warmup_epochs`` rounded to steps (0: none)."""
    return round(schedule.warmup_epochs * steps_per_epoch)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def reset_momentum(optimizer: torch.optim.Optimizer) -> None:
    """Forget the momentum buffers, exactly as re-creating the optimizer would."""
    optimizer.state.clear()


def is_drop_epoch(schedule: ScheduleSection, epoch: int) -> bool:
    return schedule.name == "multistep" and epoch in schedule.milestones


class Schedule:
    """The learning rate of every step of a run, for any schedule: the loop asks, and never looks at its name.

    ``apply(optimizer, epoch, step)`` before each step of 1-indexed ``epoch`` (``step`` counted from 0 in the
    epoch): at the first step of a drop epoch it clears the momentum buffers (``reset_momentum``), and it sets
    the step's rate. Returns that rate.
    """

    def __init__(self, schedule: ScheduleSection, base_lr: float, steps_per_epoch: int) -> None:
        self.schedule = schedule
        self.base_lr = base_lr
        self.steps_per_epoch = steps_per_epoch

    def lr(self, epoch: int, step: int = 0) -> float:
        return lr_at(self.schedule, self.base_lr, epoch, step, self.steps_per_epoch)

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int, step: int) -> float:
        if step == 0 and self.schedule.reset_momentum and is_drop_epoch(self.schedule, epoch):
            reset_momentum(optimizer)
        lr = self.lr(epoch, step)
        set_lr(optimizer, lr)
        return lr


def epochs_text(n: int) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{n} epoch{'' if n == 1 else 's'}"


def describe(schedule: ScheduleSection, base_lr: float) -> str:
    """The schedule in a few words: ``lr 0.1, x0.2 at epochs 60, 120, 160 of 200``."""
    w = schedule.warmup_epochs
    warm = f", linear warm-up over {w:g} epoch{'' if w == 1 else 's'}" if w else ""
    if schedule.name == "cosine":
        return f"lr {base_lr:g}{warm}, cosine to 0 over {epochs_text(schedule.epochs)}"
    if schedule.name == "fixmatch":
        return f"lr {base_lr:g}{warm} x cos(7 pi k / 16 K) per step over {epochs_text(schedule.epochs)}"
    if not schedule.milestones:
        return f"lr {base_lr:g}{warm} throughout"
    at = ", ".join(str(m) for m in schedule.milestones)
    return f"lr {base_lr:g}{warm}, x{schedule.gamma:g} at epochs {at} of {schedule.epochs}"


def describe_optim(optim: OptimSection) -> str:
    """The optimizer options that are on, in a few words (empty when all are off): ``, SAM rho 0.05, ...``."""
    parts = []
    if optim.sam_rho:
        parts.append(f"SAM rho {optim.sam_rho:g}")
    if optim.replica_batch:
        sam = " and SAM's ascent" if optim.sam_rho else ""
        parts.append(f"BN{sam} per {optim.replica_batch} images")
    if optim.grad_clip:
        parts.append(f"grad norm clipped to {optim.grad_clip:g}")
    if not optim.decay_norm_and_bias:
        parts.append("no weight decay on BN and biases")
    if optim.ema_decay:
        parts.append(
            f"EMA {optim.ema_decay:g}"
            + (" with warm-up" if optim.ema_warmup else "")
            + (" (BN statistics copied)" if optim.ema_buffers == "copy" else "")
        )
    return "".join(f", {p}" for p in parts)
