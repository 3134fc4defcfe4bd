"""Random CIFAR-10 files in the exact format of the real ones, for timing ``wrn train`` where there is no internet.

The layout and encoding are the originals' (``cifar-10-batches-py/data_batch_1..5``, ``test_batch`` and
``batches.meta``: pickles of protocol 2 with byte-string keys, ``data`` uint8 rows of 1024 red, 1024 green and
1024 blue values, ``labels`` a list of ints). Only the pixels and labels are random, so their md5 differ from
the real files': train on them with ``--no-verify``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from wrn.atomic import atomic_write_bytes
from wrn.data.registry import CIFAR10_CLASSES

BASE = "cifar-10-batches-py"


def _batch(rng: np.random.Generator, n: int, label: str, first: int) -> bytes:
    obj = {
        b"batch_label": label.encode(),
        b"labels": rng.integers(0, 10, n).tolist(),
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"random_{first + i:06d}.png".encode() for i in range(n)],
    }
    return pickle.dumps(obj, protocol=2)


def write_random_cifar10(root: str | Path, train: int = 50_000, test: int = 10_000, seed: int = 0) -> Path:
    """Write ``train`` training images (over the five batches) and ``test`` test images under ``root``."""
    if train < 5 or test < 1:
        raise ValueError("need at least 5 training images (one per batch file) and 1 test image")
    rng = np.random.default_rng(seed)
    base = Path(root) / BASE
    base.mkdir(parents=True, exist_ok=True)
    sizes = [train // 5 + (1 if i < train % 5 else 0) for i in range(5)]
    first = 0
    for i, n in enumerate(sizes):
        atomic_write_bytes(
            base / f"data_batch_{i + 1}", _batch(rng, n, f"training batch {i + 1} of 5", first)
        )
        first += n
    atomic_write_bytes(base / "test_batch", _batch(rng, test, "testing batch 1 of 1", first))
    meta = {"num_cases_per_batch": sizes[0], "label_names": list(CIFAR10_CLASSES), "num_vis": 3072}
    atomic_write_bytes(base / "batches.meta", pickle.dumps(meta, protocol=2))
    return base
