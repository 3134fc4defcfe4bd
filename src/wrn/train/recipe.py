"""The paper's optimizer and learning-rate schedule (the paper, section 4; docs/training.md).

SGD with Nesterov momentum 0.9, dampening 0 and weight decay on every parameter. The multi-step schedule
counts epochs from 1 and a milestone ``m`` means "epoch m already runs at the lowered rate": with lr 0.1,
gamma 0.2 and milestones 60, 120, 160, epochs 1-59 run at 0.1, 60-119 at 0.02, 120-159 at 0.004 and
160-200 at 0.0008. The authors' code re-creates the optimizer at each drop, so the momentum buffers start
from zero again; :class:`Schedule` does the same by clearing the optimizer state (``reset_momentum``).
The cosine option anneals per step from ``lr`` to 0 over the whole run. FixMatch's (``fixmatch``, their
``fixmatch.py``) runs step ``k`` of ``K`` at ``lr * cos(7 pi k / (16 K))``: from ``lr`` down to 0.2 x ``lr``.
DM-Improves-AT's ``cosinew`` (:func:`cosinew`) is torch's ``OneCycleLR`` stepped once an epoch: it sets the
SGD momentum of every epoch too, which it cycles from 0.95 to 0.85 and back whatever ``optim.momentum`` says.

Linear warm-up (``schedule.warmup_epochs``, off by default) runs per step over ``W = round(warmup_epochs *
steps_per_epoch)`` steps: step ``t`` of the run (counted from 0 over all epochs) with ``t < W`` runs at
``lr * (t + 1) / W``. After it the schedule takes over: cosine anneals over the remaining steps,
``lr * (1 + cos(pi * (t - W) / (T - W))) / 2`` with ``T = epochs * steps_per_epoch``; multistep runs at its own
rate (the milestones stay where they are). With ``W = 0`` both are the formulas above.

With ``optim.decay_norm_and_bias`` off the optimizer has two parameter groups: the weights of two or more
dimensions with ``weight_decay``, the 1-d ones (BN's scale and shift, biases) with none; with
``optim.decay_bias`` too, the biases stay in the first group and only the normalisation layers' parameters go
without (DM-Improves-AT's ``group_weight``); on (the paper's), it keeps one group over every parameter.
"""

from __future__ import annotations

import math

import torch

from wrn.train.config import OptimSection, ScheduleSection

_NORMS = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)


