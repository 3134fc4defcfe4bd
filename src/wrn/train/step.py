"""One training step: Cutout's holes, the objective's batch and loss (:mod:`wrn.train.objectives`: the
cross-entropy, mixup/CutMix's soft targets, ...), forward under autocast, backward (twice with SAM,
:mod:`wrn.train.sam`, around any objective; at the adversarially perturbed weights with AWP,
:mod:`wrn.train.awp`), gradient-norm clipping, update, the average of the weights (EMA).

The same :class:`TrainStep` runs inside ``wrn train`` and ``wrn bench train``, so the benchmark measures the
step the training loop really takes. Nothing in it reads a value back to the host: the loss and logits it
returns stay on the device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from wrn.train.awp import AWP
    from wrn.train.cutout import Cutout
    from wrn.train.ema import WeightEMA
    from wrn.train.sam import SAM

from wrn.train.objectives.base import Criterion, Objective
from wrn.train.precision import autocast
from wrn.train.replicas import replica_gradient


@dataclass
class Forward:
    """The step's forward pass: ``forward(images)`` is ``net``'s float32 logits of ``images``, in channels_last
    and under autocast as configured. What an objective calls (``forward.net``: the network, for its mode)."""

    net: torch.nn.Module
    device: torch.device
    amp: str = "off"
    channels_last: bool = False

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.amp):
            logits = self.net(images)
        return logits.float()


class TrainStep:
    """``step(images, labels) -> (loss, logits)``: one optimizer step of ``net`` on a batch.

    ``amp`` is 'off', 'bf16' or 'fp16' (fp16 scales the loss with a grad scaler, ``self.scaler``);
    ``channels_last`` converts the images to that memory format (the model must be converted already).
    ``cutout`` (a :class:`~wrn.train.cutout.Cutout`) cuts its holes into the batch first, then ``objective``
    (a :class:`~wrn.train.objectives.base.Objective`, or a loss function such as ``nn.CrossEntropyLoss()``)
    makes the batch it is trained on and its loss; ``ema`` (a
    :class:`~wrn.train.ema.WeightEMA`) is updated after every optimizer step (not after one the fp16 grad
    scaler skipped). ``sam`` (a :class:`~wrn.train.sam.SAM`) takes the gradient at the SAM-perturbed weights;
    ``grad_clip`` > 0 clips the gradient's global norm before the update. ``replica_batch`` > 0 smaller than
    the batch takes the gradient slice by slice, as on that many accelerators (:mod:`wrn.train.replicas`: BN
    and SAM's ascent per slice, the mean of their gradients). ``awp`` (a :class:`~wrn.train.awp.AWP`)
    perturbs the weights against the objective's loss on the prepared batch before the loss is taken, and
    takes the perturbation away after the update (before the EMA's); it reads ``self.epoch``, the epoch
    (from 1) the loop is in, for its warm-up (``None``, a benchmark's step: past it). All off by default.
    The returned loss (the batch mean, float32) and logits (float32) are detached and stay on the device;
    with SAM they are the first pass's, at the weights before the step.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        objective: Objective | Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        *,
        device: torch.device,
        amp: str = "off",
        channels_last: bool = False,
        cutout: Cutout | None = None,
        ema: WeightEMA | None = None,
        sam: SAM | None = None,
        grad_clip: float = 0.0,
        replica_batch: int = 0,
        awp: AWP | None = None,
    ) -> None:
        self.net = net
        self.optimizer = optimizer
        self.objective = objective if isinstance(objective, Objective) else Criterion(objective)
        self.device = torch.device(device)
        self.amp = amp
        self.channels_last = bool(channels_last)
        self.forward = Forward(net, self.device, amp, self.channels_last)
        self.counted: torch.Tensor | None = None
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")
        self.cutout = cutout
        self.ema = ema
        self.sam = sam
        self.grad_clip = float(grad_clip)
        self.replica_batch = int(replica_batch)
        self.awp = awp
        self.epoch: int | None = None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cutout is not None:
            images = self.cutout(images)
        batch = self.objective.prepare(self.forward, images, labels)
        self.counted = batch.labels  # what the training accuracy of this step counts
        moved = self.awp.perturb(self.objective, batch, self.epoch) if self.awp is not None else None

        def loss_fn() -> tuple[torch.Tensor, torch.Tensor]:
            return self.objective.loss(self.forward, batch)

        if 0 < self.replica_batch < len(batch.labels):  # slices with their own BN (and SAM ascent)
            loss, logits = replica_gradient(
                self.net,
                self.optimizer,
                lambda part: self.objective.loss(self.forward, part),
                batch,
                self.replica_batch,
                sam=self.sam,
                scaler=self.scaler,
            )
        elif self.sam is not None:  # (never under fp16: the config refuses it)
            loss, logits = self.sam.gradient(self.net, self.optimizer, loss_fn)
        else:
            loss, logits = loss_fn()
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler.is_enabled():
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
        skipped = self._update()
        if self.awp is not None:
            self.awp.restore(moved)
        if self.ema is not None:
            self.ema.update(skipped)
        return loss.detach(), logits.detach()

    def _update(self) -> torch.Tensor | None:
        """Clip (when asked) and step. Under fp16 returns a device flag, true when the grad scaler skipped the
        step for an inf/NaN gradient (the EMA then stays as it is), read with no host sync; else ``None``."""
        fp16 = self.scaler.is_enabled()
        if fp16:
            self.scaler.unscale_(self.optimizer)
        norm = None
        if self.grad_clip or (fp16 and self.ema is not None):
            params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            if self.grad_clip:
                norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
            else:
                norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if fp16:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return None if norm is None else ~torch.isfinite(norm)
        self.optimizer.step()
        return None


def compile_net(net: torch.nn.Module, mode: str = "default") -> torch.nn.Module:
    """``torch.compile(net)`` in one of ``run.compile_mode``'s modes ("default" is torch's own default)."""
    return torch.compile(net, mode=None if mode == "default" else mode)
