"""The data of semi-supervised training (``--labels``, ``--ssl``; docs/semi-supervised.md): the labelled split
as FixMatch's code draws it, and the loader of the unlabelled images' weak and strong views.

- :func:`labelled_indices` is google-research/fixmatch ``scripts/create_split.py``: each class's images in
  their order, shuffled with numpy's seed ``fold`` (0: left in order), then taken one at a time from the class
  whose share so far lags most behind its share of the training set (``argmax(stats - npos / max(npos))``). On
  a data set with as many images of every class (CIFAR) that is ``labels / classes`` of each.
- :class:`UnlabelledLoader` gives batches of ``(weak, strong)`` views of every training image (their
  unlabelled set holds the labelled images too). The weak view is the labelled images' augmentation, flip and
  crop gathered on the device; the strong view is another flip and crop of the same image, then the strong
  policy (:data:`~wrn.data.registry.STRONG_POLICIES`) image by image in the loader's worker processes, as
  their ``AugmentPoolRAMC`` applies RA and Cutout after the weak augmentation; or, for ``fixmatch-ra``, on
  the training device a batch at a time (:mod:`wrn.data.fixmatch_batched`, equal image for image). The pixels
  their code empties (a rotation's corners, the Cutout box) are 0 after their normalisation: they come as a
  mask, set to 0 after ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from wrn.data.device_loader import DeviceLoader, EpochBatches, crop_flip_plan
from wrn.data.registry import STRONG_ON_DEVICE, STRONG_POLICIES
from wrn.errors import ConfigError
from wrn.seeds import stream_seed


@dataclass(frozen=True)
class LabelledSplit:
    """Training on ``labels`` labelled images (FixMatch's split of seed ``fold``) in epochs of ``epoch_steps``
    batches, and with ``unlabelled_batch`` > 0 a loader of every training image as unlabelled: its strong
    views ``strong_policy`` (torchvision's with RandAugment's ``randaugment_m``), made ``strong_on`` the
    device or in the workers. The training config checks the values (its ``ssl`` section)."""

    labels: int
    fold: int = 1
    epoch_steps: int = 1024
    unlabelled_batch: int = 0
    strong_policy: str = "fixmatch-ra"
    randaugment_m: int = 9
    strong_on: str = "workers"


def labelled_indices(
    labels: np.ndarray | torch.Tensor, n_labels: int, fold: int, dataset: str = "the data set"
):
    """The training indices of ``n_labels`` labelled images, sorted, as FixMatch's ``create_split.py
    --seed=fold --size=n_labels`` picks them from the training labels ``labels`` (0..C-1). Their rule takes
    from each class in proportion to its share, so no class runs out before all images are taken; a split
    of more images than there are is one sentence."""
    y = np.asarray(labels, dtype=np.int64)
    classes = int(y.max()) + 1 if len(y) else 0
    if not 0 < n_labels <= len(y):
        raise ConfigError(
            f"--labels {n_labels} asks for more labelled images than the {len(y)} training images of {dataset}; "
            "give fewer"
        )
    class_id = [np.nonzero(y == c)[0] for c in range(classes)]
    stats = np.array([len(c) for c in class_id], np.float64)
    stats /= stats.max()
    if fold:
        rng = np.random.RandomState(fold)  # their np.random.seed(seed): the same stream
        for c in range(classes):
            rng.shuffle(class_id[c])
    npos = np.zeros(classes, np.int64)
    chosen = []
    for _ in range(n_labels):
        # (the class that lags most behind its share never runs out before every image is taken)
        c = int(np.argmax(stats - npos / max(npos.max(), 1)))
        chosen.append(int(class_id[c][npos[c]]))
        npos[c] += 1
    return torch.from_numpy(np.sort(np.asarray(chosen, dtype=np.int64)))


class StrongView:
    """The strong augmentation of one uint8 image [C, H, W] -> ``(image, emptied)``, ``emptied`` a bool [H, W]
    of the pixels that are 0 after normalisation: ``fixmatch-ra`` (FixMatch's RA and Cutout,
    :class:`~wrn.data.fixmatch_augment.FixMatchRA`) or ``randaugment`` (torchvision's ``RandAugment(2, m)``,
    then the same Cutout). ``on``: where the loader makes the views, image by image in its ``workers``, or
    on the device a batch at a time (:meth:`batch`, ``fixmatch-ra`` only:
    :func:`~wrn.data.fixmatch_batched.apply_batched`, equal to the per-image code image for image)."""

    def __init__(self, policy: str, side: int, randaugment_m: int = 9, on: str = "workers") -> None:
        from wrn.data.fixmatch_augment import FixMatchRA

        if policy not in STRONG_POLICIES:
            raise ConfigError(f"unknown strong policy {policy!r}: choose one of {', '.join(STRONG_POLICIES)}")
        if on not in ("device", "workers") or (on == "device" and policy not in STRONG_ON_DEVICE):
            raise ConfigError(
                f"the strong policy {policy} cannot run on {on!r}: fixmatch-ra runs on the device or in the "
                "workers, the others in the workers"
            )
        self.policy, self.side, self.on = policy, side, on
        self.ra = FixMatchRA(side=side)
        if on == "device":
            from wrn.data.fixmatch_batched import BatchedFixMatchRA

            self.batched = BatchedFixMatchRA(side=side)
        self.torchvision = None
        if policy == "randaugment":
            from torchvision import transforms

            self.torchvision = transforms.RandAugment(num_ops=2, magnitude=randaugment_m)

    def batch(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The strong views of uint8 images [B, C, H, W] on their device, the batch's draws from ``generator``
        (:class:`~wrn.data.fixmatch_batched.BatchedFixMatchRA`): ``(images, emptied [B, H, W])``."""
        return self.batched(images, generator)

    def __call__(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.torchvision is None:
            return self.ra(img)
        from wrn.data.fixmatch_augment import CUTOUT, cutout_mask, cutout_size

        out = self.torchvision(img)
        h, w = out.shape[-2:]
        return out, torch.from_numpy(cutout_mask(h, w, cutout_size(CUTOUT, self.side)))


class UnlabelledLoader(DeviceLoader):
    """Batches ``(weak, strong)`` of the images ``x`` (uint8 [N, C, H, W]), each image's two views at the same
    place, normalised on ``device``. An epoch is a permutation of the images (the last partial batch dropped).
    The weak view is ``augment`` (flip and crop) gathered on the device as :class:`DeviceLoader` does; the
    strong view has its own flip and crop (from a generator seeded per epoch) and ``strong`` (a
    :class:`StrongView`) after it, in ``workers`` processes or on the device as ``strong.on`` says, each
    batch seeded from (seed, epoch, rank, batch) so a batch is the same whatever the number of workers, and a
    resumed run sees the same batches."""

    def __init__(self, x, batch_size: int, strong: StrongView, **kwargs) -> None:
        x = torch.from_numpy(x) if isinstance(x, np.ndarray) else torch.as_tensor(x)
        if x.dtype != torch.uint8:
            raise ConfigError(
                f"the strong augmentation needs the uint8 images, but these are {x.dtype} (ZCA-whitened?): use "
                "another --normalization with --ssl"
            )
        super().__init__(x, torch.zeros(len(x), dtype=torch.int64), batch_size, train=True, **kwargs)
        self.strong = strong
        self._x_cpu = x.contiguous()

    def __iter__(self):
        plan = self._epoch_plan()
        views = self._device_views(plan) if self.strong.on == "device" else self._worker_views(plan)
        non_blocking = self.device.type == "cuda"
        for b, (images, emptied) in zip(range(self.position, len(self)), views, strict=True):
            sel = slice(b * self.batch_size, (b + 1) * self.batch_size)
            weak = self._batch(plan, sel)
            strong = self._normalize_(images.to(self.device, non_blocking=non_blocking).to(self.dtype))
            strong.masked_fill_(emptied.to(self.device, non_blocking=non_blocking)[:, None], 0)
            self.position = b + 1
            yield weak, strong
        self._end_epoch()

    def _worker_views(self, plan: dict):
        """The rest of the epoch's strong views (uint8 images, emptied masks) from the worker processes."""
        strong_plan = {k: v.cpu() for k, v in self._strong_plan().items()}
        return self._in_workers(_StrongBatches(self, plan["index"].cpu(), strong_plan))

    def _device_views(self, plan: dict):
        """The rest of the epoch's strong views made on the device, a batch at a time: the images gathered
        with their own flip and crop, then the batched strong policy, its draws seeded per (epoch, rank,
        batch) as the workers' are."""
        strong_plan = {k: v.to(self.device) for k, v in self._strong_plan().items()}
        for b in range(self.position, len(self)):
            sel = slice(b * self.batch_size, (b + 1) * self.batch_size)
            images = self._crop_flip(plan["index"][sel], strong_plan, sel)
            g = torch.Generator().manual_seed(
                stream_seed(self.seed, "strong-policy", self.epoch, self.rank, b)
            )
            yield self.strong.batch(images, g)

    def _strong_plan(self) -> dict:
        """The strong views' own flips and crop offsets of this epoch, for this rank's positions."""
        g = torch.Generator().manual_seed(stream_seed(self.seed, "strong", self.epoch))
        n, plan = self._shard_size * self.world_size, {}
        if self.augment in ("crop", "flip-crop"):
            plan["offset"] = torch.randint(0, self._offset_high(), (n, 2), generator=g)
        if self.augment == "flip-crop":
            plan["flip"] = torch.rand(n, generator=g) < 0.5
        return {k: v[self._positions] for k, v in plan.items()}


class _StrongBatches(EpochBatches):
    """The strong views of batch ``b`` of the loader's epoch (uint8 images and their emptied pixels), flipped
    and cropped as their own plan says, then the strong policy image by image."""

    def __init__(self, loader: UnlabelledLoader, index: torch.Tensor, plan: dict) -> None:
        super().__init__(loader, loader._x_cpu, plan)
        self.index, self.strong = index, loader.strong

    def __getitem__(self, b: int):
        sel = self.positions(b)
        images = crop_flip_plan(self.x, self.index[sel], self.plan, sel, self.augment, self.pad, self.zeros)
        out = torch.empty_like(images)
        emptied = torch.zeros(len(images), *images.shape[-2:], dtype=torch.bool)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(self.seed, "strong-policy", self.epoch, self.rank, b))
            for i, img in enumerate(images):
                out[i], emptied[i] = self.strong(img)
        return out, emptied


__all__ = ["LabelledSplit", "StrongView", "UnlabelledLoader", "labelled_indices"]
