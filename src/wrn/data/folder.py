"""Folders of images (ImageNet and any ``root/train/<class>/*``, ``root/val/<class>/*`` layout).

Large folders go through torchvision's ImageFolder and a DataLoader (worker processes, pinned memory) wrapped
in :class:`FolderLoader`, which has the same epoch / ``state_dict`` protocol as the device-resident loader.
Small folders (under 100k images of at most 64x64) are read into tensors once by :func:`read_folder_arrays`
and then use the device-resident fast path.
"""

from __future__ import annotations

import heapq
import math
import os
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets, transforms

from wrn.data.device_loader import IMAGENET_EIGVAL, IMAGENET_EIGVEC
from wrn.data.policies import ERASING_RATIO, ERASING_SCALE, Normalize255, PerImage, die_with_parent
from wrn.data.protocol import EpochLoader
from wrn.errors import ConfigError, DataError
from wrn.paths import not_a_file
from wrn.seeds import stream_seed

IMG_EXTENSIONS = tuple(datasets.folder.IMG_EXTENSIONS)
SMALL_MAX_IMAGES = 100_000
SMALL_MAX_SIDE = 64


# ---------------------------------------------------------------------------------------------- scanning


def split_dir(root: str | os.PathLike | None, split: str) -> Path:
    """``root/split``, or a :class:`DataError` saying what is missing and which layout is expected."""
    if root is None:
        raise DataError("an image folder needs a data root: pass root=DIR holding DIR/train/<class>/*.")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data root {root} does not exist: point it at a folder holding train/<class>/* and val/<class>/*."
        )
    path = root / split
    if not path.is_dir():
        raise DataError(
            f"{path} does not exist: an image folder needs {root}/{split}/<class>/<image> (one folder per class)."
        )
    return path


def find_classes(directory: str | os.PathLike) -> tuple[list[str], dict[str, int]]:
    """Sorted class folder names of ``directory`` and their indices."""
    classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(
            f"{directory} holds no class folders: put each class's images in {directory}/<class>/."
        )
    return classes, {c: i for i, c in enumerate(classes)}


def scan_samples(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
    """(path, class index) of every image under ``directory/<class>/`` (recursively), sorted per class.

    torchvision's ``make_dataset`` contract: a file counts if its name ends with one of ``extensions``
    (default: :data:`IMG_EXTENSIONS`) or, instead, if ``is_valid_file(path)`` says so; not both. Links are
    followed within a class folder and out of the split's folder, each folder and file once: a link that loops
    (to a folder above), leads into another class's folder, or to a folder or image already read is skipped,
    and a warning says how many were. A FIFO, socket, device or broken link named as an image (reading a FIFO
    blocks until a writer comes) is a :class:`DataError`.
    """
    if extensions is not None and is_valid_file is not None:
        raise ValueError("give extensions or is_valid_file, not both")
    if is_valid_file is None:
        suffixes = tuple(
            e.lower()
            for e in ((extensions,) if isinstance(extensions, str) else extensions or IMG_EXTENSIONS)
        )

        def is_valid_file(path: str) -> bool:
            return path.lower().endswith(suffixes)

    samples, skipped = [], []
    for cls, idx in sorted(class_to_idx.items(), key=lambda kv: kv[1]):
        cdir = Path(directory) / cls
        found = [(path, idx) for path in _class_files(cdir, is_valid_file, skipped)]
        if not found and not allow_empty:
            raise DataError(
                f"class folder {cdir} holds no images (extensions {', '.join(IMG_EXTENSIONS)}): add images or "
                f"remove the folder."
            )
        samples += found
    if skipped:
        import warnings

        warnings.warn(
            f"{directory}: skipped {len(skipped)} link(s) that loop, lead into another class's folder or to images "
            f"already read, e.g. {skipped[0]}; each image counts once, in its own class",
            UserWarning,
            stacklevel=1,  # one place: shown once, however many times the folder is scanned
        )
    return samples


def _class_files(cdir: Path, is_valid_file, skipped: list[str]) -> list[str]:
    """The image files under one class folder in ``os.walk``'s sorted order (folder, then name), each real
    folder and file once; the links skipped (see :func:`_stays`) go to ``skipped``."""
    tree, home = os.path.realpath(cdir.parent), os.path.realpath(cdir)
    folders, seen, files = [str(cdir)], set(), []
    while folders:
        folder = heapq.heappop(folders)  # the smallest path first: a folder reached twice keeps that one
        real = os.path.realpath(folder)
        if real in seen or not _stays(real, home, tree):
            skipped.append(folder)
            continue
        seen.add(real)
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir():
                        heapq.heappush(folders, entry.path)
                    elif is_valid_file(entry.path):
                        # a link by its target, another file by its folder's real path (no system call)
                        link = entry.is_symlink()
                        key = os.path.realpath(entry.path) if link else os.path.join(real, entry.name)
                        files.append((folder, entry.name, key, entry))
        except OSError as exc:
            raise DataError(
                f"{folder} cannot be read ({exc.strerror}): make it readable or remove it."
            ) from None
    unique, taken = [], set()
    for _folder, _name, key, entry in sorted(files, key=lambda f: f[:2]):
        if key in taken or not _stays(key, home, tree):
            skipped.append(entry.path)
            continue
        taken.add(key)
        if not entry.is_file():  # from the directory entry: a system call only for a link
            raise DataError(
                f"{entry.path} is {not_a_file(entry.path)}, not an image file: remove it from the folder."
            )
        unique.append(entry.path)
    return unique


def _stays(real: str, home: str, tree: str) -> bool:
    """Whether a real path found in the class folder ``home`` may be read: inside ``home``, or outside the
    split's folder ``tree`` altogether (images kept elsewhere); not in another class's folder, and not a
    folder above the class (a loop)."""
    if real == home or real.startswith(home + os.sep):
        return True
    inside_tree = real == tree or real.startswith(tree + os.sep)
    above = home.startswith(real.rstrip(os.sep) + os.sep)
    return not inside_tree and not above


# PIL's modes of one channel of more than 8 bits: 16-bit PNG and TIFF, and the 32-bit integers that older
# Pillows give 16-bit PNGs. Their values are on the 0..65535 scale.
_WIDE_GRAY = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def load_image(path: str, mode: str | None = "RGB"):
    """Open and decode an image with PIL, converted to ``mode`` unless None; a :class:`DataError` if it fails.

    The one reader of image files (``wrn predict`` and image folders alike). A grayscale image of 16 bits per
    pixel is scaled to 8 bits (``round(v / 257)``: 65535 is white), never clipped as PIL's ``convert`` does,
    which makes every value above 255 white. A FIFO, socket or device is refused before it is opened."""
    from PIL import Image

    kind = not_a_file(path)
    if kind is not None:
        raise DataError(f"{path} is {kind}, not an image file: pass an image file.")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in _WIDE_GRAY:
                img = _to_8_bits(img)
            return img.convert(mode) if mode else img.copy()
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise DataError(f"{path} cannot be decoded as an image ({exc}): replace or delete it.") from None


def _to_8_bits(img):
    """A 16-bit grayscale PIL image as an 8-bit one ("L"), each value v as round(v / 257)."""
    from PIL import Image

    wide = np.asarray(img).astype(np.int64).clip(0, 65535)
    return Image.fromarray(((wide + 128) // 257).astype(np.uint8), mode="L")


class CheckedImageFolder(datasets.ImageFolder):
    """torchvision's ImageFolder whose empty class folders and undecodable images raise a clear DataError."""

    def __init__(self, root, transform=None):
        # DatasetFolder's own constructor, so that make_dataset gets this package's image extensions
        datasets.DatasetFolder.__init__(self, str(root), load_image, IMG_EXTENSIONS, transform=transform)
        self.imgs = self.samples

    def find_classes(self, directory):
        return find_classes(directory)

    @staticmethod
    def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        return scan_samples(directory, class_to_idx, extensions, is_valid_file, allow_empty)


def is_small_folder(root, split: str = "train", image_size: int | None = None) -> bool:
    """Whether a folder is small enough for the device-resident path: < 100k images of <= 64x64."""
    if image_size is not None and image_size > SMALL_MAX_SIDE:
        return False
    directory = split_dir(root, split)
    _, class_to_idx = find_classes(directory)
    samples = scan_samples(directory, class_to_idx)
    if len(samples) >= SMALL_MAX_IMAGES:
        return False
    if image_size is not None:
        return True
    from PIL import Image

    try:
        with Image.open(samples[0][0]) as img:
            return max(img.size) <= SMALL_MAX_SIDE
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(
            f"{samples[0][0]} cannot be decoded as an image ({exc}): replace or delete it."
        ) from None


def read_folder_arrays(
    root,
    split: str,
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    classes=None,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Read a whole split into uint8 [N, C, H, W] and int64 labels, once.

    ``image_size``: a side S (S x S), an (H, W) pair, or None for the size of the first image.
    Images that differ from the target size are resized (bilinear). ``channels`` None: 1 if every image is
    grayscale, else 3. ``classes``: the class list to follow (the training split's), checked against the folder.
    """
    from PIL import Image

    directory = split_dir(root, split)
    found, class_to_idx = find_classes(directory)
    if classes is not None and list(classes) != found:
        raise DataError(
            f"{directory} has classes {found[:5]}... that differ from the training split's {list(classes)[:5]}...: "
            f"both splits need the same class folders."
        )
    samples = scan_samples(directory, class_to_idx)
    images = [load_image(path, mode=None) for path, _ in samples]
    if channels is None:
        channels = 1 if all(img.mode in ("L", "1", "I;16", "I", "F") for img in images) else 3
    if isinstance(image_size, int):
        size = (image_size, image_size)
    elif image_size is not None:
        size = (int(image_size[1]), int(image_size[0]))  # PIL sizes are (width, height)
    else:
        size = images[0].size  # (width, height)
    mode = "L" if channels == 1 else "RGB"
    x = np.empty((len(images), size[1], size[0], channels), dtype=np.uint8)
    for i, img in enumerate(images):
        img = img.convert(mode)
        if img.size != size:
            img = img.resize(size, Image.BILINEAR)
        x[i] = np.asarray(img, dtype=np.uint8).reshape(size[1], size[0], channels)
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    y = torch.tensor([t for _, t in samples], dtype=torch.int64)
    return x, y, found


# ---------------------------------------------------------------------------------------------- transforms


class Lighting:
    """AlexNet-style PCA lighting noise (fb.resnet.torch) for an image tensor [C, H, W] on the 0..255 scale.

    Returns float32; the noise is drawn on the 0..1 scale (std ``alphastd``) and applied to RGB images only.
    """

    def __init__(self, alphastd: float = 0.1):
        self.alphastd = alphastd
        self.eigval = torch.tensor(IMAGENET_EIGVAL)
        self.eigvec = torch.tensor(IMAGENET_EIGVEC)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        img = img.to(torch.float32)
        if self.alphastd == 0 or img.shape[0] != 3:
            return img
        alpha = torch.randn(3) * self.alphastd
        rgb = (self.eigvec @ (alpha * self.eigval)) * 255
        return img + rgb.view(3, 1, 1).to(img.dtype)


def _round(x: float) -> int:
    """Round half away from zero, as Torch7's ``torch.round``."""
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


class FbRandomSizedCrop:
    """fb.resnet.torch's ``RandomSizedCrop`` (the paper's ImageNet recipe), on a PIL image.

    Up to 10 tries: an area of 8-100% of the image and an aspect ratio drawn UNIFORMLY from [3/4, 4/3], width
    and height swapped half the time; the first crop that fits is cut at a random place and resized to
    ``size`` x ``size`` (bicubic). Else: the short side scaled to ``size``, then the centre crop. Draws from
    torch's generator, so the loader's per-sample seeding makes it reproducible.
    """

    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, img):
        from PIL import Image

        width, height = img.size
        for _ in range(10):
            area = _uniform(0.08, 1.0) * width * height
            ratio = _uniform(3 / 4, 4 / 3)
            w, h = _round(math.sqrt(area * ratio)), _round(math.sqrt(area / ratio))
            if float(torch.rand(())) < 0.5:
                w, h = h, w
            if h <= height and w <= width:
                y = int(torch.randint(0, height - h + 1, ()))
                x = int(torch.randint(0, width - w + 1, ()))
                return img.crop((x, y, x + w, y + h)).resize((self.size, self.size), Image.BICUBIC)
        return FbCenterCrop(self.size)(fb_scale(img, self.size))


class FbScale:
    """fb.resnet.torch's ``Scale``: the short side to ``size`` (bicubic), the aspect ratio kept."""

    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, img):
        return fb_scale(img, self.size)


def fb_scale(img, size: int):
    """The short side of a PIL image to ``size`` (bicubic), as fb.resnet.torch's ``Scale``."""
    from PIL import Image

    width, height = img.size
    if (width <= height and width == size) or (height <= width and height == size):
        return img
    if width < height:
        return img.resize((size, _round(height / width * size)), Image.BICUBIC)
    return img.resize((_round(width / height * size), size), Image.BICUBIC)


class FbCenterCrop:
    """fb.resnet.torch's ``CenterCrop``: the offsets round up, ``ceil((W - size) / 2)``."""

    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, img):
        width, height = img.size
        x, y = math.ceil((width - self.size) / 2), math.ceil((height - self.size) / 2)
        return img.crop((x, y, x + self.size, y + self.size))


class FbColorJitter:
    """fb.resnet.torch's ``ColorJitter`` on a float image tensor [C, H, W] (any scale): brightness, contrast
    and saturation, each a blend with factor ``1 + U(-v, v)``, applied in a random order and never clamped
    (torchvision's clamps to the valid range after each step and draws the factors differently)."""

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4):
        self.amounts = (brightness, contrast, saturation)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        img = img.to(torch.float32)
        for which in torch.randperm(3).tolist():
            amount = self.amounts[which]
            if amount == 0:
                continue
            alpha = 1.0 + _uniform(-amount, amount)
            if which == 0:  # brightness: blend with black
                img = img * alpha
            else:
                gray = _grayscale(img)
                if which == 1:  # contrast: blend with the mean gray level
                    gray = gray.mean()
                img = img * alpha + (1 - alpha) * gray
        return img


def _grayscale(img: torch.Tensor) -> torch.Tensor:
    if img.shape[0] != 3:
        return img.mean(0, keepdim=True)
    return (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]).unsqueeze(0)


def folder_transform(
    train: bool,
    augment: str,
    size: int,
    pad: int = 4,
    per_image: PerImage | None = None,
    normalize=None,
    crop_padding: str = "reflect",
    rotate: float = 0.0,
):
    """The per-image transform of the DataLoader path; produces uint8 (float 0..255 for ``imagenet``).

    ``imagenet`` follows fb.resnet.torch, which the paper's ImageNet runs used: training RandomSizedCrop,
    ColorJitter(0.4, 0.4, 0.4) in random order without clamping, PCA lighting 0.1 and a flip; evaluation the
    short side scaled to 256/224 of ``size`` (bicubic) and the centre crop.

    ``per_image`` (training): its policy runs on the uint8 image after the crop and flip; with random erasing
    the images are normalised here with ``normalize=(mean, std)`` on the 0..255 scale (or left on it) and end
    with ``RandomErasing(p, value=0)``, torchvision's order; the result is then float.

    ``rotate`` (training; augment none, crop or flip-crop): ``RandomRotation(rotate)`` after the crop and flip.
    """
    if train and per_image is not None and per_image.active:
        base = folder_transform(
            True, augment, size, pad, normalize=normalize, crop_padding=crop_padding, rotate=rotate
        )
        return _with_per_image(base, augment, per_image, normalize)
    to_tensor = transforms.PILToTensor()
    if not train:
        if augment == "imagenet":
            return transforms.Compose(
                [
                    FbScale(_round(size * 256 / 224)),
                    FbCenterCrop(size),
                    to_tensor,
                ]
            )
        return transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), to_tensor])
    if augment == "imagenet":
        return transforms.Compose(
            [
                FbRandomSizedCrop(size),
                to_tensor,
                FbColorJitter(0.4, 0.4, 0.4),
                Lighting(0.1),
                transforms.RandomHorizontalFlip(),
            ]
        )
    steps = [transforms.Resize(size), transforms.CenterCrop(size)]
    if augment in ("crop", "flip-crop") and crop_padding == "mean":
        return transforms.Compose([*steps, *_mean_padded_crop(augment, size, pad, normalize), to_tensor])
    if augment == "flip-crop":
        steps.append(transforms.RandomHorizontalFlip())
    if augment in ("crop", "flip-crop"):
        mode = "constant" if crop_padding == "zeros" else "reflect"
        steps += [transforms.Pad(pad, padding_mode=mode), transforms.RandomCrop(size)]
    if rotate:
        steps.append(transforms.RandomRotation(rotate))
    return transforms.Compose([*steps, to_tensor])


def _mean_padded_crop(augment: str, size: int, pad: int, normalize) -> list:
    """The AutoAugment code's crop (``zero_pad_and_crop``, then ``random_flip``): offsets 0..2*pad-1 (the pad's
    last row and column are never reached: padded by pad - 1 on the right and bottom), the border the mean colour
    (here rounded to whole gray levels, on the uint8 image), the flip after the crop."""
    fill = tuple(round(m) for m in normalize[0]) if normalize is not None else 0
    steps = [transforms.Pad((pad, pad, pad - 1, pad - 1), fill=fill), transforms.RandomCrop(size)]
    return steps + ([transforms.RandomHorizontalFlip()] if augment == "flip-crop" else [])


def _with_per_image(base: transforms.Compose, augment: str, per_image: PerImage, normalize):
    policy = per_image.transform(mean=normalize[0] if normalize is not None else None)
    if policy is not None and augment == "imagenet":
        raise ConfigError(
            f"{per_image.describe()} works after the crop and flip of augment none, crop or flip-crop, not after "
            "the imagenet augmentation: drop --policy or choose another --augment."
        )
    steps = [*base.transforms, *([policy] if policy is not None else [])]
    if per_image.erasing > 0:
        steps.append(Normalize255(*normalize) if normalize is not None else transforms.Lambda(_to_float))
        steps.append(transforms.RandomErasing(per_image.erasing, ERASING_SCALE, ERASING_RATIO, value=0))
    return transforms.Compose(steps)


def _to_float(img: torch.Tensor) -> torch.Tensor:
    return img.to(torch.float32)


# ---------------------------------------------------------------------------------------------- loader


class _SeededSamples(torch.utils.data.Dataset):
    """``dataset[index]`` with torch's random generator seeded for that one sample (torchvision's random
    transforms draw from it), the caller's generator state left untouched."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class FolderLoader(EpochLoader):
    """A DataLoader over an image folder with the device loader's protocol: one ``for`` loop is one epoch.

    The order of every epoch is a permutation drawn from ``seed`` and the epoch index (training) or the folder
    order (evaluation); each rank takes positions ``rank::world_size`` of it. ``state_dict()`` holds the epoch
    and the batches already served, and a restored loader skips exactly those. Batches arrive on ``device`` as
    float tensors normalised with ``normalize=(mean, std)`` on the 0..255 scale.

    Every sample's random augmentation is seeded from (seed, epoch, its position in the epoch's permutation),
    whichever process or worker decodes it: the batches are the same for any number of workers, differ across
    ranks, and a run resumed half-way through an epoch sees exactly the augmentation it would have seen.
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        train: bool = True,
        normalize=None,
        device="cpu",
        seed: int = 0,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 4,
        dtype: torch.dtype = torch.float32,
    ):
        self._setup_protocol(
            len(dataset), batch_size, train, drop_last, rank, world_size, seed, normalize, device, dtype
        )
        self.dataset = dataset
        self.workers = int(workers)

    def epoch_batches(self) -> list[list[int]]:
        """This rank's batches (lists of dataset indices) of the current epoch, in order."""
        return [[index for index, _ in batch] for batch in self._epoch_plan()]

    def _epoch_plan(self) -> list[list[tuple[int, int]]]:
        """This rank's batches of (dataset index, augmentation seed) pairs for the current epoch."""
        n = self.num_samples
        if self.train:
            g = torch.Generator().manual_seed(self._epoch_seed())
            order = torch.randperm(n, generator=g)[: self._shard_size * self.world_size]
        else:
            order = torch.arange(n)
        positions = range(self.rank, len(order), self.world_size)
        base = self._epoch_seed() * 4_194_319  # one seed per position of the whole epoch, all ranks apart
        shard = [(int(order[p]), (base + p) % (2**63)) for p in positions]
        bs = self.batch_size
        return [shard[i * bs : (i + 1) * bs] for i in range(len(self))]

    def _epoch_seed(self) -> int:
        return stream_seed(self.seed, "folder", self.epoch)

    def __iter__(self):
        from torch.utils.data import DataLoader

        remaining = self._epoch_plan()[self.position :]
        loader = DataLoader(
            _SeededSamples(self.dataset),
            batch_sampler=remaining,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            worker_init_fn=die_with_parent,
        )
        non_blocking = self.device.type == "cuda"
        try:
            for images, labels in loader:
                images = self._normalize_(images.to(self.device, non_blocking=non_blocking).to(self.dtype))
                self.position += 1
                yield images, labels.to(self.device, non_blocking=non_blocking)
        except DataError as exc:  # re-raised from a worker with its traceback folded into the message
            text = str(exc).strip().splitlines()
            raise DataError(text[-1].split("DataError: ", 1)[-1] if text else "") from None
        self.epoch += 1
        self.position = 0
