"""Early stopping on robust accuracy (``adv.holdout``), as locuslab/robust_overfitting's ``train_cifar.py
--val`` runs it (Rice et al. 2020, "Overfitting in adversarially robust deep learning"): training images held
out of training (:func:`wrn.data.loaders.holdout_indices`) are attacked after every epoch, with the network in
eval mode, by PGD at the training attack's radius and step with one random start; the weights of the epoch of
the highest robust accuracy so far are kept in ``RUN/best/`` (a model directory beside the last model), and
model.json names both. ``adv.holdout_rule`` ``dm`` judges as DM-Improves-AT's ``train-wa.py`` does instead (lines
121-127; ``watrain.py`` 40-41, ``eval``): PGD of 4 x the training attack's steps on the CW margin loss, the
best epoch the last of equal ones (``>=``). ``awp`` judges as AT-AWP's CIFAR-100 code does (csdongxian/AWP,
``AT_AWP/train_cifar100.py`` lines 325-338 and 364-372): the first N images of the **test** set (its 10,000
there; nothing is held out of training), PGD-20 (``--attack-iters-test``) at the training radius and step on
the cross-entropy, one random start, the best epoch the first of equal ones (``>``). That chooses the epoch on
the test set; the released AT-AWP CIFAR-100 network and its RobustBench entry were chosen so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from wrn.attacks import PixelScale, margin_loss, pgd
from wrn.seeds import stream_seed
from wrn.train import distributed as D
from wrn.train.rundir import BEST

AWP_TEST_STEPS = 20  # AT_AWP/train_cifar100.py's --attack-iters-test


@dataclass(frozen=True)
class Rule:
    """How ``adv.holdout_rule`` picks the best epoch: the attack's steps (from the training attack's), its loss
    (the CW margin or the cross-entropy), whether a tie goes to the later epoch, and what model.json says."""

    steps: Callable[[int], int]
    margin_loss: bool
    later_wins_ties: bool
    selected_by: str  # formatted with n (the images) and steps


RULES = {
    "rice": Rule(lambda k: k, False, False, "robust accuracy of the held-out training images under PGD at the "
                 "training attack's budget (Rice et al. 2020)"),
    "dm": Rule(lambda k: 4 * k, True, True, "robust accuracy of the held-out training images under PGD-{steps} "
               "on the CW margin loss, the last of equal epochs (DM-Improves-AT)"),
    "awp": Rule(lambda k: AWP_TEST_STEPS, False, False, "robust accuracy of the first {n} TEST images under "
                "PGD-{steps}, the first of equal epochs (AT-AWP's CIFAR-100 code): chosen on the test set"),
}  # fmt: skip


def holdout_images(n: int, rule: str) -> str:
    """The images the best epoch is picked on, in words: ``the 1000 held-out images``, or with rule ``awp``
    ``the first 10000 test images``."""
    return f"the first {n} test images" if rule == "awp" else f"the {n} held-out images"


class HoldoutSelection:
    """The held-out images' clean and robust accuracy after each epoch, and the best epoch so far."""

    def __init__(self, loader, cfg, device: torch.device, dist: D.DistInfo) -> None:
        from wrn.train.objectives import adversary_budget

        self.loader, self.cfg, self.device, self.dist = loader, cfg, device, dist
        self.budget = adversary_budget(cfg.adv)
        self.rule = RULES[cfg.adv.holdout_rule]
        self.steps = self.rule.steps(self.budget["steps"])
        self.best_acc: float | None = None
        self.best_epoch = 0

    def evaluate(self, model: torch.nn.Module, epoch: int) -> dict[str, float]:
        """Clean and robust accuracy (percent) of ``model`` on the held-out images, summed over the processes;
        the attack's starts drawn from the run's ``holdout`` stream for this epoch and process."""
        start = time.perf_counter()
        was = model.training
        model.eval()
        generator = torch.Generator(self.device).manual_seed(
            stream_seed(self.cfg.run.seed, "holdout", epoch, self.dist.rank)
        )
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        scale = None
        for images, labels in self.loader:
            images, labels = images.to(self.device), labels.to(self.device)
            scale = scale or PixelScale.of(self.cfg.dataset.normalization, images.shape[1], self.device)
            x = scale.pixels(images)

            def on_pixels(z: torch.Tensor, scale=scale) -> torch.Tensor:
                return model(scale.normalised(z)).float()

            adv = pgd(on_pixels, x, labels, eps=self.budget["eps"], step_size=self.budget["step_size"],
                      steps=self.steps, generator=generator,
                      loss_fn=margin_loss if self.rule.margin_loss else None)  # fmt: skip
            with torch.no_grad():
                clean = (on_pixels(x).argmax(1) == labels).sum()
                robust = (on_pixels(adv).argmax(1) == labels).sum()
            sums += torch.stack([clean, robust, torch.tensor(len(labels), device=self.device)]).double()
        D.all_reduce_sum(self.dist, sums)
        model.train(was)
        clean, robust, n = sums.tolist()
        return {"holdout_acc": 100 * clean / n, "holdout_robust_acc": 100 * robust / n,
                "holdout_time": time.perf_counter() - start}  # fmt: skip

    def improved(self, record: dict[str, Any], epoch: int) -> bool:
        """Whether the epoch's robust accuracy beats every earlier one (Rice et al.'s ``>``: ties keep the earlier;
        DM-Improves-AT's ``>=``: the later)."""
        acc = record["holdout_robust_acc"]
        later = self.rule.later_wins_ties
        if self.best_acc is not None and (acc < self.best_acc if later else acc <= self.best_acc):
            return False
        self.best_acc, self.best_epoch = acc, epoch
        return True

    def describe(self) -> dict[str, Any]:
        """What model.json says of the best epoch."""
        selected_by = self.rule.selected_by.format(n=self.cfg.adv.holdout, steps=self.steps)
        return {
            "path": BEST,
            "epoch": self.best_epoch,
            "holdout_robust_acc": self.best_acc,
            "holdout": self.cfg.adv.holdout,
            "selected_by": selected_by,
        }

    def images(self) -> str:
        """The images the best epoch is picked on, in words."""
        return holdout_images(self.cfg.adv.holdout, self.cfg.adv.holdout_rule)

    def state_dict(self) -> dict[str, Any]:
        return {"best_acc": self.best_acc, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_acc, self.best_epoch = state["best_acc"], state["best_epoch"]


__all__ = ["HoldoutSelection"]
