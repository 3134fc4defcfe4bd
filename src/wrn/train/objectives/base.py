"""What a training step asks for the loss of a batch: an :class:`Objective`, and the paper's cross-entropy.

The step (:class:`~wrn.train.step.TrainStep`) calls an objective twice per batch:

1. ``prepare(forward, images, labels) -> Batch``: everything drawn once per step. Here mixup/CutMix mix the
   batch and give soft targets (:class:`~wrn.train.mixing.Mixing`); an objective may also make its own inputs
   (an attack run with ``forward``, the network in the mode its method says) or take batches of a loader of
   its own (unlabelled data).
2. ``loss(forward, batch) -> (loss, logits)``: the forward pass and the loss, deterministic given the batch
   (SAM calls it twice, at ``w`` and at ``w + e``, with the same dropout masks).

``forward(images)`` is the step's forward: channels_last, autocast, the network (DDP / compiled), float32
logits; ``forward.net`` is the network, for an objective that switches its mode. The returned loss is the
batch mean (float32) and the logits are the batch's (float32), on the device; nothing is read back. An
objective with state (generators, a loader's position) returns it from ``state_dict()``: it is saved per
process in the run's checkpoint and restored on resume.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from wrn.seeds import stream_seed


class Forward(Protocol):
    net: torch.nn.Module

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


@dataclass
class Batch:
    images: torch.Tensor  # what the network is fed
    targets: torch.Tensor  # class indices, or soft labels (N, classes)
    labels: torch.Tensor  # the class indices the training accuracy counts


@dataclass(frozen=True)
class Context:
    """What an objective is built with: the run's config, the data's classes, this process's device, rank and
    number of processes, and the loader of unlabelled images where the run has one."""

    cfg: Any  # wrn.train.config.TrainConfig
    num_classes: int | None  # None: a model that does not say (one not built by wrn)
    device: torch.device
    rank: int = 0
    world_size: int = 1
    unlabelled: Any = None  # the loader of unlabelled images (semi-supervised training), or None

    def seed(self, stream: str, *where: int) -> int:
        """The seed of one of the run's random streams (:func:`wrn.seeds.stream_seed`), for this process."""
        return stream_seed(self.cfg.run.seed, stream, self.rank, *where)


class Objective:
    """The loss of a batch. The base class mixes the batch when mixup/CutMix are on (``dataset.mixup``,
    ``dataset.cutmix``) and takes :meth:`criterion` of the logits and the (soft) targets; a subclass
    overrides :meth:`criterion`, or :meth:`prepare` and :meth:`loss` for a step of another shape."""

    def __init__(self, ctx: Context) -> None:
        from wrn.train.mixing import Mixing

        data = ctx.cfg.dataset
        self.mixing = None
        if data.mixup or data.cutmix:
            self.mixing = Mixing(data.mixup, data.cutmix, ctx.num_classes, ctx.seed("mixing"))

    def prepare(self, forward: Forward, images: torch.Tensor, labels: torch.Tensor) -> Batch:
        if self.mixing is None:
            return Batch(images, labels, labels)
        mixed, soft = self.mixing(images, labels)
        return Batch(mixed, soft, self.mixing.dominant)

    def loss(self, forward: Forward, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        logits = forward(batch.images)
        return self.criterion(logits, batch.targets), logits

    def criterion(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"mixing": self.mixing.state_dict()} if self.mixing is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.mixing is not None:
            self.mixing.load_state_dict(state["mixing"])


class Wrapping(Objective):
    """An objective that wraps the run's (``inner``), as adversarial and semi-supervised training do: it makes
    its own batches and adds its own terms, and takes the inner objective's :meth:`criterion`; its state holds
    the inner's (``"inner"``) beside its own (:meth:`own_state`, restored by :meth:`load_own_state`)."""

    def __init__(self, inner: Objective) -> None:
        self.inner = inner
        self.mixing = None  # (the config refuses mixup / CutMix with a wrapping objective)

    def criterion(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.inner.criterion(logits, targets)

    def own_state(self) -> dict[str, Any]:
        return {}

    def load_own_state(self, state: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), **self.own_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state["inner"])
        self.load_own_state(state)


class CrossEntropy(Objective):
    """The paper's loss: cross-entropy, with ``optim.label_smoothing`` (torch's ``CrossEntropyLoss``, which
    takes class indices or soft labels)."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.smoothing = float(ctx.cfg.optim.label_smoothing)
        self._loss: Callable = torch.nn.CrossEntropyLoss(label_smoothing=self.smoothing)

    def criterion(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self._loss(logits, targets)


class Criterion(Objective):
    """Any loss function ``criterion(logits, labels)`` (e.g. ``torch.nn.CrossEntropyLoss()``) as an objective:
    what :class:`~wrn.train.step.TrainStep` makes of a loss function it is given."""

    def __init__(self, criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.mixing = None
        self._criterion = criterion

    def criterion(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self._criterion(logits, targets)


__all__ = ["Batch", "Context", "Criterion", "CrossEntropy", "Forward", "Objective", "Wrapping"]
