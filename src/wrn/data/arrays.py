"""Whole small data sets as tensors: CIFAR-10, CIFAR-100, SVHN and scikit-learn's bundled 8x8 digits."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from wrn.data.download import check_md5, download_file, extract_tar
from wrn.data.registry import ARCHIVES, MEMBER_MD5, SVHN_FILES, dataset_info
from wrn.data.safe_pickle import safe_load_pickle
from wrn.errors import DataError

ARRAY_DATASETS = ("cifar10", "cifar100", "svhn", "digits")

_CIFAR_SPLIT_FILES = {
    "cifar10": {
        "train": [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)],
        "test": ["cifar-10-batches-py/test_batch"],
    },
    "cifar100": {"train": ["cifar-100-python/train"], "test": ["cifar-100-python/test"]},
}


def load_arrays(
    name: str,
    root: str | os.PathLike | None,
    split: str,
    download: bool = False,
    verify: bool = True,
    coarse: bool = False,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a whole small data set split as ``(x, y)``: ``x`` uint8 [N, C, H, W], ``y`` int64 [N].

    ``name`` is ``cifar10``, ``cifar100`` (fine labels; ``coarse=True`` for the 20 super-classes), ``svhn``
    (splits ``train``, ``extra``, ``train+extra``, ``test``; label 10 becomes digit 0) or ``digits``
    (scikit-learn's bundled 8x8 digits scaled from 0..16 to 0..255 by round(v * 255 / 16), split 80/20 into
    ``train``/``test``, stratified by class with ``seed``; ``root`` is not used). Files are looked up in
    ``root`` with the layout torchvision uses, fetched when ``download`` is true, and checked against their
    md5 unless ``verify=False`` (meant for re-packed copies; the CIFAR pickles are then still read with the
    restricted unpickler).
    """
    info = dataset_info(name)
    if name not in ARRAY_DATASETS:
        raise DataError(
            f"{name} is not a small array data set: load it with make_loaders({name!r}, root, ...) instead."
        )
    if split not in info.splits:
        raise DataError(f"{name} has no split {split!r}: choose one of {', '.join(info.splits)}.")
    if name == "digits":
        return _load_digits(split, seed)
    if root is None:
        raise DataError(
            f"{name} needs a data root: pass root=DIR (the folder that holds, or will hold, its files)."
        )
    root = Path(root).expanduser()
    if not root.is_dir() and not download:
        raise DataError(
            f"data root {root} does not exist: create it and put the {name} files there, or add "
            f"--download (download=True in Python) to fetch them."
        )
    with made_for_download(root):
        if name in ("cifar10", "cifar100"):
            return _load_cifar(name, root, split, download, verify, coarse)
        return _load_svhn(root, split, download, verify)


@contextlib.contextmanager
def made_for_download(root: Path):
    """Create ``root`` (and missing parents) for a download; if the download fails, remove the folders this
    made as long as they are still empty, so a failed download leaves nothing behind."""
    made = []
    for folder in [root, *root.parents]:
        if folder.exists():
            break
        made.append(folder)
    root.mkdir(parents=True, exist_ok=True)
    try:
        yield root
    except BaseException:
        for folder in made:  # deepest first
            try:
                folder.rmdir()
            except OSError:  # not empty (a partial extraction is cleaned by its own code) or gone
                break
        raise


# ---------------------------------------------------------------------------------------------------- files


def ensure_files(name: str, root: str | os.PathLike, download: bool = False, verify: bool = True, files=None):
    """Make sure the files of ``name`` are under ``root`` (fetching and extracting them if ``download``) and
    match their md5 (if ``verify``). ``files`` limits the check to some of them (relative paths; SVHN: split
    names). Returns the list of paths checked."""
    root = Path(root).expanduser()
    if not verify:
        warnings.warn(
            f"md5 checks of the {name} files under {root} are off (verify=False, meant for re-packed copies); "
            "CIFAR pickles are still read with the restricted unpickler",
            UserWarning,
            stacklevel=2,
        )
    if name in ARCHIVES:
        archive = ARCHIVES[name]
        members = list(MEMBER_MD5[name]) if files is None else list(files)
        missing = [m for m in members if not (root / m).is_file()]
        if missing:
            archive_path = root / archive.filename
            if not archive_path.is_file():
                if not download:
                    raise DataError(
                        f"{root / missing[0]} is missing: add --download (download=True in Python), or run `wrn data download {name} "
                        f"--root {root}`, to fetch {archive.url}, or put a hand-downloaded copy of "
                        f"{archive.filename} in {root}."
                    )
                download_file(archive.url, archive_path, archive.md5 if verify else None)
            elif verify:
                check_md5(archive_path, archive.md5, archive.url, archive_path)
            extract_tar(archive_path, root)
            still = [m for m in members if not (root / m).is_file()]
            if still:
                raise DataError(
                    f"{archive_path} does not contain {still[0]}: it is not the {name} archive, so delete it and "
                    f"download {archive.url} again."
                )
        paths = [root / m for m in members]
        if verify:
            for member, path in zip(members, paths, strict=True):
                check_md5(path, MEMBER_MD5[name][member], archive.url, root / archive.filename)
        return paths
    if name == "svhn":
        splits = list(SVHN_FILES) if files is None else list(files)
        paths = []
        for split in splits:
            remote = SVHN_FILES[split]
            path = root / remote.filename
            if not path.is_file():
                if not download:
                    raise DataError(
                        f"{path} is missing: add --download (download=True in Python), or run `wrn data download svhn --root {root}`, "
                        f"to fetch {remote.url}, or put a hand-downloaded copy at {path}."
                    )
                download_file(remote.url, path, remote.md5 if verify else None)
            elif verify:
                check_md5(path, remote.md5, remote.url, path)
            paths.append(path)
        return paths
    raise DataError(
        f"{name} has no files to download: it is {'bundled' if name == 'digits' else 'a folder'}."
    )


