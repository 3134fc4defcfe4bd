"""Adversarial training (``--adv``): the run's objective trained on the examples of an attack made inside the
step, each method as its code runs it (``docs/robustness.md`` names every line followed and every difference).

The data pipeline hands the step normalised images; the attack acts on pixels in [0, 1], through the
normalisation (:meth:`Adversarial.pixels` and :meth:`Adversarial.normalised`), with the radius and steps on the
pixel scale, as the methods' code (which normalises inside the model, or not at all) does. Each method wraps
the run's objective (:mod:`wrn.train.objectives`): cross-entropy with label smoothing, or another loss.
The attack's random start comes from a generator of the objective's own, saved in the run's checkpoint, so
that a resumed run draws the same starts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from wrn.attacks import PixelScale, pgd, trades_attack
from wrn.models.layers import bn_set
from wrn.train.objectives.base import Batch, Context, Forward, Objective, Wrapping


@contextlib.contextmanager
def _attack_mode(net: torch.nn.Module, training: bool):
    """The network in the mode the method's attack runs it in, and, under DDP, with no gradient reduction
    prepared for the attack's passes (they differentiate the images only); the mode restored after."""
    was = net.training
    net.train(training)
    ddp = getattr(net, "_orig_mod", net)  # (torch.compile wraps DDP)
    quiet = (
        ddp.no_sync()
        if isinstance(ddp, torch.nn.parallel.DistributedDataParallel)
        else contextlib.nullcontext()
    )
    try:
        with quiet:
            yield
    finally:
        net.train(was)


class Adversarial(Wrapping):
    """The common part: the wrapped objective, the pixel scale and the attack's generator."""

    def __init__(self, inner: Objective, ctx: Context) -> None:
        from wrn.train.objectives import adversary_budget

        super().__init__(inner)
        budget = adversary_budget(ctx.cfg.adv)
        self.eps, self.steps, self.step_size = (
            float(budget["eps"]),
            int(budget["steps"]),
            float(budget["step_size"]),
        )
        self.generator = torch.Generator(ctx.device).manual_seed(ctx.seed("adversary"))
        self._normalization = ctx.cfg.dataset.normalization
        self._scale: PixelScale | None = None  # (built at the first batch: its channels and device)

    def _pixel_scale(self, images: torch.Tensor) -> PixelScale:
        if self._scale is None:
            self._scale = PixelScale.of(self._normalization, images.shape[1], images.device)
        return self._scale

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """The normalised images of the pipeline as pixels in [0, 1]."""
        return self._pixel_scale(images).pixels(images)

    def normalised(self, x: torch.Tensor) -> torch.Tensor:
        return self._pixel_scale(x).normalised(x)

    def on_pixels(self, forward: Forward):
        return lambda x: forward(self.normalised(x))

    def own_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_own_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"].cpu())


class PGDTraining(Adversarial):
    """PGD adversarial training as robust_overfitting's ``train_cifar.py`` runs it (``--attack pgd``): the
    network stays in training mode for the attack (its BN normalises each attack pass over the batch and
    updates its running statistics with it), one random start uniform in the ball, the attack's steps, the
    restart's loss pass, then the objective on the adversarial images."""

    def prepare(self, forward: Forward, images: torch.Tensor, labels: torch.Tensor) -> Batch:
        x = self.pixels(images)
        with _attack_mode(forward.net, training=True):
            adv = pgd(self.on_pixels(forward), x, labels, eps=self.eps, step_size=self.step_size,
                      steps=self.steps, generator=self.generator)  # fmt: skip
        return Batch(self.normalised(adv).to(images.dtype), labels, labels)


@dataclass
class TradesBatch(Batch):
    natural: torch.Tensor  # the clean (normalised) images; ``images`` are the adversarial ones


