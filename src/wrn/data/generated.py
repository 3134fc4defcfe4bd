"""Generated training images in the ``.npz`` format of the diffusion-model data of adversarial training.

The files of Wang et al. (2023), "Better Diffusion Models Further Improve Adversarial Training" (and those of
Rebuffi/Gowal et al. that their code also reads) hold two arrays: ``image``, uint8 [N, H, W, C] (channels
last, 0..255), and ``label``, integers [N]; ``numpy.savez`` writes them uncompressed (docs/robustness.md).

:func:`read_generated` checks such a file before a run writes anything and returns its arrays. An array stored
uncompressed is memory-mapped (20M CIFAR images are 61 GB: the pages are read as batches need them); a
compressed one (``numpy.savez_compressed``) cannot be mapped and is read into memory. Nothing is unpickled: an
array of Python objects is refused from its header.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wrn.errors import ConfigError, DataError

KEYS = ("image", "label")
# the data sets whose batches can take generated images (the device-resident loader's, at their own size)
GENERATED_DATASETS = ("cifar10", "cifar100", "digits")
# Where DM-Improves-AT's generated images are published (their README's table): DATASET/1m.npz and larger files
GENERATED_SOURCE = "https://huggingface.co/datasets/P2333/DM-Improves-AT/resolve/main"


@dataclass(frozen=True)
class Generated:
    """The generated images (uint8 [N, H, W, C], memory-mapped where the file allows) and their labels
    (int64 [N], in memory), and the share ``fraction`` of every training batch they fill."""

    images: np.ndarray
    labels: np.ndarray
    fraction: float
    path: str
    mapped: bool
    # The real images an epoch counts, where they are more than those trained on: the training split before
    # images were held out of it (--adv-holdout), as their dataset_size is the set's size before its validation
    # split (core/data/semisup.py lines 13-15, 40-42; cifar10s.py line 120). None: the images trained on.
    epoch_real: int | None = None

    def __len__(self) -> int:
        return len(self.labels)


def mixed_batches(
    n_real: int, n_generated: int, batches: int, size: int, generated_per: int, g
) -> tuple[list, list]:
    """An epoch's batches of real and generated images, drawn as DM-Improves-AT's SemiSupervisedSampler draws
    them (core/data/semisup.py): the real ones in turn from a permutation, a new one when it runs out (the
    last slice of one may be short: generated images fill the batch), the generated ones uniformly with
    replacement, each batch then shuffled. Returns, per batch, the indices (into the real or the generated
    images) and whether each is a generated one; ``g`` is the loader's generator."""
    import torch

    index, generated = [], []
    order, at = None, n_real
    for _ in range(batches):
        if at >= n_real:
            order, at = torch.randperm(n_real, generator=g), 0
        real = order[at : at + size - generated_per]
        at += size - generated_per
        drawn = torch.randint(n_generated, (size - len(real),), generator=g)
        shuffle = torch.randperm(size, generator=g)
        index.append(torch.cat([real, drawn])[shuffle])
        generated.append((torch.arange(size) >= len(real))[shuffle])
    return index, generated


