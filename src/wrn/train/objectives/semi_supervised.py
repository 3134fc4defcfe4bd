"""Semi-supervised training (``--ssl``; docs/semi-supervised.md): an objective that wraps the run's objective
and adds a loss on batches of a loader of unlabelled images of its own.

:class:`FixMatch` is google-research/fixmatch ``fixmatch.py`` / ``ablation/ab_fixmatch_ra.py`` (``model``):

- the labelled batch ``x``, the unlabelled batch's weak views ``u_w`` and strong views ``u_s`` (``mu`` x the
  labelled batch each) go through the network in one forward, ``cat([x, u_w, u_s])``, so that BN normalises
  over all of them (their ``interleave`` / ``para_cat`` on one accelerator);
- the labelled loss is the run's objective on ``x`` (their ``sparse_softmax_cross_entropy``: our
  cross-entropy, with whatever label smoothing the run sets);
- the pseudo-label of each unlabelled image is the argmax of the softmax of its weak view's logits (no
  gradient), kept where that probability is at least ``threshold``; the unlabelled loss is the cross-entropy
  of the strong view's logits against it times the mask, averaged over all ``mu x B`` images (kept or not);
- the loss is ``labelled + lambda_u x unlabelled`` (their weight decay is the optimizer's, on the weights of
  two or more dimensions: ``optim.decay_norm_and_bias`` off).

The unlabelled loader's position is the objective's state, saved per process in the checkpoint, so a resumed
run takes the unlabelled batches an uninterrupted one would. The training accuracy counts the labelled batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from wrn.train.objectives.base import Batch, Context, Forward, Objective, Wrapping


@dataclass
class SemiBatch(Batch):
    labelled: int = (
        0  # the first ``labelled`` images are the labelled batch, then the weak, then the strong views
    )


def fixmatch_unlabelled_loss(
    weak_logits: torch.Tensor, strong_logits: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """FixMatch's unlabelled loss and its mask: the strong views' cross-entropy against the weak views'
    argmax, where the weak view's softmax is at least ``threshold``, averaged over every image."""
    probs = torch.softmax(weak_logits.detach(), dim=1)
    confidence, pseudo = probs.max(dim=1)
    mask = (confidence >= threshold).to(strong_logits.dtype)
    loss = (F.cross_entropy(strong_logits, pseudo, reduction="none") * mask).mean()
    return loss, mask


class FixMatch(Wrapping):
    """The run's ``objective`` on the labelled batch plus ``ssl.lambda_u`` x FixMatch's unlabelled loss on a
    batch of ``ctx.unlabelled`` (an :class:`~wrn.data.semi_supervised.UnlabelledLoader`)."""

    def __init__(self, objective: Objective, ctx: Context) -> None:
        if ctx.unlabelled is None:
            raise ValueError("FixMatch needs a loader of unlabelled images (Context.unlabelled)")
        super().__init__(objective)
        self.loader = ctx.unlabelled
        self.threshold = float(ctx.cfg.ssl.threshold)
        self.lambda_u = float(ctx.cfg.ssl.lambda_u)
        self._batches = None

    def _unlabelled(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (weak, strong) batch; a new pass over the unlabelled images when one ends."""
        for _ in range(2):  # (a pass resumed at its end gives nothing: the next pass gives the batch)
            if self._batches is None:
                self._batches = iter(self.loader)
            batch = next(self._batches, None)
            if batch is not None:
                return batch
            self._batches = None
        raise RuntimeError("the unlabelled loader gave no batch in a whole pass")

    def prepare(self, forward: Forward, images: torch.Tensor, labels: torch.Tensor) -> SemiBatch:
        weak, strong = self._unlabelled()
        together = torch.cat([images, weak.to(images.dtype), strong.to(images.dtype)])
        return SemiBatch(together, labels, labels, labelled=len(labels))

    def loss(self, forward: Forward, batch: SemiBatch) -> tuple[torch.Tensor, torch.Tensor]:
        logits = forward(batch.images)
        b = batch.labelled
        labelled = logits[:b]
        weak, strong = logits[b:].chunk(2)
        unlabelled, _ = fixmatch_unlabelled_loss(weak, strong, self.threshold)
        return self.inner.criterion(labelled, batch.targets) + self.lambda_u * unlabelled, labelled

    def own_state(self) -> dict[str, Any]:
        return {"unlabelled": self.loader.state_dict()}

    def load_own_state(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state["unlabelled"])
        self._batches = None  # the next batch comes from the restored position


__all__ = ["FixMatch", "SemiBatch", "fixmatch_unlabelled_loss"]
