"""What the package knows about each data set: shapes, splits, defaults, files and normalisation constants."""

from __future__ import annotations

from dataclasses import dataclass

from wrn.errors import ConfigError, DataError


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: where it lives on the web, where it goes under the data root, and its md5."""

    url: str
    filename: str
    md5: str


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about one data set. ``num_classes`` of ``imagefolder`` is ``None`` until a folder is read."""

    name: str
    num_classes: int | None
    in_channels: int
    image_size: int | None  # native side length (the crop size for ImageNet)
    train_split: str
    test_split: str
    splits: tuple[str, ...]
    normalization: str  # default, a name accepted by normalization_constants or 'zca'
    augment: str  # default augmentation of the training loader
    classes: tuple[str, ...] | None = None  # class names, for folders
    # The last partial training batch: dropped in the CIFAR/SVHN recipe, kept by fb.resnet.torch (ImageNet).
    drop_last: bool = True
    train_size: int | None = None  # images of the training and test splits (None: a folder, any size)
    test_size: int | None = None


CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
# The fine labels in their index order (alphabetical), as the archive's meta file lists them.
CIFAR100_CLASSES = tuple(
    """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel
    can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur
    dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion
    lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear
    pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark
    shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone
    television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
)
DIGITS = tuple(str(d) for d in range(10))

DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        "cifar10",
        10,
        3,
        32,
        "train",
        "test",
        ("train", "test"),
        "cifar10",
        "flip-crop",
        classes=CIFAR10_CLASSES,
        train_size=50_000,
        test_size=10_000,
    ),
    "cifar100": DatasetInfo(
        "cifar100",
        100,
        3,
        32,
        "train",
        "test",
        ("train", "test"),
        "cifar10",
        "flip-crop",
        classes=CIFAR100_CLASSES,
        train_size=50_000,
        test_size=10_000,
    ),
    "svhn": DatasetInfo(
        "svhn",
        10,
        3,
        32,
        "train+extra",
        "test",
        ("train", "extra", "train+extra", "test"),
        "svhn",
        "none",
        classes=DIGITS,  # label 10 of the files is digit 0
        train_size=73_257 + 531_131,
        test_size=26_032,
    ),
    "digits": DatasetInfo(
        "digits",
        10,
        1,
        8,
        "train",
        "test",
        ("train", "test"),
        "digits",
        "none",
        classes=DIGITS,
        train_size=1_437,
        test_size=360,
    ),
    "imagenet": DatasetInfo(
        "imagenet",
        1000,
        3,
        224,
        "train",
        "val",
        ("train", "val"),
        "imagenet",
        "imagenet",
        drop_last=False,
        train_size=1_281_167,
        test_size=50_000,
    ),
    "imagefolder": DatasetInfo(
        "imagefolder", None, 3, None, "train", "val", ("train", "val"), "imagenet", "flip-crop"
    ),
}

# Per-channel mean and std on the 0..255 scale.
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # The paper's (and its official code's) CIFAR constants, used for CIFAR-100 as well.
    "cifar10": ((125.3, 123.0, 113.9), (63.0, 62.1, 66.7)),
    # The true CIFAR-100 training-set statistics (0.5071, 0.4865, 0.4409) / (0.2673, 0.2564, 0.2762) x 255.
    "cifar100": ((129.3, 124.1, 112.4), (68.2, 65.4, 70.4)),
    # SVHN: pixels / 255 only.
    "svhn": ((0.0, 0.0, 0.0), (255.0, 255.0, 255.0)),
    # Pixels in [0, 1] (pixels / 255), whatever the data set: what models that normalise inside their forward
    # take (the robustness WRNs that `wrn convert` imports).
    "pixels": ((0.0, 0.0, 0.0), (255.0, 255.0, 255.0)),
    # SVHN's statistics (0.4380, 0.4440, 0.4730) / (0.1751, 0.1771, 0.1744) x 255, as USB normalises it.
    "svhn-stats": ((111.69, 113.22, 120.615), (44.6505, 45.1605, 44.472)),
    # Pixels in [-1, 1] (x / 127.5 - 1): FixMatch's code (google-research/fixmatch libml/data.py, record_parse:
    # x * 2 / 255 - 1, and no further whitening by default)
    "fixmatch": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    "imagenet": ((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)),
    # The bundled 8x8 digits after scaling to 0..255 (statistics of all 1,797 images).
    "digits": ((77.85,), (95.85,)),
    "none": ((0.0,), (1.0,)),
}

NORMALIZATION_CHOICES = (*NORMALIZATIONS, "zca")
AUGMENT_CHOICES = ("none", "crop", "flip-crop", "imagenet")
# The per-image policies of training (wrn.data.policies builds each one's transform)
POLICY_CHOICES = (
    "none",
    "autoaugment",
    "autoaugment-paper",
    "autoaugment-sam",
    "randaugment",
    "trivialaugment",
)
# The strong augmentations of semi-supervised training (--strong-policy), after the weak flip and crop:
# FixMatch's RA (wrn.data.fixmatch_augment) and torchvision's RandAugment, each followed by FixMatch's Cutout
STRONG_POLICIES = ("fixmatch-ra", "randaugment")
STRONG_ON_DEVICE = (
    "fixmatch-ra",
)  # the strong policies with a batched version on the device (the rest: workers)
# The crop of ``crop`` / ``flip-crop``: 4 pixels on each side of a 32x32 image (the paper's); smaller images
# keep that share of their side (1 pixel on the 8x8 digits), as a grid keeps Cutout's.
CROP_PAD = 4


def crop_pad(side: int) -> int:
    """The padding of the training crop of images ``side`` pixels wide: 4 from 32 up, the same share below."""
    return CROP_PAD if side >= 32 else max(1, round(CROP_PAD * side / 32))


# How the crop of ``crop`` / ``flip-crop`` fills its border: the paper's reflection, black (torchvision's
# RandomCrop(padding=4), which the Cutout code uses), or the AutoAugment code's: the normalised image padded with 0,
# the mean colour, at offsets 0..2*pad-1 (augmentation_transforms.py, zero_pad_and_crop)
CROP_PADDINGS = ("reflect", "zeros", "mean")


def normalization_constants(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``(mean, std)`` on the 0..255 scale for a normalisation name: out = (x - mean) / std."""
    if name == "zca":
        raise ConfigError(
            "normalization 'zca' is a whitening transform, not a mean/std pair: use wrn.data.zca_whiten "
            "or make_loaders(normalization='zca')."
        )
    if name not in NORMALIZATIONS:
        raise ConfigError(
            f"unknown normalization {name!r}: choose one of {', '.join(NORMALIZATION_CHOICES)}."
        )
    return NORMALIZATIONS[name]


def pixel_constants(name: str, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of a normalisation on the pixel scale [0, 1] (:func:`normalization_for` over 255): what
    a model that takes pixels in [0, 1] applies inside its forward (attacks act on such pixels)."""
    mean, std = normalization_for(name, channels)
    return tuple(m / 255 for m in mean), tuple(s / 255 for s in std)


def normalization_for(name: str, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of a normalisation, one value per image channel: grayscale images with RGB constants get
    their average, a single value is repeated; a count that fits neither is a :class:`ConfigError`."""
    mean, std = normalization_constants(name)
    if len(mean) == channels:
        return mean, std
    if len(mean) == 1:
        return mean * channels, std * channels
    if channels == 1:
        return (sum(mean) / len(mean),), (sum(std) / len(std),)
    raise ConfigError(f"normalization {name!r} has {len(mean)} channels but the images have {channels}.")


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a data set name, or a :class:`DataError` listing the known names."""
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}: choose one of {', '.join(DATASETS)}.")
    return DATASETS[name]


_CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
_SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"

# The archive (or file) to download for each data set, and the md5 of every file read from it (docs/data.md).
ARCHIVES: dict[str, RemoteFile] = {
    "cifar10": RemoteFile(_CIFAR10_URL, "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": RemoteFile(_CIFAR100_URL, "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
}

MEMBER_MD5: dict[str, dict[str, str]] = {
    "cifar10": {
        "cifar-10-batches-py/data_batch_1": "c99cafc152244af753f735de768cd75f",
        "cifar-10-batches-py/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "cifar-10-batches-py/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "cifar-10-batches-py/data_batch_4": "634d18415352ddfa80567beed471001a",
        "cifar-10-batches-py/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "cifar-10-batches-py/test_batch": "40351d587109b95175f43aff81a1287e",
    },
    "cifar100": {
        "cifar-100-python/train": "16019d7e3df5f24257cddd939b257f8d",
        "cifar-100-python/test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    },
}

SVHN_FILES: dict[str, RemoteFile] = {
    "train": RemoteFile(_SVHN_URL + "train_32x32.mat", "train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "test": RemoteFile(_SVHN_URL + "test_32x32.mat", "test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
    "extra": RemoteFile(_SVHN_URL + "extra_32x32.mat", "extra_32x32.mat", "a93ce644f1a588dc4d68dda5feec44a7"),
}


def preprocessing_record(info: DatasetInfo, normalization: str, augment: str) -> dict:
    """What inference needs to feed a model trained on ``info``: the input's channels and size, the
    normalisation ``(pixel - mean) / std`` on the 0..255 scale, the test transform and the class names.
    Stored in a trained model's ``model.json`` (``metadata.input`` and ``metadata.classes``)."""
    record = {
        "channels": int(info.in_channels),
        "size": int(info.image_size) if info.image_size else None,
        "normalization": normalization,
        # how an image of another size is brought to `size`: fb.resnet.torch's scale + centre crop for the
        # ImageNet recipe, a resize of the short side + centre crop otherwise
        "resize": "imagenet" if augment == "imagenet" else "short-side",
    }
    if normalization != "zca":
        mean, std = normalization_for(normalization, info.in_channels)
        record.update(mean=list(mean), std=list(std))
    return record
