"""mixup (Zhang et al., "mixup: Beyond Empirical Risk Minimization", 2018) and CutMix (Yun et al., "CutMix:
Regularization Strategy to Train Strong Classifiers with Localizable Features", 2019), per batch on the device,
with the arithmetic of torchvision's ``transforms.v2.MixUp`` and ``CutMix``: each image is mixed with the one
before it in the batch (``roll(1, 0)``), ``lam ~ Beta(alpha, alpha)``; CutMix pastes a box of side
``sqrt(1 - lam)`` times the image's, centred anywhere and clipped at the border, and mixes the labels by the
area it really pasted. With both on, each batch takes one of them with probability 1/2 (torchvision's
``RandomChoice``). The loss is taken on the soft labels.

The few numbers a batch needs (which of the two, ``lam``, the box's centre) are drawn on the host from the
mixer's own numpy generator, whose state is part of the run's checkpoint; nothing is read back from the device.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.nn.functional import one_hot


class Mixing:
    """``mixing(images, labels) -> (images, soft_labels)``; :attr:`dominant` then holds each mixed target's
    larger part (what the training accuracy counts). ``mixup`` and ``cutmix`` are the alphas (0: off)."""

    def __init__(self, mixup: float, cutmix: float, num_classes: int, seed: int) -> None:
        if mixup <= 0 and cutmix <= 0:
            raise ValueError("mixing needs a mixup or a CutMix alpha above 0")
        self.mixup, self.cutmix = float(mixup), float(cutmix)
        self.num_classes = int(num_classes)
        self.rng = np.random.default_rng(seed)
        self.dominant: torch.Tensor | None = None

    def draw(self, h: int, w: int) -> tuple[float, tuple[int, int, int, int] | None]:
        """One batch's ``lam`` (the weight of each image's own label) and CutMix's box (x1, y1, x2, y2), or
        ``None`` for mixup."""
        use_cutmix = self.cutmix > 0 and (self.mixup <= 0 or self.rng.random() >= 0.5)
        # a float32 sample, as torchvision's Beta gives
        lam = float(np.float32(self.rng.beta(*(2 * [self.cutmix if use_cutmix else self.mixup]))))
        if not use_cutmix:
            return lam, None
        r_x, r_y = int(self.rng.integers(w)), int(self.rng.integers(h))
        r = 0.5 * math.sqrt(1.0 - lam)
        r_w_half, r_h_half = int(r * w), int(r * h)
        x1, y1 = max(r_x - r_w_half, 0), max(r_y - r_h_half, 0)
        x2, y2 = min(r_x + r_w_half, w), min(r_y + r_h_half, h)
        return 1.0 - (x2 - x1) * (y2 - y1) / (w * h), (x1, y1, x2, y2)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lam, box = self.draw(images.shape[-2], images.shape[-1])
        rolled = images.roll(1, 0)
        if box is None:
            images = rolled.mul_(1.0 - lam).add_(images.mul(lam))
        else:
            x1, y1, x2, y2 = box
            images = images.clone()
            images[..., y1:y2, x1:x2] = rolled[..., y1:y2, x1:x2]
        target = one_hot(labels, num_classes=self.num_classes).float()
        self.dominant = labels if lam >= 0.5 else labels.roll(1, 0)
        return images, target.roll(1, 0).mul_(1.0 - lam).add_(target.mul(lam))

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]


__all__ = ["Mixing"]
