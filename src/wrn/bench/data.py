"""``wrn bench data``: the throughput of the device-resident loader alone (no model).

One pass over the training split with the data set's own augmentation and normalisation (CIFAR: flip +
crop from a 4-pixel reflection pad, mean/std), batches assembled on the device. The data set's files are
used when they are under the data root; otherwise random uint8 images of the data set's shape and size
(CIFAR-10/100: 50,000; SVHN train+extra: 604,388) stand in, which times the same work, and the output says so.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

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
) -> dict[str, Any]:
    """Time ``epochs`` passes of the training loader after one warm-up pass; images/s of each pass."""
    from wrn.bench.common import machine_info, prepare_device, random_images, resolve_settings, synchronize
    from wrn.data import DeviceLoader, dataset_info, load_arrays
    from wrn.data.registry import normalization_for

    if dataset not in DATASETS:
        raise ConfigError(
            f"--dataset {dataset!r} has no device-resident loader to time; choose one of {', '.join(DATASETS)}"
        )
    if epochs < 1 or batch_size < 1:
        raise ConfigError("--epochs and --batch-size must be at least 1")
    info = dataset_info(dataset)
    augment = augment or info.augment
    device_t = resolve_settings("wrn-16-1", device=device).device
    prepare_device(device_t)
    root = Path(data_dir).expanduser()
    if _files_present(dataset, root):
        x, y = load_arrays(dataset, root, info.train_split, verify=verify)
        source = "digits (bundled)" if dataset == "digits" else f"the {dataset} files under {root}"
        random = False
    else:
        n = num_samples or info.train_size
        x, y = random_images(n, info.in_channels, info.image_size, info.num_classes, seed)
        source = (
            f"random uint8 images of {dataset}'s shape ({n:,} x {info.in_channels}x{info.image_size}x"
            f"{info.image_size}): its files are not under {root}"
        )
        random = True
    if num_samples is not None and not random:
        x, y = x[:num_samples], y[:num_samples]
    if len(x) < batch_size:
        raise ConfigError(f"--batch-size {batch_size} is larger than the {len(x)} images; use a smaller one")
    normalize = normalization_for(info.normalization, info.in_channels)
    loader = DeviceLoader(
        x, y, batch_size, train=True, augment=augment, normalize=normalize, device=device_t, seed=seed
    )
    for _ in loader:  # warm-up pass
        pass
    rates = []
    for _ in range(epochs):
        synchronize(device_t)
        start = time.perf_counter()
        n_images = 0
        for images, _labels in loader:
            n_images += len(images)
        synchronize(device_t)
        rates.append(n_images / (time.perf_counter() - start))
    return {
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
        },
        "source": source,
        "random_data": random,
        "images_per_s": rates,
        "images_per_s_best": max(rates),
        "images_per_s_median": statistics.median(rates),
    }


def format_report(result: dict[str, Any]) -> str:
    m, s = result["machine"], result["settings"]
    return "\n".join(
        [
            f"wrn bench data: DeviceLoader {s['dataset']} {s['augment']} + {s['normalization']} normalisation, "
            f"batch {s['batch_size']}, on {m['device']} ({m['device_name']}, {m['threads']} threads)",
            f"data: {result['source']}",
            f"{result['images_per_s_best']:,.0f} images/s best, {result['images_per_s_median']:,.0f} median "
            f"over {s['epochs']} passes of {s['num_samples']:,} images (after one warm-up pass)",
        ]
    )
