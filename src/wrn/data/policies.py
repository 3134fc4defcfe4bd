"""Per-image augmentation policies and random erasing.

- AutoAugment's CIFAR-10 policy (Cubuk et al. 2019), RandAugment(N, M) (Cubuk et al. 2020) and
  TrivialAugmentWide (Müller & Hutter 2021), torchvision's, and AutoAugment's CIFAR policy as the
  AutoAugment code and google-research/sam's code train it (``autoaugment-paper``, ``autoaugment-sam``:
  :mod:`wrn.data.autoaugment`) run on each uint8 image: for the device-resident data sets before the crop
  and flip, the order of the AutoAugment and Fast AutoAugment / TrivialAugment code on CIFAR; for image
  folders after the crop and flip, torchvision's reference order for ImageNet;
- random erasing (Zhong et al. 2020) draws each image's box with ``RandomErasing.get_params`` (scale
  (0.02, 0.33), ratio (0.3, 3.3)) and the box is set to 0 after normalisation, torchvision's
  ``ToTensor -> Normalize -> RandomErasing(p, value=0)``.

They work image by image, so they run where the loader runs: in worker processes. Each batch seeds torch's
generator from (seed, epoch, rank, batch index) before it transforms its images in order, so a batch is the
same whatever the number of workers and a resumed run sees the batches an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision import transforms

from wrn.data.autoaugment import PaperAutoAugment, SamAutoAugment
from wrn.seeds import stream_seed

ERASING_SCALE = (0.02, 0.33)
ERASING_RATIO = (0.3, 3.3)


@dataclass(frozen=True)
class PerImage:
    """The per-image stage of training: a policy (``none`` or one of
    :data:`~wrn.data.registry.POLICY_CHOICES`), RandAugment's ``n`` operations of magnitude ``m``, and the
    probability ``erasing`` of random erasing. The training config checks the values (``dataset.policy``,
    ``randaugment_n``, ``randaugment_m``, ``random_erasing``)."""

    policy: str = "none"
    n: int = 2
    m: int = 9
    erasing: float = 0.0

    @property
    def active(self) -> bool:
        return self.policy != "none" or self.erasing > 0

    def transform(self, mean=None):
        """The policy's transform of a uint8 image, or None. ``mean``: the loader's normalisation mean on the
        0..255 scale, the colour of the pixels that ``autoaugment-paper`` empties (None: its CIFAR-10 mean)."""
        if self.policy == "autoaugment":
            return transforms.AutoAugment(transforms.AutoAugmentPolicy.CIFAR10)
        if self.policy == "autoaugment-paper":
            return PaperAutoAugment(mean)
        if self.policy == "autoaugment-sam":
            return SamAutoAugment()
        if self.policy == "randaugment":
            return transforms.RandAugment(num_ops=self.n, magnitude=self.m)
        if self.policy == "trivialaugment":
            return transforms.TrivialAugmentWide()
        return None

    def describe(self) -> str:
        """``autoaugment (CIFAR-10 policy), random erasing p=0.5``, or '' when off."""
        parts = []
        if self.policy == "autoaugment":
            parts.append("autoaugment (CIFAR-10 policy)")
        elif self.policy == "autoaugment-paper":
            parts.append("autoaugment-paper (95 sub-policies, the AutoAugment code's ops)")
        elif self.policy == "autoaugment-sam":
            parts.append("autoaugment-sam (95 sub-policies, google-research/sam's ops)")
        elif self.policy == "randaugment":
            parts.append(f"randaugment (N={self.n}, M={self.m})")
        elif self.policy == "trivialaugment":
            parts.append("trivialaugment (wide)")
        if self.erasing > 0:
            parts.append(f"random erasing p={self.erasing:g}")
        return ", ".join(parts)


def describe_data(data) -> str:
    """The per-image stage of a config's ``dataset`` section as a header line of ``wrn train``, '' when off."""
    text = PerImage(data.policy, data.randaugment_n, data.randaugment_m, data.random_erasing).describe()
    if not text:
        return ""
    where = f"in {data.workers} worker processes" if data.workers else "in the training process (--workers 0)"
    return f"per-image augmentation: {text}, {where}"


def batch_seed(seed: int, epoch: int, rank: int, batch: int) -> int:
    """The seed of torch's generator while batch ``batch`` of ``epoch`` on ``rank`` is transformed."""
    return stream_seed(seed, "policy", epoch, rank, batch)


def transform_batch(images: torch.Tensor, per_image: PerImage, transform, seed: int):
    """Apply the policy to each uint8 image [B, C, H, W] in order and draw its erasing box, with torch's
    generator seeded by ``seed`` (the caller's generator state is left as it was).

    Returns ``(images, boxes)``: the transformed uint8 images and int64 [B, 4] boxes (top, left, height,
    width) to set to 0 after normalisation, height 0 where nothing is erased.
    """
    boxes = torch.zeros(len(images), 4, dtype=torch.int64)
    out = images.clone() if transform is not None else images
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i, img in enumerate(images):  # each image's draws in torchvision's order: policy, then erasing
            if transform is not None:
                out[i] = transform(img)
            if per_image.erasing > 0:
                boxes[i] = torch.tensor(erasing_box(out[i], per_image.erasing))
    return out, boxes


def erasing_box(img: torch.Tensor, p: float) -> tuple[int, int, int, int]:
    """torchvision's ``RandomErasing(p, value=0)`` draws for one image: (top, left, height, width), or a box of
    height 0 where the image is left alone (the coin said no, or no box fitted in 10 tries)."""
    _, h_img, w_img = img.shape
    if not torch.rand(1) < p:
        return (0, 0, 0, 0)
    i, j, h, w, _ = transforms.RandomErasing.get_params(
        img, scale=ERASING_SCALE, ratio=ERASING_RATIO, value=[0.0]
    )
    if h >= h_img or w >= w_img:  # get_params' "no box": the whole image, with its own values
        return (0, 0, 0, 0)
    return (i, j, h, w)


def erase_(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Set each image's box to 0, all channels (one batched mask on the images' device), in place."""
    boxes = boxes.to(images.device)
    h, w = images.shape[-2:]
    top, left, height, width = boxes.unbind(1)
    rows = torch.arange(h, device=images.device)
    cols = torch.arange(w, device=images.device)
    in_rows = (rows >= top[:, None]) & (rows < (top + height)[:, None])  # [B, H]
    in_cols = (cols >= left[:, None]) & (cols < (left + width)[:, None])  # [B, W]
    mask = in_rows[:, :, None] & in_cols[:, None, :]
    return images.masked_fill_(mask[:, None], 0)


class Normalize255:
    """``(x - mean) / std`` of an image [C, H, W] on the 0..255 scale in float32: the device loaders' arithmetic,
    for a worker pipeline that must normalise before random erasing."""

    def __init__(self, mean, std):
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return img.to(torch.float32).sub_(self.mean).div_(self.std)


def die_with_parent(_worker_id: int = 0) -> None:
    """A DataLoader worker's start (``worker_init_fn``): on Linux it is killed as soon as the training process
    dies, even by ``kill -9``, instead of lingering until its watchdog notices (seconds later)."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # no libc to ask: the watchdog still ends the worker
            pass