class Mix:
    """Generated images mixed into every batch of a device-resident training loader (its ``generated``), as
    DM-Improves-AT's ``SemiSupervisedSampler`` mixes them: of each global batch of ``global_batch``,
    ``int(fraction x global_batch)`` generated images and the rest real, an epoch ``ceil(num_real /
    global_batch)`` batches (``generated.epoch_real`` in place of ``num_real`` where images were held out). The generated images stay where they are (memory-mapped or in host memory): only
    each batch's are gathered and moved to the loader's device."""

    def __init__(self, generated: Generated, x, *, augment: str, per_image, global_batch: int, num_real: int):
        import torch

        from wrn.errors import ConfigError

        if per_image is not None or augment == "imagenet":
            raise ConfigError(
                "generated images are mixed into batches with the crop and flip of augment none, crop or "
                "flip-crop only: drop --policy / --random-erasing, or the imagenet augmentation, with --aux-data"
            )
        if x.dtype != torch.uint8:
            raise ConfigError(
                f"generated images need the uint8 real ones, but these are {x.dtype} (ZCA-whitened?)"
            )
        if tuple(generated.images.shape[1:]) != (x.shape[2], x.shape[3], x.shape[1]):
            raise ConfigError(
                f"generated images of {generated.images.shape[1:]} do not match the real ones' {x.shape[1:]}"
            )
        self.generated, self.global_batch, self.num_real, self.augment = (
            generated,
            global_batch,
            num_real,
            augment,
        )
        self.per_batch = generated_per_batch(global_batch, generated.fraction)
        if not 0 < self.per_batch < global_batch:
            raise ConfigError(
                f"--aux-fraction {generated.fraction:g} of a batch of {global_batch} is {self.per_batch} "
                "generated images: give a fraction that leaves at least one generated and one real image"
            )
        counted = generated.epoch_real or num_real
        self.batches = -(-counted // global_batch)  # their rule, whatever the share of generated ones
        self.labels = torch.from_numpy(generated.labels).to(x.device, torch.int64)

    def state(self) -> dict:
        """What must match for a saved epoch's draws to line up."""
        return {"generated": len(self.generated), "generated_per_batch": self.per_batch}

    def draw(self, g, y, rank: int, world_size: int, offset_high: int | None, rotate: float = 0.0) -> dict:
        """An epoch's plan for process ``rank``: the batches of real and generated images
        (:func:`mixed_batches`), then each slot's augmentation as the loader draws it
        (:func:`~wrn.data.device_loader.draw_augmentation`: crop offsets from ``0..offset_high-1``, flips,
        rotation angles), the slots ``rank::world_size`` of every batch, with their labels (``y``: the real
        ones'). The augmentation stays on the CPU; the images' indices and labels are on ``y``'s device."""
        import torch

        from wrn.data.device_loader import draw_augmentation

        size, device = self.global_batch, y.device
        index, generated = mixed_batches(
            self.num_real, len(self.generated), self.batches, size, self.per_batch, g
        )
        total = self.batches * size
        plan = draw_augmentation(total, self.augment, offset_high, g, rotate)
        mine = torch.arange(total).view(self.batches, size)[:, rank::world_size].reshape(-1)
        plan = {k: v[mine] for k, v in plan.items()}
        index, generated = torch.cat(index)[mine].to(device), torch.cat(generated)[mine].to(device)
        labels = torch.empty(len(index), dtype=torch.int64, device=device)
        labels[generated] = self.labels[index[generated]]
        labels[~generated] = y[index[~generated]]
        return {**plan, "index": index, "generated": generated, "label": labels}

    def gather(self, x, plan: dict, sel: slice):
        """The uint8 images of batch ``sel``: real ones from ``x`` (on the device), generated ones read from
        the file (or host memory) and moved there."""
        import torch

        idx, gen = plan["index"][sel], plan["generated"][sel]
        out = torch.empty((len(idx), *x.shape[1:]), dtype=x.dtype, device=x.device)
        out[~gen] = x[idx[~gen]]
        wanted = idx[gen].cpu().numpy()
        if len(wanted):
            images = torch.from_numpy(np.ascontiguousarray(self.generated.images[wanted]))  # [k, H, W, C]
            out[gen] = images.permute(0, 3, 1, 2).to(x.device)
        return out


def generated_per_batch(batch_size: int, fraction: float) -> int:
    """The generated images of a batch of ``batch_size``: ``int(batch_size * fraction)``, truncated as their
    ``SemiSupervisedSampler`` does (512 x 0.7 = 358.4 -> 358)."""
    return int(batch_size * fraction)


def read_generated(
    path: str | os.PathLike,
    *,
    image_shape: tuple[int, int, int],
    num_classes: int,
    batch_size: int,
    fraction: float,
) -> Generated:
    """The arrays of ``path``, checked: ``image`` uint8 [N, *image_shape] (H, W, C), ``label`` integers in
    ``0..num_classes-1``, one per image, and at least one batch's share of images (``int(batch_size *
    fraction)``). Any other file raises :class:`DataError` with one sentence."""
    path = Path(path).expanduser()
    where = f"--aux-data {path}"
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise DataError(
            f"{where} {what}: give the .npz file of the generated images (DM-Improves-AT's are at "
            f"{GENERATED_SOURCE}, e.g. cifar10/1m.npz)"
        )
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise DataError(
            f"{where} is not a .npz file ({_reason(exc)}): give a file written by numpy.savez with arrays "
            f"'image' and 'label'"
        ) from None
    with archive:
        members = {Path(n).stem: n for n in archive.namelist() if n.endswith(".npy")}
        missing = [k for k in KEYS if k not in members]
        if missing:
            found = ", ".join(repr(k) for k in sorted(members)) or "none"
            raise DataError(
                f"{where} has no array {missing[0]!r} (it holds {found}): the generated data need arrays "
                "'image' (uint8, N x H x W x C) and 'label' (integers)"
            )
        try:
            images, mapped = _array(path, archive, members["image"], where, "image", mmap=True)
            labels, _ = _array(path, archive, members["label"], where, "label", mmap=False)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"{where} is corrupt ({_reason(exc)}): write it again with numpy.savez") from None
    _check_images(images, image_shape, where)
    labels = _checked_labels(labels, len(images), num_classes, where)
    need = generated_per_batch(batch_size, fraction)
    if len(images) < need:
        raise DataError(
            f"{where} holds {len(images)} images, fewer than the {need} generated images of each batch of "
            f"{batch_size} at --aux-fraction {fraction:g}: give more images, or a smaller --aux-fraction or "
            "--batch-size"
        )
    return Generated(images, labels, float(fraction), str(path), mapped)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().rstrip(".") or type(exc).__name__
    return text.splitlines()[0]


