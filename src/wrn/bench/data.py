"""``wrn bench data``: the throughput of the device-resident loader alone (no model).

One pass over the training split with the data set's own augmentation and normalisation (CIFAR: flip +
crop from a 4-pixel reflection pad, mean/std), batches assembled on the device. The data set's files are
used when they are under the data root; otherwise random uint8 images of the data set's shape and size
(CIFAR-10/100: 50,000; SVHN train+extra: 604,388) stand in, which times the same work, and the output says so.

With ``--policy`` (one of :data:`wrn.data.registry.POLICY_CHOICES`, or ``all`` of them in a table) and/or
``--random-erasing``, it also says what the per-image stage costs: microseconds per image in one process,
and the loader's images/s and batches/s with its ``--workers`` processes.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from wrn.errors import ConfigError

FORMAT = "wrn-bench-data"
VERSION = 1
DATASETS = ("cifar10", "cifar100", "svhn", "digits")


def _files_present(name: str, root: Path) -> bool:
    from wrn.data.registry import MEMBER_MD5, SVHN_FILES

    if name == "digits":
        return True
    if name in MEMBER_MD5:
        return all((root / m).is_file() for m in MEMBER_MD5[name])
    return all((root / f.filename).is_file() for f in SVHN_FILES.values())


def run(
    dataset: str = "cifar10",
    *,
    data_dir: str | Path = "data",
    device: str = "auto",
    batch_size: int = 128,
    epochs: int = 3,
    augment: str | None = None,
    num_samples: int | None = None,
    verify: bool = True,
    seed: int = 0,
    policy: str = "none",
    randaugment_n: int = 2,
    randaugment_m: int = 9,
    random_erasing: float = 0.0,
    workers: int = 4,
    strong_policy: str | None = None,
) -> dict[str, Any]:
    """Time ``epochs`` passes of the training loader after one warm-up pass; images/s of each pass. With a
    per-image policy (``all``: each in turn) or random erasing, one row per policy with its cost per image."""
    from wrn.bench.common import machine_info, prepare_device, resolve_settings
    from wrn.data import dataset_info
    from wrn.data.policies import PerImage
    from wrn.data.registry import STRONG_ON_DEVICE

    stages, strong = _checked(dataset, epochs, batch_size, workers, policy, strong_policy,
                              PerImage(n=randaugment_n, m=randaugment_m, erasing=random_erasing))  # fmt: skip
    info = dataset_info(dataset)
    augment = augment or info.augment
    device_t = resolve_settings("wrn-16-1", device=device).device
    prepare_device(device_t)
    x, y, source, random = _images(dataset, info, Path(data_dir).expanduser(), num_samples, verify, seed)
    if len(x) < batch_size:
        raise ConfigError(f"--batch-size {batch_size} is larger than the {len(x)} images; use a smaller one")
    timing = {
        "batch_size": batch_size,
        "epochs": epochs,
        "augment": augment,
        "seed": seed,
        "workers": workers,
    }
    rows = [_time_stage(x, y, info, device_t, stage, timing) for stage in stages]
    strong_rows = [
        _time_strong(x, info, device_t, name, on, randaugment_m, timing)
        for name in strong
        for on in (("device", "workers") if name in STRONG_ON_DEVICE else ("workers",))
    ]
    result = {
        "format": FORMAT,
        "version": VERSION,
        "machine": machine_info(device_t),
        "settings": {
            "dataset": dataset,
            "batch_size": batch_size,
            "epochs": epochs,
            "augment": augment,
            "normalization": info.normalization,
            "num_samples": len(x),
            "policy": policy,
            "random_erasing": random_erasing,
            "workers": workers,
            "strong_policy": strong_policy,
        },
        "source": source,
        "random_data": random,
        **{k: v for k, v in rows[0].items() if k != "stage"},
    }
    # the loader without a per-image stage first, to compare with (the first row is it when the stage is off)
    plain = [_time_stage(x, y, info, device_t, PerImage(), timing)] if stages[0].active else []
    if plain or strong_rows:
        result["per_image"] = [*plain, *rows, *strong_rows]
    return result


def _checked(dataset, epochs, batch_size, workers, policy: str, strong_policy: str | None, options):
    """The per-image stages to time (``policy``, or ``all`` of them, with ``options``' RandAugment and erasing)
    and the strong policies; a bad value is one sentence."""
    import dataclasses

    from wrn.data.registry import POLICY_CHOICES, STRONG_POLICIES

    if dataset not in DATASETS:
        raise ConfigError(
            f"--dataset {dataset!r} has no device-resident loader to time; choose one of {', '.join(DATASETS)}"
        )
    if epochs < 1 or batch_size < 1:
        raise ConfigError("--epochs and --batch-size must be at least 1")
    if workers < 0:
        raise ConfigError(f"--workers is a number of processes, 0 or more, not {workers}")
    if policy != "all" and policy not in POLICY_CHOICES:
        raise ConfigError(f"unknown --policy {policy!r}: choose one of {', '.join(POLICY_CHOICES)} or all")
    if strong_policy is not None and strong_policy != "all" and strong_policy not in STRONG_POLICIES:
        raise ConfigError(
            f"unknown --strong-policy {strong_policy!r}: choose one of {', '.join(STRONG_POLICIES)} or all"
        )
    policies = POLICY_CHOICES[1:] if policy == "all" else (policy,)
    strong = () if strong_policy is None else STRONG_POLICIES if strong_policy == "all" else (strong_policy,)
    return [dataclasses.replace(options, policy=p) for p in policies], strong


def _rates(loader, device, epochs: int) -> list[float]:
    """Images per second of ``epochs`` passes over ``loader`` (its batches' first element), after a warm-up
    pass."""
    from wrn.bench.common import synchronize

    for _ in loader:  # warm-up pass
        pass
    rates = []
    for _ in range(epochs):
        synchronize(device)
        start, n_images = time.perf_counter(), 0
        for images, _ in loader:
            n_images += len(images)
        synchronize(device)
        rates.append(n_images / (time.perf_counter() - start))
    return rates


def _row(stage: str, rates: list[float], batch_size: int) -> dict[str, Any]:
    return {
        "stage": stage,
        "images_per_s": rates,
        "images_per_s_best": max(rates),
        "images_per_s_median": statistics.median(rates),
        "batches_per_s_median": statistics.median(rates) / batch_size,
    }


def _images(dataset: str, info, root: Path, num_samples: int | None, verify: bool, seed: int):
    """The data set's training images (its files, or random images of its shape), what they are, and whether
    they are random."""
    from wrn.bench.common import random_images
    from wrn.data import load_arrays

    if _files_present(dataset, root):
        x, y = load_arrays(dataset, root, info.train_split, verify=verify)
        if num_samples is not None:
            x, y = x[:num_samples], y[:num_samples]
        source = "digits (bundled)" if dataset == "digits" else f"the {dataset} files under {root}"
        return x, y, source, False
    n = num_samples or info.train_size
    x, y = random_images(n, info.in_channels, info.image_size, info.num_classes, seed)
    source = (
        f"random uint8 images of {dataset}'s shape ({n:,} x {info.in_channels}x{info.image_size}x"
        f"{info.image_size}): its files are not under {root}"
    )
    return x, y, source, True


def _time_stage(x, y, info, device, stage, timing: dict) -> dict[str, Any]:
    """One loader's passes (after a warm-up pass) with the per-image ``stage``, and the stage alone per image."""
    from wrn.data import DeviceLoader
    from wrn.data.registry import normalization_for

    normalize = normalization_for(info.normalization, info.in_channels)
    loader = DeviceLoader(
        x, y, timing["batch_size"], train=True, augment=timing["augment"], normalize=normalize, device=device,
        seed=timing["seed"], per_image=stage, workers=timing["workers"],
    )  # fmt: skip
    row = _row(stage.describe() or "none", _rates(loader, device, timing["epochs"]), timing["batch_size"])
    if stage.active:
        row["us_per_image"] = _us_per_image(x, stage)
    return row


def _time_strong(x, info, device, policy: str, on: str, randaugment_m: int, timing: dict) -> dict[str, Any]:
    """Passes of semi-supervised training's loader of unlabelled images (after a warm-up pass): each image's
    weak view on the device and its strong view (``policy``) in the workers or on the device (``on``); and
    the strong view alone per image, in this process (on the device: a batch at a time). Images/s counts the
    unlabelled images (two views each)."""
    from wrn.bench.common import synchronize
    from wrn.data.registry import normalization_for
    from wrn.data.semi_supervised import StrongView, UnlabelledLoader

    strong = StrongView(policy, int(x.shape[-1]), randaugment_m, on)
    loader = UnlabelledLoader(
        x, timing["batch_size"], strong, augment=timing["augment"], device=device, seed=timing["seed"],
        normalize=normalization_for(info.normalization, info.in_channels), workers=timing["workers"],
    )  # fmt: skip
    rates = _rates(loader, device, timing["epochs"])
    images = torch.as_tensor(x[: min(1024, len(x))])
    if on == "device":
        images, g, size = images.to(device), torch.Generator().manual_seed(0), timing["batch_size"]
        strong.batch(images[:size], g)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        for i in range(0, len(images), size):
            strong.batch(images[i : i + size], g)
        synchronize(device)
    else:
        strong(images[0])  # warm-up
        start = time.perf_counter()
        for img in images:
            strong(img)
    us_per_image = (time.perf_counter() - start) / len(images) * 1e6
    where = "on the device" if on == "device" else "in the workers"
    row = _row(f"strong view: {policy} + Cutout {where} (weak and strong views)", rates, timing["batch_size"])
    return {**row, "us_per_image": us_per_image}


def _us_per_image(x, stage, n: int = 1024) -> float:
    """Microseconds per image of the per-image stage alone, in this process (one worker's cost)."""
    from wrn.data.policies import transform_batch

    images = x[: min(n, len(x))].contiguous()
    transform = stage.transform()
    transform_batch(images[:16], stage, transform, 0)  # warm-up
    start = time.perf_counter()
    for i in range(0, len(images), 128):
        transform_batch(images[i : i + 128], stage, transform, i)
    return (time.perf_counter() - start) / len(images) * 1e6


def format_report(result: dict[str, Any]) -> str:
    m, s = result["machine"], result["settings"]
    lines = [
        f"wrn bench data: DeviceLoader {s['dataset']} {s['augment']} + {s['normalization']} normalisation, "
        f"batch {s['batch_size']}, on {m['device']} ({m['device_name']}, {m['threads']} threads)",
        f"data: {result['source']}",
    ]
    rows = result.get("per_image")
    if not rows:
        lines.append(
            f"{result['images_per_s_best']:,.0f} images/s best, {result['images_per_s_median']:,.0f} median "
            f"over {s['epochs']} passes of {s['num_samples']:,} images (after one warm-up pass)"
        )
        return "\n".join(lines)
    lines.append(
        f"per-image stage: microseconds per image in one process, and the loader with {s['workers']} workers "
        f"(median of {s['epochs']} passes of {s['num_samples']:,} images after one warm-up pass)"
    )
    width = max(len(r["stage"]) for r in rows)
    lines.append(f"  {'stage':<{width}}  {'us/image':>9}  {'images/s':>9}  {'batches/s':>9}")
    for r in rows:
        cost = f"{r['us_per_image']:>9,.0f}" if "us_per_image" in r else f"{'-':>9}"
        lines.append(
            f"  {r['stage']:<{width}}  {cost}  {r['images_per_s_median']:>9,.0f}  {r['batches_per_s_median']:>9,.1f}"
        )
    return "\n".join(lines)
