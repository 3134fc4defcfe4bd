"""``make_loaders``: the train and test loaders of any supported data set, with the paper's defaults."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from wrn.data.arrays import ARRAY_DATASETS, load_arrays
from wrn.data.device_loader import DeviceLoader
from wrn.data.folder import (
    CheckedImageFolder,
    FolderLoader,
    folder_transform,
    is_small_folder,
    read_folder_arrays,
)
from wrn.data.folder import split_dir as folder_split_dir
from wrn.data.policies import PerImage
from wrn.data.registry import (
    AUGMENT_CHOICES,
    NORMALIZATION_CHOICES,
    crop_pad,
    dataset_info,
    normalization_for,
)
from wrn.data.semi_supervised import LabelledSplit, StrongView, UnlabelledLoader, labelled_indices
from wrn.data.zca import zca_whiten
from wrn.errors import ConfigError, DataError
from wrn.seeds import stream_seed

CACHE_DIRNAME = "wrn-cache"


def make_loaders(
    dataset: str,
    root: str | os.PathLike | None,
    *,
    batch_size: int,
    augment: str | None = None,
    normalization: str | None = None,
    device="cpu",
    seed: int = 0,
    download: bool = False,
    verify: bool = True,
    rank: int = 0,
    world_size: int = 1,
    image_size: int | None = None,
    workers: int = 4,
    split_train: str | None = None,
    split_test: str | None = None,
    eval_batch_size: int | None = None,
    per_image: PerImage | None = None,
    crop_padding: str = "reflect",
    rotate: float = 0.0,
    holdout: int = 0,
    holdout_rule: str = "rice",
    aux_data: str | os.PathLike | None = None,
    aux_fraction: float = 0.7,
    split: LabelledSplit | None = None,
):
    """``(train_loader, test_loader, info)`` for ``dataset`` under ``root``, and one more loader each for
    ``holdout`` > 0 (that many training images held out, :func:`holdout_indices` by ``holdout_rule``, given as
    the test set is) and for a ``split`` with unlabelled batches, in that order.

    CIFAR, SVHN, the digits and small image folders use :class:`DeviceLoader`, ImageNet and large image folders
    :class:`FolderLoader`. ``augment`` and ``normalization`` default to the data set's; ``zca`` whitens with
    GCN + ZCA fitted on the training split (cached under ``root/wrn-cache``). ``info`` describes the data
    loaded (classes, channels, side). ``crop_padding``: the training crop's border. ``rotate``: each
    training image rotated by an angle uniform in ``[-rotate, rotate]`` after its crop and flip (torchvision's
    ``RandomRotation``; :mod:`~wrn.data.pil_affine` on the device). ``seed`` drives the order
    and augmentation (the digits' train/test split is fixed). ``per_image``
    (:class:`~wrn.data.policies.PerImage`): a policy and random erasing, image by image in ``workers``
    processes. ``aux_data``: a ``.npz`` of generated images (:func:`~wrn.data.generated.read_generated`,
    checked first) filling ``int(aux_fraction x batch)`` of every training batch. ``split``
    (:class:`~wrn.data.semi_supervised.LabelledSplit`): its labelled images only, in its epochs, and the
    :class:`~wrn.data.semi_supervised.UnlabelledLoader` of every training image's weak and strong views.
    """
    info = dataset_info(dataset)
    augment, normalization = _checked_choices(augment or info.augment, normalization or info.normalization)
    split_train = split_train or info.train_split
    split_test = split_test or info.test_split
    eval_batch_size = eval_batch_size or batch_size
    common = {"device": device, "rank": rank, "world_size": world_size}
    generated = (
        _generated(info, aux_data, aux_fraction, batch_size * world_size, normalization) if aux_data else None
    )

    arrays = _in_memory(info, root, split_train, split_test, image_size, download, verify)
    arrays, held, generated = _hold_out(arrays, holdout, dataset, root, holdout_rule, generated)
    arrays, unlabelled = _labelled(arrays, split, dataset, root, normalization)
    if arrays is None:  # ImageNet, a large image folder: read from files batch by batch
        return _folder_loaders(
            info, root, augment, normalization, seed, image_size, workers, split_train, split_test,
            batch_size, eval_batch_size, common, per_image, crop_padding, rotate,
        )  # fmt: skip
    x_tr, y_tr, x_te, y_te, info, cache_dir = arrays
    x_tr, x_te, normalize = _normalised(x_tr, x_te, normalization, cache_dir)
    train = DeviceLoader(
        x_tr, y_tr, batch_size, train=True, augment=augment, normalize=normalize, seed=seed, drop_last=info.drop_last,
        image_size=image_size, per_image=per_image, workers=workers, crop_padding=crop_padding, **common,
        pad=crop_pad(min(x_tr.shape[-2:])), generated=generated,
        epoch_batches=split.epoch_steps if split is not None else None, rotate=rotate,
    )  # fmt: skip
    test = DeviceLoader(x_te, y_te, eval_batch_size, train=False, normalize=normalize, seed=seed, **common)
    info = dataclasses.replace(info, in_channels=int(x_tr.shape[1]), image_size=int(x_tr.shape[-1]))
    extra = [DeviceLoader(*held, eval_batch_size, train=False, normalize=normalize, seed=seed, **common)
             ] if held is not None else []  # fmt: skip
    if unlabelled is not None:
        extra.append(
            _unlabelled_loader(unlabelled, split, augment, normalize, seed, crop_padding, workers, common)
        )
    return (train, test, info, *extra)


def _normalised(x_tr, x_te, normalization: str, cache_dir):
    """``(x_train, x_test, normalize)``: ZCA-whitened images and no normalisation for the loaders, or the images
    as they are and the normalisation's (mean, std) for their channels."""
    if normalization == "zca":
        x_tr, x_te = zca_whiten(x_tr, x_te, cache_dir=cache_dir)
        return x_tr, x_te, None
    return x_tr, x_te, normalization_for(normalization, int(x_tr.shape[1]))


def _unlabelled_loader(x, split: LabelledSplit, augment: str, normalize, seed: int, crop_padding: str,
                       workers: int, common: dict):  # fmt: skip
    """The loader of the unlabelled images ``x`` as ``split`` says, its order from a stream of the run's seed
    of its own."""
    strong = StrongView(split.strong_policy, int(x.shape[-1]), split.randaugment_m, split.strong_on)
    return UnlabelledLoader(
        x, split.unlabelled_batch, strong, augment=augment, normalize=normalize,
        seed=stream_seed(seed, "unlabelled"), pad=crop_pad(min(x.shape[-2:])), crop_padding=crop_padding,
        workers=workers, **common,
    )  # fmt: skip


def _in_memory(info, root, split_train: str, split_test: str, image_size, download: bool, verify: bool):
    """``(x_train, y_train, x_test, y_test, info, cache_dir)`` of a data set held in memory (CIFAR, SVHN, the
    digits, a small image folder: its classes in ``info``), ``cache_dir`` where ZCA keeps its fit; None for one
    read from files batch by batch."""
    dataset = info.name
    if dataset in ARRAY_DATASETS:
        if image_size is not None and image_size != info.image_size:
            raise ConfigError(
                f"{dataset} images are {info.image_size}x{info.image_size}: image_size applies to image folders only."
            )
        x_tr, y_tr = load_arrays(dataset, root, split_train, download=download, verify=verify)
        x_te, y_te = load_arrays(dataset, root, split_test, download=download, verify=verify)
        cache_dir = Path(root).expanduser() / CACHE_DIRNAME if root is not None else None
        return x_tr, y_tr, x_te, y_te, info, cache_dir
    if not (dataset == "imagefolder" and is_small_folder(root, split_train, image_size)):
        return None
    x_tr, y_tr, classes = read_folder_arrays(root, split_train, image_size)
    x_te, y_te, _ = read_folder_arrays(
        root, split_test, tuple(x_tr.shape[2:]), channels=x_tr.shape[1], classes=classes
    )
    info = dataclasses.replace(info, num_classes=len(classes), classes=tuple(classes))
    return x_tr, y_tr, x_te, y_te, info, Path(root).expanduser() / CACHE_DIRNAME


def _hold_out(arrays, holdout: int, dataset: str, root, rule: str = "rice", generated=None):
    """``arrays`` (:func:`_in_memory`'s) with ``holdout`` training images taken out, those images (None
    without a hold-out) and the ``generated`` images, whose epoch then counts the held-out images too (their
    ``dataset_size``); rule ``awp``: ``arrays`` as they are, and the first ``holdout`` test images (AT-AWP's
    CIFAR-100 code picks its best epoch on the test set)."""
    if not holdout:
        return arrays, None, generated
    if arrays is None:
        raise ConfigError(
            f"holding out training images needs a data set held in memory (CIFAR, SVHN, the digits, a small "
            f"image folder), and {dataset} at {root} is read from files batch by batch; leave the hold-out out"
        )
    x_tr, y_tr, x_te, y_te, *rest = arrays
    if rule == "awp":
        if not 0 < holdout <= len(y_te):
            raise ConfigError(
                f"cannot pick the best epoch on {holdout} of the {len(y_te)} test images of {dataset}; give at "
                f"most {len(y_te)} (AT-AWP's code attacks all of them)"
            )
        return arrays, (x_te[:holdout], y_te[:holdout]), generated
    keep, out = holdout_indices(len(y_tr), holdout, dataset, rule)
    if generated is not None:
        generated = dataclasses.replace(generated, epoch_real=len(y_tr))
    return (x_tr[keep], y_tr[keep], x_te, y_te, *rest), (x_tr[out], y_tr[out]), generated


def _labelled(arrays, split: LabelledSplit | None, dataset: str, root, normalization):
    """``arrays`` (:func:`_in_memory`'s) with only the split's labelled training images (FixMatch's split of
    its fold), and every training image for the unlabelled loader (None without an unlabelled batch)."""
    if split is None:
        return arrays, None
    if arrays is None:
        raise ConfigError(
            f"--labels needs a data set held in memory (CIFAR, SVHN, the digits, a small image folder), and "
            f"{dataset} at {root} is read from files batch by batch; leave --labels out"
        )
    if split.unlabelled_batch and normalization == "zca":
        raise ConfigError(
            "the strong augmentation of the unlabelled images works on their pixels, which ZCA whitening "
            "replaces; use another --normalization with --ssl"
        )
    x_tr, y_tr, *rest = arrays
    chosen = labelled_indices(y_tr, split.labels, split.fold, dataset)
    return (x_tr[chosen], y_tr[chosen], *rest), (x_tr if split.unlabelled_batch else None)


def holdout_indices(
    n: int, holdout: int, dataset: str = "the data set", rule: str = "rice"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held out): the training indices left to train on, in their order, and the ``holdout`` held out,
    as robust_overfitting's ``generate_validation.py`` draws its validation split (rule ``rice``): the first
    ``holdout`` of ``numpy.random.seed(0); numpy.random.permutation(n)`` (1,000 of CIFAR-10's 50,000 there); or
    as DM-Improves-AT takes its own (rule ``dm``: the first ``holdout`` in order, its 1,024: cifar10s.py lines
    106-108 and semisup.py 40-42)."""
    import numpy as np

    if not 0 < holdout < n:
        raise ConfigError(
            f"cannot hold out {holdout} of the {n} training images of {dataset}; give fewer (Rice et al. hold "
            "out 1000 of 50,000)"
        )
    if rule == "dm":
        return torch.arange(holdout, n), torch.arange(holdout)
    order = np.random.RandomState(0).permutation(n)
    held = torch.from_numpy(order[:holdout].copy())
    kept = torch.from_numpy(np.sort(order[holdout:]))
    return kept, held


def _generated(info, path, fraction: float, global_batch: int, normalization: str):
    """The generated images of ``path`` for ``info``'s data set, checked (one sentence for what cannot be)."""
    from wrn.data.generated import GENERATED_DATASETS, read_generated

    if info.name not in GENERATED_DATASETS:
        raise ConfigError(
            f"--aux-data mixes generated images into the batches of {', '.join(GENERATED_DATASETS)}, not of "
            f"{info.name}: leave --aux-data out or train on one of those"
        )
    if normalization == "zca":
        raise ConfigError(
            "--aux-data mixes generated pixels into the batch, which ZCA whitening would have to whiten too; "
            "use another --normalization with --aux-data"
        )
    shape = (info.image_size, info.image_size, info.in_channels)
    return read_generated(
        path, image_shape=shape, num_classes=info.num_classes, batch_size=global_batch, fraction=fraction
    )


def _checked_choices(augment: str, normalization: str) -> tuple[str, str]:
    if augment not in AUGMENT_CHOICES:
        raise ConfigError(f"unknown augment {augment!r}: choose one of {', '.join(AUGMENT_CHOICES)}.")
    if normalization not in NORMALIZATION_CHOICES:
        raise ConfigError(
            f"unknown normalization {normalization!r}: choose one of {', '.join(NORMALIZATION_CHOICES)}."
        )
    return augment, normalization


def _folder_loaders(
    info,
    root,
    augment,
    normalization,
    seed,
    image_size,
    workers,
    split_train,
    split_test,
    bs,
    eval_bs,
    common,
    per_image,
    crop_padding="reflect",
    rotate=0.0,
):
    if normalization == "zca":
        raise ConfigError(
            "normalization 'zca' needs the whole data set in memory: use it with small data sets."
        )
    size = image_size or info.image_size or 224
    normalize = normalization_for(normalization, 3)
    erasing = per_image is not None and per_image.erasing > 0  # normalised in the workers, then erased
    train_tf = folder_transform(
        True,
        augment,
        size,
        per_image=per_image,
        normalize=normalize,
        crop_padding=crop_padding,
        rotate=rotate,
    )
    train_ds = CheckedImageFolder(folder_split_dir(root, split_train), train_tf)
    test_ds = CheckedImageFolder(folder_split_dir(root, split_test), folder_transform(False, augment, size))
    if test_ds.classes != train_ds.classes:
        raise DataError(
            f"{folder_split_dir(root, split_test)} has {len(test_ds.classes)} class folders that differ from the "
            f"{len(train_ds.classes)} of {folder_split_dir(root, split_train)}: both splits need the same classes."
        )
    train = FolderLoader(
        train_ds, bs, train=True, normalize=None if erasing else normalize, seed=seed, drop_last=info.drop_last, workers=workers,
        **common,
    )  # fmt: skip
    test = FolderLoader(
        test_ds, eval_bs, train=False, normalize=normalize, seed=seed, workers=workers, **common
    )
    info = dataclasses.replace(
        info,
        num_classes=len(train_ds.classes),
        classes=tuple(train_ds.classes),
        in_channels=3,
        image_size=size,
    )
    return train, test, info