# ---------------------------------------------------------------------------------------------------- CIFAR


def _load_cifar(name, root, split, download, verify, coarse):
    members = _CIFAR_SPLIT_FILES[name][split]
    paths = ensure_files(name, root, download, verify, files=members)
    if name == "cifar10":
        label_key = "labels"
        if coarse:
            raise DataError("coarse=True applies to cifar100 only: CIFAR-10 has one set of labels.")
    else:
        label_key = "coarse_labels" if coarse else "fine_labels"
    xs, ys = [], []
    for path in paths:
        x, y = read_cifar_batch(path, label_key)
        xs.append(x)
        ys.append(y)
    x = np.concatenate(xs) if len(xs) > 1 else xs[0]
    y = np.concatenate(ys) if len(ys) > 1 else ys[0]
    return torch.from_numpy(x), torch.from_numpy(y)


def read_cifar_batch(path: str | os.PathLike, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch file as (uint8 [N, 3, 32, 32], int64 [N]), read with the restricted unpickler."""
    obj = safe_load_pickle(path)
    if not isinstance(obj, dict):
        raise DataError(
            f"{path} is not a CIFAR batch (it holds a {type(obj).__name__}, not a dict): delete it."
        )
    obj = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    data, labels = obj.get("data"), obj.get(label_key)
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataError(f"{path} is not a CIFAR batch with 'data' and {label_key!r} entries: delete it.")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(
            f"{path} holds data of dtype {data.dtype} and shape {data.shape}, not uint8 N x 3072: it is not a "
            f"CIFAR batch."
        )
    labels = np.asarray(labels)
    num_classes = 20 if label_key == "coarse_labels" else 100 if label_key == "fine_labels" else 10
    if labels.dtype.kind not in "iu" or labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{path} holds {label_key} that are not integers in 0..{num_classes - 1}: it is not a genuine CIFAR "
            "batch; delete it and download it again."
        )
    y = labels.astype(np.int64).reshape(-1)
    if len(y) != len(data):
        raise DataError(f"{path} holds {len(data)} images but {len(y)} labels: it is corrupt.")
    # Rows are channel-major: 1024 red, 1024 green, 1024 blue values, each 32 rows of 32.
    x = np.ascontiguousarray(data.reshape(-1, 3, 32, 32))
    return x, y


# ---------------------------------------------------------------------------------------------------- SVHN


def _load_svhn(root, split, download, verify):
    parts = split.split("+")
    paths = ensure_files("svhn", root, download, verify, files=parts)
    xs, ys = zip(*(read_svhn_mat(p) for p in paths), strict=True)
    x = np.concatenate(xs) if len(xs) > 1 else xs[0]
    y = np.concatenate(ys) if len(ys) > 1 else ys[0]
    return torch.from_numpy(x), torch.from_numpy(y)


def read_svhn_mat(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One SVHN ``*_32x32.mat`` file as (uint8 [N, 3, 32, 32], int64 [N] with 10 mapped to 0)."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except Exception as exc:  # scipy raises ValueError, MatReadError, NotImplementedError (v7.3), ...
        raise DataError(
            f"{path} cannot be read as a MATLAB v5 file ({type(exc).__name__}: {exc}): it is truncated or "
            f"corrupt, so delete it and download it again."
        ) from None
    X, y = mat.get("X"), mat.get("y")
    if X is None or y is None or X.ndim != 4 or X.shape[:3] != (32, 32, 3) or y.size != X.shape[3]:
        raise DataError(
            f"{path} does not hold X of shape 32x32x3xN and y of N labels: it is not an SVHN file."
        )
    y = y.reshape(-1).astype(np.int64)
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise DataError(f"{path} holds labels outside 1..10: it is not an SVHN file.")
    y[y == 10] = 0
    x = np.ascontiguousarray(
        X.transpose(3, 2, 0, 1), dtype=np.uint8
    )  # (row, col, channel, n) -> (n, c, row, col)
    return x, y


# ---------------------------------------------------------------------------------------------------- digits


def _load_digits(split, seed):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # 0..16 -> 0..255
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    x, y = (x_tr, y_tr) if split == "train" else (x_te, y_te)
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
