"""When a run stops or checkpoints in the middle of an epoch: signals, the time and step triggers, and the
agreement of all processes under DDP (every :data:`DIST_SYNC_EVERY` steps, one collective)."""

from __future__ import annotations

import signal
import time

import torch

from wrn.train import distributed as D
from wrn.train.signals import Signals

# Under DDP, ranks agree every this many steps on stopping (signal), time-based checkpoints and bad losses.
DIST_SYNC_EVERY = 10


class CheckpointPolicy:
    """``decide(global_step, bad)`` after each step: ``(stop, save, bad)``.

    ``stop``: a signal arrived (on any rank); ``save``: ``run.checkpoint_every_steps`` steps or
    ``run.checkpoint_every_minutes`` passed since the last checkpoint; ``bad``: some rank saw a non-finite
    loss (under DDP only; a single process reads its own flag). :meth:`saved` restarts both triggers.
    """

    def __init__(self, run_cfg, dist_info: D.DistInfo, device: torch.device, signals: Signals) -> None:
        self.every_steps = run_cfg.checkpoint_every_steps
        self.every_minutes = run_cfg.checkpoint_every_minutes
        self.dist = dist_info
        self.device = device
        self.signals = signals
        self.saved()

    def saved(self) -> None:
        self.last_save = time.monotonic()
        self.steps_since_save = 0

    def step(self) -> None:
        self.steps_since_save += 1

    def _by_time(self) -> bool:
        return (
            self.every_minutes is not None and time.monotonic() - self.last_save >= 60.0 * self.every_minutes
        )

    def decide(self, global_step: int, bad: torch.Tensor) -> tuple[bool, bool, bool]:
        by_steps = self.every_steps is not None and self.steps_since_save >= self.every_steps
        stop = self.signals.signum is not None
        if not self.dist.enabled:
            return stop, by_steps or self._by_time(), False
        if global_step % DIST_SYNC_EVERY:
            return False, by_steps, False  # steps are counted alike on every rank
        flags = torch.tensor(
            [int(stop), int(self._by_time() and self.dist.is_main), int(bool(bad.item()))], device=self.device
        )
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        stop, by_time, any_bad = (bool(v) for v in flags.tolist())
        if stop and self.signals.signum is None:
            self.signals.signum = signal.SIGTERM  # another rank got it
        return stop, by_steps or by_time, any_bad

    def stop_everywhere(self) -> bool:
        """At an epoch's end: whether a signal arrived on any rank (a collective under DDP)."""
        stop = D.any_rank(self.dist, self.signals.signum is not None, self.device)
        if stop and self.signals.signum is None:
            self.signals.signum = signal.SIGTERM  # another rank got it
        return stop