def _header(stream) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(stream)
    raise ValueError(f"unsupported .npy version {version}")


def _array(path: Path, archive: zipfile.ZipFile, member: str, where: str, key: str, mmap: bool):
    """One member as an array, checked from its header first: mapped from the file where it is stored
    uncompressed (and ``mmap``), else read into memory without unpickling."""
    info = archive.getinfo(member)
    with archive.open(member) as stream:
        shape, fortran, dtype = _header(stream)
        header_size = stream.tell()
    if dtype.hasobject:
        raise DataError(
            f"{where}: array {key!r} holds Python objects (a pickle), which wrn never loads: write it as "
            "numbers (numpy.savez of uint8 images and integer labels)"
        )
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if info.file_size != header_size + nbytes:
        raise DataError(
            f"{where}: array {key!r} is cut short ({info.file_size - header_size} of its {nbytes} bytes): "
            "download or write it again"
        )
    if mmap and info.compress_type == zipfile.ZIP_STORED and nbytes > 0:
        with open(path, "rb") as f:  # the member's data start after its local header and the .npy header
            f.seek(info.header_offset)
            local = f.read(30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise ValueError(f"bad local header of {member}")
        start = info.header_offset + 30 + int.from_bytes(local[26:28], "little")
        start += int.from_bytes(local[28:30], "little") + header_size
        if start + nbytes > path.stat().st_size:
            raise DataError(
                f"{where}: array {key!r} runs past the end of the file: download or write it again"
            )
        order = "F" if fortran else "C"
        return np.memmap(path, dtype=dtype, mode="r", offset=start, shape=shape, order=order), True
    with archive.open(member) as stream:  # (checks the CRC as it reads)
        return np.lib.format.read_array(stream, allow_pickle=False), False


def _check_images(images: np.ndarray, image_shape: tuple[int, int, int], where: str) -> None:
    h, w, c = image_shape
    if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (h, w, c):
        raise DataError(
            f"{where}: 'image' is {images.dtype} {' x '.join(map(str, images.shape))}, but this data set's "
            f"images need uint8 N x {h} x {w} x {c} (pixels 0..255, channels last): generate them at its size"
        )


def _checked_labels(labels: np.ndarray, n: int, num_classes: int, where: str) -> np.ndarray:
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise DataError(
            f"{where}: 'label' is {labels.dtype} {' x '.join(map(str, labels.shape))}, not one integer per "
            "image: write the class indices as integers"
        )
    if len(labels) != n:
        raise DataError(f"{where} has {n} images but {len(labels)} labels: give one label per image")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise DataError(
            f"{where}: label {bad} is not a class of this data set (0..{num_classes - 1}): label the images "
            "with its classes"
        )
    return np.ascontiguousarray(labels, dtype=np.int64)


def check_generated_state(saved: dict, here: dict) -> None:
    """A loader state saved with another number or share of generated images than this loader's (``here``:
    its state) is one sentence: its draws would not line up."""
    a, b = [(int(s.get("generated", 0)), int(s.get("generated_per_batch", 0))) for s in (saved, here)]
    if a != b:
        raise ConfigError(
            f"the saved loader state has {a[0]} generated images, {a[1]} a batch, but this loader has {b[0]}, "
            f"{b[1]} a batch: resume with the same --aux-data file and --aux-fraction."
        )