def parameter_groups(model: torch.nn.Module, optim: OptimSection):
    """``model.parameters()`` (one group), or with ``decay_norm_and_bias`` off two groups: weights of two or
    more dimensions, then the 1-d parameters with ``weight_decay`` 0; with ``decay_bias`` the second group holds
    the normalisation layers' parameters only (each group in the order of ``model.parameters()``)."""
    if optim.decay_norm_and_bias:
        return model.parameters()
    params = list(model.parameters())
    if optim.decay_bias:
        norm = {id(p) for m in model.modules() if isinstance(m, _NORMS) for p in m.parameters(recurse=False)}
        exempt = [id(p) in norm for p in params]
    else:
        exempt = [p.ndim <= 1 for p in params]
    return [
        {"params": [p for p, e in zip(params, exempt, strict=True) if not e]},
        {"params": [p for p, e in zip(params, exempt, strict=True) if e], "weight_decay": 0.0},
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
    if schedule.name == "cosinew":  # one rate an epoch
        return cosinew(base_lr, epoch, schedule.epochs)[0]
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


# DM-Improves-AT's cosinew (core/utils/train.py lines 92-94): OneCycleLR(optimizer, max_lr=lr, pct_start=0.025,
# total_steps=epochs) with torch's other defaults (cosine annealing, div_factor 25, final_div_factor 1e4,
# cycle_momentum with base_momentum 0.85 and max_momentum 0.95), stepped after each epoch (watrain.py 136-137).
COSINEW_PCT_START = 0.025
COSINEW = {"div_factor": 25.0, "final_div_factor": 1e4, "base_momentum": 0.85, "max_momentum": 0.95}


def cosinew(base_lr: float, epoch: int, epochs: int) -> tuple[float, float]:
    """(lr, momentum) of 1-indexed ``epoch`` of ``epochs`` under cosinew: torch's ``OneCycleLR.get_lr`` at step
    ``epoch - 1`` of ``total_steps = epochs``, term for term: a cosine from ``lr / 25`` (momentum 0.95) up to
    ``lr`` (0.85) at step ``0.025 epochs - 1``, then down to ``lr / 25 / 1e4`` (0.95) at the last. Where the
    first phase has no length (40 epochs; torch divides by zero there) the step takes the peak."""
    initial = base_lr / COSINEW["div_factor"]
    lowest = initial / COSINEW["final_div_factor"]
    low_m, high_m = COSINEW["base_momentum"], COSINEW["max_momentum"]
    phases = (
        (float(COSINEW_PCT_START * epochs) - 1, initial, base_lr, high_m, low_m),
        (epochs - 1, base_lr, lowest, low_m, high_m),
    )
    step, start = epoch - 1, 0.0
    for i, (end, lr_from, lr_to, m_from, m_to) in enumerate(phases):
        if step <= end or i == len(phases) - 1:
            pct = (step - start) / (end - start) if end != start else 1.0
            return _cos_anneal(lr_from, lr_to, pct), _cos_anneal(m_from, m_to, pct)
        start = end
    raise AssertionError("unreachable")


def _cos_anneal(start: float, end: float, pct: float) -> float:
    """torch's ``OneCycleLR._annealing_cos``."""
    cos_out = math.cos(math.pi * pct) + 1
    return end + (start - end) / 2.0 * cos_out


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

    def warmup_length(self) -> float:
        """The lr warm-up's length in steps: cosinew's first phase as DM-Improves-AT counts it (``0.025 x epochs
        x steps per epoch``, watrain.py line 51, a float), else ``--warmup-epochs`` in steps (0: none)."""
        if self.schedule.name == "cosinew":
            return COSINEW_PCT_START * self.schedule.epochs * self.steps_per_epoch
        return float(warmup_steps(self.schedule, self.steps_per_epoch))

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int, step: int) -> float:
        if step == 0 and self.schedule.reset_momentum and is_drop_epoch(self.schedule, epoch):
            reset_momentum(optimizer)
        lr = self.lr(epoch, step)
        set_lr(optimizer, lr)
        if self.schedule.name == "cosinew":  # OneCycleLR's cycle_momentum
            momentum = cosinew(self.base_lr, epoch, self.schedule.epochs)[1]
            for group in optimizer.param_groups:
                group["momentum"] = momentum
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
    if schedule.name == "cosinew":
        rates = [cosinew(base_lr, e, schedule.epochs)[0] for e in range(1, schedule.epochs + 1)]
        peak = max(range(len(rates)), key=rates.__getitem__)
        return (
            f"lr {base_lr:g} by cosinew over {epochs_text(schedule.epochs)} (one rate an epoch: {rates[0]:.3g} "
            f"at the first, {rates[peak]:.3g} at epoch {peak + 1}, {rates[-1]:.3g} at the last; momentum "
            "0.95 to 0.85 and back)"
        )
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
        parts.append("no weight decay on BN" + ("" if optim.decay_bias else " and biases"))
    if optim.ema_decay:
        rule = " (after the lr warm-up, (1 + d) / (10 + d))" if optim.ema_warmup_rule == "gowal" else ""
        parts.append(
            f"EMA {optim.ema_decay:g}"
            + (f" with warm-up{rule}" if optim.ema_warmup else "")
            + (" (BN statistics copied)" if optim.ema_buffers == "copy" else "")
        )
    return "".join(f", {p}" for p in parts)
