"""Adversarial attacks on pixels in [0, 1]: PGD (Madry et al. 2018) and TRADES' inner maximisation, as the
robustness field runs them, and the model on pixels that both act on.

Every attack here takes ``model(x)``, a function of images whose pixels are in [0, 1] (with the data set's
normalisation inside it: :class:`PixelModel`), as RobustBench evaluates; it never acts on normalised images.
The sources each function follows, line by line, are named in its docstring and in ``docs/robustness.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

NORMS = ("linf", "l2")


class PixelScale:
    """A per-channel normalisation between pixels in [0, 1] and the normalised images a network takes:
    ``normalised = (x - mean) / std`` (the constants on the pixel scale,
    :func:`wrn.data.registry.pixel_constants`)."""

    def __init__(
        self, mean: Sequence[float], std: Sequence[float], device: torch.device | str = "cpu"
    ) -> None:
        self.mean = torch.tensor([float(m) for m in mean], device=device).view(1, -1, 1, 1)
        self.std = torch.tensor([float(s) for s in std], device=device).view(1, -1, 1, 1)

    @classmethod
    def of(cls, normalization: str, channels: int, device: torch.device | str = "cpu") -> PixelScale:
        from wrn.data.registry import pixel_constants

        return cls(*pixel_constants(normalization, channels), device=device)

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images as pixels in [0, 1] (float32)."""
        return images.float() * self.std + self.mean

    def normalised(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class PixelModel(torch.nn.Module):
    """``model`` on pixels in [0, 1]: ``model((x - mean) / std)``, with the per-channel constants of the
    normalisation it was trained with (on the [0, 1] scale). The attack differentiates through the
    normalisation, as RobustBench's models do."""

    def __init__(self, model: torch.nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer(
            "mean", torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


Forward = Callable[[torch.Tensor], torch.Tensor]


def _random_start(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    """robust_overfitting's ``attack_pgd``: uniform in the L-inf ball, or a normal direction scaled to a
    uniform fraction of the L2 ball; then kept inside the image box."""
    delta = torch.empty_like(x)
    if norm == "linf":
        delta.uniform_(-eps, eps, generator=generator)
    else:
        delta.normal_(generator=generator)
        length = delta.flatten(1).norm(p=2, dim=1).view(-1, 1, 1, 1)
        r = torch.empty_like(length).uniform_(0, 1, generator=generator)
        delta *= r / length * eps
    return torch.max(torch.min(delta, 1 - x), -x)


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini and Wagner's margin loss as DM-Improves-AT's ``CWLoss`` (``core/attacks/utils.py`` lines
    201-215): ``-max(z_y - max_{j != y} z_j, 0)`` summed over the batch (the true class set to -10000 for the
    max)."""
    onehot = F.one_hot(y, logits.shape[-1]).to(logits.dtype)
    real = (onehot * logits).sum(1)
    other = ((1.0 - onehot) * logits - onehot * 10000.0).max(1)[0]
    return -torch.clamp(real - other, min=0.0).sum()


def pgd(
    model: Forward,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str = "linf",
    restarts: int = 1,
    start: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """PGD on the cross-entropy (Madry et al. 2018), as robust_overfitting's ``attack_pgd`` (Rice et al. 2020)
    runs it in training and evaluation: from a random start (or ``start``, a perturbation), ``steps`` ascent
    steps (L-inf: ``step_size * sign(grad)``; L2: the gradient scaled to length ``step_size``), each projected
    onto the ``eps`` ball and the box [0, 1]; over ``restarts`` starts each image keeps the perturbation of
    highest loss (ties: the later). Returns the adversarial images (detached). The network's mode (train /
    eval) is the caller's: each method's code sets its own. ``loss_fn(logits, y)``: the loss the steps climb
    (default the cross-entropy; :func:`margin_loss`, DM-Improves-AT's evaluation); the restarts compare their
    cross-entropy."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, not {norm!r}")
    x = x.detach()
    best = torch.zeros_like(x)
    best_loss = torch.zeros(len(x), device=x.device)
    for _ in range(restarts):
        delta = (start if start is not None else _random_start(x, eps, norm, generator)).detach().clone()
        for _ in range(steps):
            delta.requires_grad_(True)
            logits = model(x + delta)
            loss = F.cross_entropy(logits, y) if loss_fn is None else loss_fn(logits, y)
            (grad,) = torch.autograd.grad(loss, [delta])
            delta = delta.detach()
            if norm == "linf":
                delta = (delta + step_size * grad.sign()).clamp(-eps, eps)
            else:
                length = grad.flatten(1).norm(p=2, dim=1).view(-1, 1, 1, 1)
                delta = (delta + grad / (length + 1e-10) * step_size).flatten(1).renorm(2, 0, eps).view_as(x)
            delta = torch.max(torch.min(delta, 1 - x), -x)
        with torch.no_grad():
            loss = F.cross_entropy(model(x + delta), y, reduction="none")
        better = loss >= best_loss
        best[better] = delta[better]
        best_loss = torch.max(best_loss, loss)
    return (x + best).clamp(0, 1).detach()


def trades_attack(
    model: Forward,
    x: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    generator: torch.Generator | None = None,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """TRADES' inner maximisation (yaodongyu/TRADES, ``trades.py``, L-inf): from ``x + 0.001 * N(0, 1)`` (or
    the point ``start``), ``steps`` sign steps of ``step_size`` up the KL divergence between
    the prediction at the point and at ``x`` (summed over the batch), each projected onto the ``eps`` ball and
    clamped to [0, 1]. Their code runs it with the network in eval mode; so does
    :class:`~wrn.train.objectives.adversarial.TRADES`."""
    x = x.detach()
    if start is None:
        start = x + 0.001 * torch.randn(x.shape, device=x.device, generator=generator)
    with torch.no_grad():
        target = F.softmax(model(x), dim=1)
    x_adv = start.detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.kl_div(F.log_softmax(model(x_adv), dim=1), target, reduction="sum")
        (grad,) = torch.autograd.grad(loss, [x_adv])
        x_adv = x_adv.detach() + step_size * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.clamp(0, 1).detach()


__all__ = ["NORMS", "PixelModel", "PixelScale", "margin_loss", "pgd", "trades_attack"]
