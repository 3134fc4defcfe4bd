"""The training metrics of one epoch, summed on the device, read back to the host once every N steps.

The training step's loss and logits stay on the device; :meth:`EpochMeter.update` adds the batch's summed
loss, its correct count and a "some loss was not finite" flag to device tensors, so that a step never waits
for the host. :meth:`EpochMeter.read` is the one host sync: the training loop calls it every
``run.log_every_steps`` steps (the NaN check and the per-step TensorBoard scalars), and the progress display
calls it when it redraws.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Reading:
    """What one read-back of an :class:`EpochMeter` found."""

    bad: bool  # some loss of the epoch so far was NaN or infinite
    loss_sum: float  # the summed loss of the epoch so far
    correct: int  # correct predictions of the epoch so far
    seen: int  # images of the epoch so far
    step_loss: float | None  # the mean loss since the previous read-back
    images_per_s: float | None  # since the previous read-back

    @property
    def loss(self) -> float | None:
        return self.loss_sum / self.seen if self.seen else None

    @property
    def acc(self) -> float | None:
        return 100.0 * self.correct / self.seen if self.seen else None


class EpochMeter:
    """Device-side sums of one epoch: loss (float64), correct count (int64), the non-finite flag; the number
    of images and the training time on the host."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.correct = torch.zeros((), dtype=torch.int64, device=self.device)
        self.bad = torch.zeros((), dtype=torch.bool, device=self.device)
        self.seen = 0
        self.train_time = 0.0
        self._last = (time.perf_counter(), 0, 0.0)  # the previous read-back: (time, images, loss sum)

    def update(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one batch: ``loss`` is its mean, ``logits`` and ``labels`` its predictions and targets."""
        n = labels.shape[0]
        self.loss_sum += loss.double() * n
        self.correct += (logits.argmax(1) == labels).sum()
        self.bad |= ~torch.isfinite(loss)
        self.seen += n

    def _sums(self) -> tuple[float, float, float]:
        """One host sync: (non-finite flag, loss sum, correct count) of the epoch so far."""
        bad, loss_sum, correct = torch.stack(
            [self.bad.double(), self.loss_sum, self.correct.double()]
        ).tolist()
        return bad, loss_sum, correct

    def means(self) -> tuple[float | None, float | None]:
        """The epoch's mean loss and accuracy (%) so far (one host sync); ``None`` before its first batch."""
        if not self.seen:
            return None, None
        _, loss_sum, correct = self._sums()
        return loss_sum / self.seen, 100.0 * correct / self.seen

    def read(self, world_size: int = 1) -> Reading:
        """One host sync: the sums so far, and the mean loss and images/s since the previous read-back."""
        bad, loss_sum, correct = self._sums()
        now = time.perf_counter()
        then, seen_before, loss_before = self._last
        images = self.seen - seen_before
        self._last = (now, self.seen, loss_sum)
        return Reading(
            bad=bool(bad),
            loss_sum=loss_sum,
            correct=int(correct),
            seen=self.seen,
            step_loss=(loss_sum - loss_before) / images if images > 0 else None,
            images_per_s=images * world_size / (now - then) if images > 0 and now > then else None,
        )

    def totals(self) -> torch.Tensor:
        """``[loss sum, correct, images]`` as one float64 device tensor (for a sum over processes)."""
        sums = torch.stack([self.loss_sum, self.correct.double()]).double()
        return torch.cat([sums, torch.tensor([float(self.seen)], dtype=torch.float64, device=self.device)])

    def state_dict(self) -> dict[str, Any]:
        return {
            "loss_sum": self.loss_sum.detach().cpu(),
            "correct": self.correct.detach().cpu(),
            "seen": self.seen,
            "train_time": self.train_time,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss_sum = state["loss_sum"].to(self.device)
        self.correct = state["correct"].to(self.device)
        self.seen = int(state["seen"])
        self.train_time = float(state["train_time"])
        self._last = (time.perf_counter(), self.seen, float(self.loss_sum))