class TRADES(Adversarial):
    """TRADES as ``trades.py`` trains (``trades_loss``): the attack with the network in eval mode, up the KL
    divergence from the clean prediction; then, in training mode, the objective on the clean images plus
    ``beta`` x KL(prediction at the adversarial images || at the clean ones) averaged over the batch, with
    their three passes (clean, adversarial, clean again for the KL's target: BN's running statistics see the
    clean batch twice, as theirs do). The training accuracy counts the clean predictions.

    With AWP (``--awp``) the passes are in the order of csdongxian/AWP's ``train_trades_cifar.py``, which
    trains TRADES-AWP: adversarial, clean for the KL's target, clean for the objective (the same loss and
    gradient; BN's running statistics see the passes in their order)."""

    def __init__(self, inner: Objective, ctx: Context) -> None:
        super().__init__(inner, ctx)
        self.beta = float(ctx.cfg.adv.trades_beta)
        self.adversarial_first = bool(ctx.cfg.adv.awp)

    def prepare(self, forward: Forward, images: torch.Tensor, labels: torch.Tensor) -> Batch:
        x = self.pixels(images)
        with _attack_mode(forward.net, training=False):
            adv = trades_attack(self.on_pixels(forward), x, eps=self.eps, step_size=self.step_size,
                                steps=self.steps, generator=self.generator)  # fmt: skip
        return TradesBatch(self.normalised(adv).to(images.dtype), labels, labels, natural=images)

    def loss(self, forward: Forward, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        assert isinstance(batch, TradesBatch)
        if self.adversarial_first:  # train_trades_cifar.py of TRADES-AWP
            adversarial, target = forward(batch.images), forward(batch.natural)
            logits = forward(batch.natural)
        else:  # trades.py
            logits = forward(batch.natural)
            adversarial, target = forward(batch.images), forward(batch.natural)
        natural = self.criterion(logits, batch.targets)
        robust = F.kl_div(F.log_softmax(adversarial, dim=1), F.softmax(target, dim=1),
                          reduction="sum") / len(batch.labels)  # fmt: skip
        return natural + self.beta * robust, logits


class TRADESGowal(TRADES):
    """TRADES as Gowal et al.'s PyTorch port trains it (imrahulr/adversarial_robustness_pytorch,
    ``gowal21uncovering/utils/trades.py`` ``trades_loss``, which DM-Improves-AT keeps): the attack with the
    network in training mode, BN normalising each pass with the batch's statistics and leaving its running
    statistics as they are (``track_bn_stats(model, False)``), from a start uniform in the ball and clamped to
    [0, 1], up the KL divergence from the clean prediction made the same way; then, BN's statistics tracked
    again, two passes, clean then adversarial: the objective (their label-smoothed cross-entropy) on the clean
    logits plus ``beta`` x KL(adversarial || clean) averaged over the batch, the clean softmax not detached.
    The training accuracy counts the clean predictions."""

    def prepare(self, forward: Forward, images: torch.Tensor, labels: torch.Tensor) -> Batch:
        x = self.pixels(images)
        with _attack_mode(forward.net, training=True), bn_set(forward.net, "track_running_stats", False):
            noise = torch.empty_like(x).uniform_(-self.eps, self.eps, generator=self.generator)
            adv = trades_attack(self.on_pixels(forward), x, eps=self.eps, step_size=self.step_size,
                                steps=self.steps, start=(x + noise).clamp(0, 1))  # fmt: skip
        return TradesBatch(self.normalised(adv).to(images.dtype), labels, labels, natural=images)

    def loss(self, forward: Forward, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        assert isinstance(batch, TradesBatch)
        logits, adversarial = forward(batch.natural), forward(batch.images)
        natural = self.criterion(logits, batch.targets)
        robust = F.kl_div(F.log_softmax(adversarial, dim=1), F.softmax(logits, dim=1),
                          reduction="sum") / len(batch.labels)  # fmt: skip
        return natural + self.beta * robust, logits


__all__ = ["Adversarial", "PGDTraining", "TRADES", "TRADESGowal", "TradesBatch"]
