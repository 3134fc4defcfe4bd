"""Cutout (DeVries & Taylor, "Improved Regularization of Convolutional Neural Networks with Cutout", 2017):
one square hole per training image, set to 0 after normalisation, as the authors' ``util/cutout.py`` does it.

Their rule, kept exactly: the hole's centre ``(y, x)`` is drawn uniformly over the whole image, and the
hole covers rows ``clip(y - L//2, 0, H) .. clip(y + L//2, 0, H)`` (end excluded), the same for columns, so
a hole near the border is clipped and an odd side ``L`` covers ``L - 1`` pixels. Their code works on one
image at a time with numpy; :class:`Cutout` does the whole batch on the device at once, drawing the centres
from its own ``torch.Generator``, whose state is part of the run's checkpoint (a resumed run draws the same
holes as one never stopped).

``per="batch"`` is google-research/sam's batch-level cutout (``sam_jax/datasets/augmentation.py``, ``cutout``):
one centre for the whole batch, the same rule, every image's hole at that one place. Their pipeline cuts it
into each host's batch after normalisation (``dataset_source.py``, ``get_train``), so here into each process's.
"""

from __future__ import annotations

from typing import Any

import torch


class Cutout:
    """``cutout(images) -> images`` with one ``length`` x ``length`` hole per image of an ``(N, C, H, W)``
    batch, on the batch's device: each image's at a place of its own (``per="image"``), or all at one place
    (``per="batch"``: 2 integers drawn per batch). ``seed`` starts the generator (a ``device`` one)."""

    def __init__(self, length: int, device: torch.device, seed: int, per: str = "image") -> None:
        if length <= 0:
            raise ValueError("the cutout hole needs a side of at least 1 pixel")
        if per not in ("image", "batch"):
            raise ValueError(f"Cutout places its holes per image or per batch, not per {per!r}")
        self.length = int(length)
        self.per = per
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(int(seed))

    def masks(self, n: int, h: int, w: int, device: torch.device) -> torch.Tensor:
        """``(n, h, w)`` float masks: 0 inside each image's hole, 1 elsewhere (draws ``2n`` integers)."""
        centre_y = torch.randint(h, (n,), generator=self.generator, device=device)
        centre_x = torch.randint(w, (n,), generator=self.generator, device=device)
        half = self.length // 2
        rows = _inside(torch.arange(h, device=device), centre_y, half, h)
        cols = _inside(torch.arange(w, device=device), centre_x, half, w)
        return (~(rows[:, :, None] & cols[:, None, :])).float()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        masks = self.masks(n if self.per == "image" else 1, h, w, images.device)
        return images * masks[:, None].to(images.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


def _inside(index: torch.Tensor, centre: torch.Tensor, half: int, size: int) -> torch.Tensor:
    """``(n, size)``: which of ``index`` lie in ``[clip(c - half), clip(c + half))`` for each centre."""
    low = (centre - half).clamp(0, size)[:, None]
    high = (centre + half).clamp(0, size)[:, None]
    return (index[None] >= low) & (index[None] < high)


__all__ = ["Cutout"]
