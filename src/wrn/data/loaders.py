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
from wrn.data.zca import zca_whiten
from wrn.errors import ConfigError, DataError

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
    holdout: int = 0,
    holdout_rule: str = "rice",
    aux_data: str | os.PathLike | None = None,
    aux_fraction: float = 0.7,
    labels: int | None = None,
    fold: int = 1,
    epoch_steps: int = 1024,
    unlabelled_batch: int = 0,
    strong_policy: str = "fixmatch-ra",
    randaugment_m: int = 9,
    strong_on: str = "workers",
):
    """Build ``(train_loader, test_loader, info)`` for ``dataset`` under ``root``; with ``holdout`` > 0,
    ``(train_loader, test_loader, info, holdout_loader)``: that many training images are held out of training
    (:func:`holdout_indices`, drawn by ``holdout_rule``) and given, unaugmented and normalised as the test set,
    by the fourth loader.

    CIFAR, SVHN, the digits and small image folders use :class:`DeviceLoader` for both loaders; ImageNet and
    large image folders use :class:`FolderLoader`. ``augment`` and ``normalization`` default to the data set's
    (``DATASETS[name]``); ``normalization='zca'`` whitens with GCN + ZCA fitted on the training split (cached
    under ``root/wrn-cache``). ``info`` is the :class:`DatasetInfo` with ``num_classes``, ``in_channels`` and
    ``image_size`` of the data actually loaded. ``crop_padding`` fills the border of the training crop:
    ``reflect`` (the paper's) or ``zeros``. ``seed`` drives the order and augmentation; the digits'
    train/test split stays fixed whatever it is.

    ``per_image`` (:class:`~wrn.data.policies.PerImage`): a policy and random erasing for the training images,
    applied image by image in ``workers`` processes, whichever loader it is.

    ``aux_data``: a ``.npz`` of generated images (:func:`~wrn.data.generated.read_generated`, checked before
    the data set is read) that fill ``int(aux_fraction x batch)`` of every training batch (CIFAR-10/100 and
    the digits; the test loader is untouched).

    ``labels``: train on that many labelled images, FixMatch's split with seed ``fold``
    (:func:`~wrn.data.semi_supervised.labelled_indices`), in epochs of ``epoch_steps`` batches. With
    ``unlabelled_batch`` > 0 one more loader comes last: the
    :class:`~wrn.data.semi_supervised.UnlabelledLoader` of every training image's weak and strong views
    (``strong_policy``, made in the workers or on the device as ``strong_on`` says), ``unlabelled_batch``
    images a batch, in an order of its own.
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
    if generated is not None and holdout and arrays is not None:  # an epoch counts the held-out images too
        generated = dataclasses.replace(generated, epoch_real=len(arrays[1]))
    arrays, held = _hold_out(arrays, holdout, dataset, root, holdout_rule)
    arrays, unlabelled = _labelled(arrays, labels, fold, dataset, root, unlabelled_batch, normalization)
    if arrays is None:  # ImageNet, a large image folder: read from files batch by batch
        return _folder_loaders(
            info, root, augment, normalization, seed, image_size, workers, split_train, split_test,
            batch_size, eval_batch_size, common, per_image, crop_padding,
        )  # fmt: skip
    x_tr, y_tr, x_te, y_te, info, cache_dir = arrays
    if normalization == "zca":
        x_tr, x_te = zca_whiten(x_tr, x_te, cache_dir=cache_dir)
        normalize = None
    else:
        normalize = normalization_for(normalization, int(x_tr.shape[1]))
    train = DeviceLoader(
        x_tr, y_tr, batch_size, train=True, augment=augment, normalize=normalize, seed=seed, drop_last=info.drop_last,
        image_size=image_size, per_image=per_image, workers=workers, crop_padding=crop_padding, **common,
        pad=crop_pad(min(x_tr.shape[-2:])), generated=generated,
        epoch_batches=epoch_steps if labels is not None else None,
    )  # fmt: skip
    test = DeviceLoader(x_te, y_te, eval_batch_size, train=False, normalize=normalize, seed=seed, **common)
    info = dataclasses.replace(info, in_channels=int(x_tr.shape[1]), image_size=int(x_tr.shape[-1]))
    loaders = [train, test, info]
    if held is not None:
        loaders.append(
            DeviceLoader(*held, eval_batch_size, train=False, normalize=normalize, seed=seed, **common)
        )
    if unlabelled is not None:
        from wrn.data.semi_supervised import StrongView, UnlabelledLoader
        from wrn.seeds import stream_seed

        side = int(unlabelled.shape[-1])
        loaders.append(UnlabelledLoader(
            unlabelled, unlabelled_batch, StrongView(strong_policy, side, randaugment_m, strong_on), augment=augment,
            normalize=normalize, seed=stream_seed(seed, "unlabelled"), pad=crop_pad(min(unlabelled.shape[-2:])),
            crop_padding=crop_padding, workers=workers, **common,
        ))  # fmt: skip
    return tuple(loaders)


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


def _hold_out(arrays, holdout: int, dataset: str, root, rule: str = "rice"):
    """``arrays`` (:func:`_in_memory`'s) with ``holdout`` training images taken out, and those images (None
    without a hold-out)."""
    if not holdout:
        return arrays, None
    if arrays is None:
        raise ConfigError(
            f"holding out training images needs a data set held in memory (CIFAR, SVHN, the digits, a small "
            f"image folder), and {dataset} at {root} is read from files batch by batch; leave the hold-out out"
        )
    x_tr, y_tr, *rest = arrays
    keep, out = holdout_indices(len(y_tr), holdout, dataset, rule)
    return (x_tr[keep], y_tr[keep], *rest), (x_tr[out], y_tr[out])


def _labelled(
    arrays, labels: int | None, fold: int, dataset: str, root, unlabelled_batch: int, normalization
):
    """``arrays`` (:func:`_in_memory`'s) with only the ``labels`` labelled training images (FixMatch's split of
    seed ``fold``), and every training image for the unlabelled loader (None without ``unlabelled_batch``)."""
    if labels is None:
        if unlabelled_batch:
            raise ConfigError("unlabelled batches need a labelled split: give --labels N with --ssl")
        return arrays, None
    if arrays is None:
        raise ConfigError(
            f"--labels needs a data set held in memory (CIFAR, SVHN, the digits, a small image folder), and "
            f"{dataset} at {root} is read from files batch by batch; leave --labels out"
        )
    if unlabelled_batch and normalization == "zca":
        raise ConfigError(
            "the strong augmentation of the unlabelled images works on their pixels, which ZCA whitening "
            "replaces; use another --normalization with --ssl"
        )
    from wrn.data.semi_supervised import labelled_indices

    x_tr, y_tr, *rest = arrays
    chosen = labelled_indices(y_tr, labels, fold, dataset)
    return (x_tr[chosen], y_tr[chosen], *rest), (x_tr if unlabelled_batch else None)


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
):
    if normalization == "zca":
        raise ConfigError(
            "normalization 'zca' needs the whole data set in memory: use it with small data sets."
        )
    size = image_size or info.image_size or 224
    normalize = normalization_for(normalization, 3)
    erasing = per_image is not None and per_image.erasing > 0  # normalised in the workers, then erased
    train_tf = folder_transform(
        True, augment, size, per_image=per_image, normalize=normalize, crop_padding=crop_padding
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
