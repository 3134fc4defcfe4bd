"""The device-resident pipeline for small data sets (the fast path).

The whole data set lives on the training device once. Every epoch draws, from one CPU generator, a permutation
and each sample's augmentation (horizontal flip, crop offsets from a reflection pad, or the ImageNet-style
parameters), and every batch is then assembled by one gather on the device: the crop and flip of each sample
are folded into the indices, so there is no per-sample Python work.

With a per-image policy or random erasing on (:class:`~wrn.data.policies.PerImage`), each batch's crop and
flip (the same plan) is gathered from a CPU copy of the uint8 data instead, transformed image by image in
DataLoader workers, and moved to the device to be normalised (and erased) there.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from wrn.data.generated import Generated, Mix, check_generated_state
from wrn.data.pil_affine import draw_angles, rotation_coefficients, transform
from wrn.data.policies import PerImage, batch_seed, die_with_parent, erase_, transform_batch
from wrn.data.protocol import EpochLoader
from wrn.data.registry import AUGMENT_CHOICES, CROP_PADDINGS
from wrn.errors import ConfigError

# PCA lighting of fb.resnet.torch (AlexNet-style), on the 0..1 RGB scale.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


def reflect_index(i: torch.Tensor, size: int) -> torch.Tensor:
    """Map coordinates of a reflection-padded axis (offset by the pad) back into ``0..size-1``.

    Reflection mirrors without repeating the edge: -1 -> 1, size -> size - 2 (torch's 'reflect' mode).
    """
    i = i.abs()
    return (size - 1) - ((size - 1) - i).abs()


def _checked_arrays(x, y, train: bool, augment: str, pad: int, crop_padding: str):
    """``x`` [N, C, H, W] and ``y`` [N] as tensors, and the augmentation's choices checked against them."""
    if augment not in AUGMENT_CHOICES:
        raise ConfigError(f"unknown augment {augment!r}: choose one of {', '.join(AUGMENT_CHOICES)}.")
    x = torch.from_numpy(x) if isinstance(x, np.ndarray) else torch.as_tensor(x)
    y = torch.from_numpy(y) if isinstance(y, np.ndarray) else torch.as_tensor(y)
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
        raise ConfigError(f"x must be [N, C, H, W] and y [N], got {tuple(x.shape)} and {tuple(y.shape)}.")
    h, w = x.shape[-2:]
    if train and augment in ("crop", "flip-crop") and not 0 <= pad < min(h, w):
        raise ConfigError(f"pad must be in 0..{min(h, w) - 1} for {h}x{w} images, not {pad}.")
    if crop_padding not in CROP_PADDINGS:
        raise ConfigError(f"unknown crop padding {crop_padding!r}: choose one of {', '.join(CROP_PADDINGS)}.")
    return x, y


def _check_per_image(per_image: PerImage, augment: str, x: torch.Tensor) -> None:
    """A per-image stage needs uint8 images and the crop and flip of augment none, crop or flip-crop."""
    what = per_image.describe()
    if augment == "imagenet":
        raise ConfigError(
            f"{what} works with the crop and flip of augment none, crop or flip-crop, not with the "
            "imagenet augmentation: drop --policy / --random-erasing or choose another --augment."
        )
    if x.dtype != torch.uint8:
        raise ConfigError(
            f"{what} needs the uint8 images, but these are {x.dtype} (ZCA-whitened?): use another "
            "--normalization or drop --policy / --random-erasing."
        )


class DeviceLoader(EpochLoader):
    """Batches of a whole data set kept on ``device``, augmented there; one ``for`` loop is one epoch.

    ``x`` is uint8 [N, C, H, W] on the 0..255 scale (or float, e.g. ZCA-whitened, with ``normalize=None``) and
    ``y`` int64 [N]. Training loaders (``train=True``) draw a fresh permutation every epoch and apply
    ``augment``: ``none``, ``crop`` (a random ``H x W`` crop of the image reflection-padded by ``pad``),
    ``flip-crop`` (the paper's CIFAR: a random horizontal flip, then the crop; ``crop_padding="zeros"`` pads
    with zeros instead, as torchvision's ``RandomCrop(padding=pad)``), or ``imagenet`` (random
    resized crop, flip, colour jitter 0.4 and PCA lighting 0.1, batched on the device; output side
    ``image_size`` or the native one). ``normalize=(mean, std)`` on the 0..255 scale gives (x - mean) / std.

    With ``world_size > 1`` every rank takes its own shard (positions ``rank::world_size``) of the epoch's
    order (:class:`~wrn.data.protocol.EpochLoader`: the same number of batches on every rank in training, every
    sample in evaluation).

    ``per_image`` (training only): a policy applied per image before the crop and flip (the AutoAugment code's
    order) and/or random erasing after normalisation, in ``workers`` DataLoader processes (0: in this one);
    with it off nothing is drawn or done differently.

    ``epoch_batches`` (training only): an epoch is that many batches, whatever the number of images, taken
    from permutations of the images drawn one after the other (a labelled split smaller than a batch, an
    "epoch" that is a report interval).

    ``generated`` (training only, :func:`~wrn.data.generated.read_generated`): generated images mixed into every
    batch as DM-Improves-AT's ``SemiSupervisedSampler`` mixes them (:class:`~wrn.data.generated.Mix`), each
    batch's gathered from where they are (memory-mapped or in host memory), moved to the device, then flipped
    and cropped as the real ones.

    The order and augmentation of an epoch depend only on ``seed`` and the epoch index, whatever the device;
    :meth:`state_dict` / :meth:`load_state_dict` save and restore the epoch, the position in it and the
    generator, so a resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(
        self,
        x,
        y,
        batch_size: int,
        train: bool = True,
        augment: str = "flip-crop",
        normalize=None,
        device="cpu",
        seed: int = 0,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
        dtype: torch.dtype = torch.float32,
        pad: int = 4,
        image_size: int | None = None,
        per_image: PerImage | None = None,
        workers: int = 0,
        crop_padding: str = "reflect",
        generated: Generated | None = None,
        epoch_batches: int | None = None,
        rotate: float = 0.0,
    ):
        x, y = _checked_arrays(x, y, train, augment, pad, crop_padding)
        _check_rotate(rotate, augment, crop_padding)
        n, c, h, w = x.shape
        self._setup_protocol(
            n, batch_size, train, drop_last, rank, world_size, seed, normalize, device, dtype, channels=c
        )
        self.x = x.to(self.device).contiguous()
        self.y = y.to(self.device, torch.int64)
        self.augment = augment if train else "none"
        self.pad = int(pad)
        self.crop_padding = crop_padding
        self.rotate = float(rotate) if train else 0.0
        self.image_size = int(image_size or h)
        self._ar_c = torch.arange(c, device=self.device).view(1, c, 1, 1) * (h * w)
        self._ar_h = torch.arange(h, device=self.device)
        self._ar_w = torch.arange(w, device=self.device)
        if train and epoch_batches is not None:  # a stream of permutations, cut into epochs of this many
            self._shard_size = int(epoch_batches) * self.batch_size
        self.epoch_batches = int(epoch_batches) if train and epoch_batches is not None else None
        last = self._shard_size * world_size if train else n
        self._positions = torch.arange(rank, last, world_size)
        self.per_image = per_image if train and per_image is not None and per_image.active else None
        self.workers = int(workers)
        self.stage = _PerImageStage(self.per_image, self.augment, x, normalize) if self.per_image else None
        self.mix = None  # generated images in every batch (training only)
        if train and generated is not None:
            self.mix = Mix(generated, self.x, augment=self.augment, per_image=self.per_image,
                           global_batch=self.batch_size * self.world_size, num_real=self.num_samples)  # fmt: skip
            self._shard_size = self.mix.batches * self.batch_size
        self._generator = torch.Generator().manual_seed(self.seed)
        self._epoch_start_state = self._generator.get_state()
        self._plan = None

    def __iter__(self):
        plan = self._epoch_plan()
        transformed = self._in_workers(self.stage.batches(self, plan)) if self.stage is not None else None
        for b in range(self.position, len(self)):
            sel = slice(b * self.batch_size, min((b + 1) * self.batch_size, self._shard_size))
            images = (
                self._batch(plan, sel)
                if transformed is None
                else self.stage.finish(self, *next(transformed), plan, sel)
            )
            labels = plan["label"][sel] if "label" in plan else self.y[plan["index"][sel]]
            self.position = b + 1
            yield images, labels
        self._end_epoch()

    def _end_epoch(self) -> None:
        """The epoch is served: the next one starts from the generator state after this one's draws."""
        self._plan = None
        self._epoch_start_state = self._next_state
        self.epoch += 1
        self.position = 0

    def _in_workers(self, batches: torch.utils.data.Dataset):
        return in_workers(batches, range(self.position, len(self)), self.workers, self.device, self.seed)

    def state_dict(self) -> dict:
        """The protocol's state and the generator state at the start of the epoch (and the number and share of
        generated images, which must match for the draws to line up)."""
        state = {**super().state_dict(), "generator": self._epoch_start_state.clone()}
        if self.mix is not None:
            state.update(self.mix.state())
        return state

    def load_state_dict(self, state: dict) -> None:
        check_generated_state(state, self.state_dict())
        super().load_state_dict(state)
        self._epoch_start_state = torch.as_tensor(state["generator"]).to("cpu", torch.uint8).clone()
        self._plan = None

    def _epoch_plan(self) -> dict:
        """The current epoch's sample order and per-sample augmentation, for this rank, on the device."""
        if self._plan is not None:
            return self._plan
        g = self._generator
        g.set_state(self._epoch_start_state)
        pos = self._positions
        if self.mix is not None:
            plan = self.mix.draw(g, self.y, self.rank, self.world_size, self._offset_high(), self.rotate)
        elif self.train:
            need = self._shard_size * self.world_size if self.epoch_batches is not None else None
            order = epoch_order(self.num_samples, g, need)
            plan = draw_augmentation(len(order), self.augment, self._offset_high(), g, self.rotate)
            # Augmentation is drawn per position of the permutation, so each rank's shard takes its own slice.
            plan = {**{k: v[pos] for k, v in plan.items()}, "index": order[pos]}
        else:
            plan = {"index": pos}
        self._next_state = g.get_state()
        plan = with_rotations(plan, *self.x.shape[-2:])
        self._plan = {k: v.to(self.device) for k, v in plan.items()}
        return self._plan

    def _offset_high(self) -> int | None:
        """The crop offsets are drawn from ``0..high-1`` (None: no crop). The AutoAugment code's
        ``np.random.randint(0, 2 * pad)`` never takes the last offset (``crop_padding="mean"``)."""
        if self.augment not in ("crop", "flip-crop"):
            return None
        return 2 * self.pad if self.crop_padding == "mean" else 2 * self.pad + 1

    def _batch(self, plan: dict, sel: slice) -> torch.Tensor:
        if "generated" in plan:
            return self._mixed_batch(plan, sel)
        out = _rotated(self._crop_flip(plan["index"][sel], plan, sel), plan, sel).to(self.dtype)
        if self.augment == "imagenet":
            out = _imagenet_augment(
                out, {k: v[sel] for k, v in plan.items() if k != "index"}, self.image_size
            )
        return self._mean_border_(self._normalize_(out), plan, sel)

    def _mixed_batch(self, plan: dict, sel: slice) -> torch.Tensor:
        out = self.mix.gather(self.x, plan, sel)
        out = crop_flip_plan(out, None, plan, sel, self.augment, self.pad, self.crop_padding != "reflect")
        out = _rotated(out, plan, sel).to(self.dtype)
        return self._mean_border_(self._normalize_(out), plan, sel)

    def _mean_border_(self, out: torch.Tensor, plan: dict, sel: slice) -> torch.Tensor:
        """``crop_padding="mean"``: the crop's border set to 0 after normalisation, the mean colour, as the
        AutoAugment code pads its normalised image with zeros (the gather filled it with black)."""
        if self.crop_padding != "mean" or self.augment not in ("crop", "flip-crop"):
            return out
        flip = plan["flip"][sel] if "flip" in plan else None
        return mean_border_(out, plan["offset"][sel], flip, self.pad, self._ar_h, self._ar_w)

    def _crop_flip(self, idx, plan: dict, sel: slice) -> torch.Tensor:
        """Samples ``idx`` of the loader's images with the crop and flip of the plan's slots ``sel``."""
        aranges = (self._ar_c, self._ar_h, self._ar_w)
        return crop_flip_plan(
            self.x, idx, plan, sel, self.augment, self.pad, self.crop_padding != "reflect", aranges
        )


def epoch_order(n: int, g: torch.Generator, need: int | None = None) -> torch.Tensor:
    """An epoch's order of ``n`` images: a permutation, or (``need``: the positions an epoch of
    ``epoch_batches`` takes) as many permutations one after the other as that takes, the last one cut, as a
    repeated and shuffled stream gives them."""
    if need is None:
        return torch.randperm(n, generator=g)
    return torch.cat([torch.randperm(n, generator=g) for _ in range(-(-need // n))])[:need]


def draw_augmentation(
    n: int, augment: str, offset_high: int | None, g: torch.Generator, rotate: float = 0.0
) -> dict:
    """The augmentation of ``n`` positions of an epoch, drawn in this order: crop offsets from
    ``0..offset_high-1`` (crop, flip-crop), flips (flip-crop, imagenet), the ImageNet-style parameters, the
    rotation angles (``rotate`` > 0, :func:`draw_angles`)."""
    plan = {}
    if augment in ("crop", "flip-crop"):
        plan["offset"] = torch.randint(0, offset_high, (n, 2), generator=g)
    if augment in ("flip-crop", "imagenet"):
        plan["flip"] = torch.rand(n, generator=g) < 0.5
    if augment == "imagenet":
        plan.update(_imagenet_params(n, g))
    if rotate > 0:
        plan["angle"] = draw_angles(n, rotate, g)
    return plan


def with_rotations(plan: dict, h: int, w: int) -> dict:
    """``plan`` with each image's rotation angle (``rotate``; on the CPU) as the fixed-point coefficients of
    Pillow's rotation of an ``h`` x ``w`` image, computed once an epoch."""
    if "angle" in plan:
        plan["rotation"] = rotation_coefficients(plan["angle"].tolist(), h, w)
    return plan


def _rotated(images: torch.Tensor, plan: dict, sel: slice) -> torch.Tensor:
    """Batch ``sel``'s uint8 images, each rotated by its angle of the plan (none without ``rotate``): Pillow's
    ``Image.rotate(angle)``, nearest, black corners (:mod:`wrn.data.pil_affine`)."""
    return transform(images, plan["rotation"][sel]) if "rotation" in plan else images


def _check_rotate(rotate: float, augment: str, crop_padding: str) -> None:
    if not 0 <= rotate <= 180:
        raise ConfigError(f"rotate {rotate} is not an angle in degrees from 0 to 180; choose e.g. 15")
    if rotate and augment not in ("none", "crop", "flip-crop"):
        raise ConfigError(f"rotation works with augment none, crop or flip-crop, not with {augment!r}")
    if rotate and crop_padding == "mean":
        raise ConfigError(
            "rotation moves the crop's mean-colour border, which crop padding 'mean' sets after the "
            "normalisation; use crop padding reflect or zeros"
        )


def in_workers(batches: torch.utils.data.Dataset, todo: range, workers: int, device: torch.device, seed: int):
    """Items ``todo`` of ``batches`` (item b: batch b of an epoch, seeded by itself) made in ``workers``
    DataLoader processes (0: this one), in order, pinned for a CUDA ``device``."""
    from torch.utils.data import DataLoader

    return iter(DataLoader(
        batches,
        batch_size=None,
        sampler=todo,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        # the workers' base seed from a generator of its own: the global one (dropout's) is left alone, and every
        # batch seeds itself anyway
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=die_with_parent,
    ))  # fmt: skip


class _PerImageStage:
    """The per-image stage of a :class:`DeviceLoader` (``per_image``): its transform, the CPU copy of the
    images its batches are gathered from (the same tensor when they are there), the items its workers make
    and the last touches of a transformed batch on the device."""

    def __init__(self, per_image: PerImage, augment: str, x: torch.Tensor, normalize) -> None:
        _check_per_image(per_image, augment, x)
        self.per_image = per_image
        self.x_cpu = x.to("cpu").contiguous()
        self.transform = per_image.transform(mean=normalize[0] if normalize is not None else None)

    def batches(self, loader: DeviceLoader, plan: dict) -> _PerImageBatches:
        return _PerImageBatches(loader, self, {k: v.cpu() for k, v in plan.items()})

    def finish(self, loader: DeviceLoader, images: torch.Tensor, boxes: torch.Tensor, plan: dict, sel: slice):
        """A transformed uint8 batch on the device, normalised, then its erasing boxes set to 0."""
        non_blocking = loader.device.type == "cuda"
        out = loader._normalize_(images.to(loader.device, non_blocking=non_blocking).to(loader.dtype))
        out = loader._mean_border_(out, plan, sel)
        return erase_(out, boxes) if self.per_image.erasing > 0 else out


class EpochBatches(torch.utils.data.Dataset):
    """Item ``b``: batch ``b`` of a loader's epoch, made in a worker process from ``x``, the CPU copy of the
    loader's images, and the epoch's ``plan`` (on the CPU). It holds the loader's fields it needs, not the
    loader: this object is what the workers receive."""

    def __init__(self, loader: DeviceLoader, x: torch.Tensor, plan: dict):
        self.x, self.plan = x, plan
        self.augment, self.pad = loader.augment, loader.pad
        self.zeros = loader.crop_padding != "reflect"  # ("mean": black here, 0 after normalisation)
        self.batch_size, self.shard_size, self.batches = loader.batch_size, loader._shard_size, len(loader)
        self.seed, self.epoch, self.rank = loader.seed, loader.epoch, loader.rank

    def __len__(self) -> int:
        return self.batches

    def positions(self, b: int) -> slice:
        """The plan's slots of batch ``b``."""
        return slice(b * self.batch_size, min((b + 1) * self.batch_size, self.shard_size))


class _PerImageBatches(EpochBatches):
    """Batch ``b`` of the loader's epoch put through the per-image stage with its own seed
    (:func:`~wrn.data.policies.batch_seed`), then crop-flipped as the plan says."""

    def __init__(self, loader: DeviceLoader, stage: _PerImageStage, plan: dict):
        super().__init__(loader, stage.x_cpu, plan)
        self.per_image, self.transform = stage.per_image, stage.transform

    def __getitem__(self, b: int):
        sel = self.positions(b)
        seed = batch_seed(self.seed, self.epoch, self.rank, b)
        # The policy first, on the whole image, then the crop and flip: the order of the AutoAugment and Fast
        # AutoAugment / TrivialAugment code on CIFAR
        images, boxes = transform_batch(self.x[self.plan["index"][sel]], self.per_image, self.transform, seed)
        images = crop_flip_plan(images, None, self.plan, sel, self.augment, self.pad, self.zeros)
        return _rotated(images, self.plan, sel), boxes


def crop_flip_plan(x: torch.Tensor, idx, plan: dict, sel: slice, augment: str, pad: int, zeros: bool,
                   aranges=None) -> torch.Tensor:  # fmt: skip
    """Samples ``idx`` of ``x`` (None: all of them, in order) with the crop and flip (:func:`crop_flip`) of
    an epoch plan's slots ``sel`` where ``augment`` has them (crop, flip-crop), as they are otherwise."""
    if augment not in ("crop", "flip-crop"):
        return x if idx is None else x[idx]
    idx = torch.arange(len(x), device=x.device) if idx is None else idx
    flip = plan["flip"][sel] if "flip" in plan else None
    return crop_flip(x, idx, plan["offset"][sel], flip, pad, aranges, zeros=zeros)


def crop_flip(
    x: torch.Tensor, idx, offset, flip, pad: int, aranges=None, zeros: bool = False
) -> torch.Tensor:
    """Samples ``idx`` of ``x`` [N, C, H, W], each cropped at ``offset`` (rows, cols) from the image padded by
    ``pad`` (reflection, or ``zeros``: torchvision's ``RandomCrop(padding=pad)``) and flipped where ``flip``:
    one gather. ``aranges``: (channel offsets, rows, columns) made once, or None."""
    _, c, h, w = x.shape
    if aranges is None:
        aranges = (
            torch.arange(c, device=x.device).view(1, c, 1, 1) * (h * w),
            torch.arange(h, device=x.device),
            torch.arange(w, device=x.device),
        )
    ar_c, ar_h, cols_ar = aranges
    rows, cols = crop_coordinates(offset, flip, pad, ar_h, cols_ar)
    inside = None
    if zeros:  # the border is 0
        inside = _inside(rows, cols, h, w)
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    else:
        rows, cols = reflect_index(rows, h), reflect_index(cols, w)
    lin = (idx * (c * h * w)).view(-1, 1, 1, 1) + ar_c + (rows * w).view(-1, 1, h, 1) + cols.view(-1, 1, 1, w)
    out = x.view(-1)[lin]
    return out if inside is None else out.masked_fill_(~inside, 0)


def mean_border_(
    out: torch.Tensor, offset, flip, pad: int, ar_h: torch.Tensor, ar_w: torch.Tensor
) -> torch.Tensor:
    """The pixels of the crops at ``offset`` (flipped where ``flip``) that come from the padding set to 0, in
    place: after normalisation, the mean colour (``ar_h``, ``ar_w``: the aranges of the side, on the device)."""
    _, _, h, w = out.shape
    rows, cols = crop_coordinates(offset, flip, pad, ar_h, ar_w)
    return out.masked_fill_(~_inside(rows, cols, h, w), 0)


def crop_coordinates(offset, flip, pad: int, rows_ar: torch.Tensor, cols_ar: torch.Tensor):
    """``(rows [B, H], cols [B, W])``: where in the image (before padding) each pixel of the crops at ``offset``
    comes from, the crop taken first and then flipped where ``flip`` (the AutoAugment code's order)."""
    w = len(cols_ar)
    rows = offset[:, 0:1] + rows_ar - pad  # [B, H], in the image's coordinates
    cols = offset[:, 1:2] + cols_ar - pad  # [B, W]
    if flip is not None:
        flipped = offset[:, 1:2] + (w - 1 - cols_ar) - pad
        cols = torch.where(flip[:, None], flipped, cols)
    return rows, cols


def _inside(rows: torch.Tensor, cols: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``[B, 1, H, W]``: which pixels of the crops come from the image, not from its padding."""
    return ((rows >= 0) & (rows < h)).view(-1, 1, h, 1) & ((cols >= 0) & (cols < w)).view(-1, 1, 1, w)


# ---------------------------------------------------------------------------------------------- ImageNet-style


def _imagenet_params(n: int, g: torch.Generator) -> dict:
    """Per-sample parameters of fb.resnet.torch's augmentation: a random-sized crop (area 8-100%, aspect ratio
    uniform in [3/4, 4/3], width and height swapped half the time), jitter factors 1 + U(-0.4, 0.4) for
    brightness, contrast and saturation with a random order of the three, and PCA lighting 0.1."""
    area = torch.empty(n).uniform_(0.08, 1.0, generator=g)
    ratio = torch.empty(n).uniform_(3 / 4, 4 / 3, generator=g)
    swap = torch.rand(n, generator=g) < 0.5
    ratio = torch.where(swap, 1 / ratio, ratio)
    # A crop that does not fit is clamped to the image (fb.resnet.torch draws again, up to 10 times).
    cw = (area * ratio).sqrt().clamp(max=1.0)  # crop width and height as fractions of the image
    ch = (area / ratio).sqrt().clamp(max=1.0)
    cx = torch.rand(n, generator=g) * (1 - cw) + cw / 2  # crop centre, 0..1
    cy = torch.rand(n, generator=g) * (1 - ch) + ch / 2
    jitter = torch.empty(n, 3).uniform_(0.6, 1.4, generator=g)  # brightness, contrast, saturation factors
    order = torch.rand(n, 3, generator=g).argsort(1)  # the order the three are applied in
    lighting = torch.randn(n, 3, generator=g) * 0.1
    return {"box": torch.stack([cx, cy, cw, ch], 1), "jitter": jitter, "order": order, "lighting": lighting}


def _imagenet_augment(x: torch.Tensor, p: dict, size: int) -> torch.Tensor:
    """Random-sized crop + flip (one batched bilinear resampling), colour jitter in each sample's order with
    no clamping, and PCA lighting, as fb.resnet.torch.

    ``x`` is float on the 0..255 scale; so is the result (values may leave 0..255, as there).
    """
    b, c = x.shape[:2]
    cx, cy, cw, ch = p["box"].to(x.dtype).unbind(1)
    sx = torch.where(p["flip"], -cw, cw)
    theta = torch.zeros(b, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2] = sx, cx * 2 - 1
    theta[:, 1, 1], theta[:, 1, 2] = ch, cy * 2 - 1
    grid = F.affine_grid(theta, [b, c, size, size], align_corners=False)
    x = F.grid_sample(x / 255, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    factors = p["jitter"].to(x.dtype)
    order = p.get("order")
    if order is None:
        order = torch.arange(3, device=x.device).expand(b, 3)
    for position in range(3):
        which = order[:, position].view(-1, 1, 1, 1)
        alpha = factors.gather(1, order[:, position : position + 1]).view(-1, 1, 1, 1)
        gray = x.mean(1, keepdim=True) if c == 1 else (x * _luma(x)).sum(1, keepdim=True)
        target = torch.where(which == 1, gray.mean((2, 3), keepdim=True), gray)
        target = torch.where(which == 0, torch.zeros_like(target), target)
        x = x * alpha + (1 - alpha) * target
    if c == 3:
        eigval = torch.tensor(IMAGENET_EIGVAL, dtype=x.dtype, device=x.device)
        eigvec = torch.tensor(IMAGENET_EIGVEC, dtype=x.dtype, device=x.device)
        rgb = (p["lighting"].to(x.dtype) * eigval) @ eigvec.T  # [B, 3]
        x = x + rgb.view(b, 3, 1, 1)
    return x.mul_(255)


def _luma(x: torch.Tensor) -> torch.Tensor:
    return torch.tensor((0.299, 0.587, 0.114), dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
