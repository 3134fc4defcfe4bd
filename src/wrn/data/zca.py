"""Global contrast normalisation + ZCA whitening, as the paper's Tables 2-4 used (docs/training.md).

Per image: subtract the image's mean, divide by its L2 norm, times 55. Then, fitted on the training set,
``cov = Xc^T Xc / n + 0.1 I``, ``P = E diag(1/sqrt(lambda)) E^T``, and ``(X - mean_train) P`` for train and
test. The result is computed once (float64, in chunks) and cached next to the data as float32 ``.npy`` files
under a key that hashes the inputs and the parameters.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from wrn.atomic import default_umask

_CACHE_VERSION = "zca-v1"
_CHUNK = 4096


def gcn(x: np.ndarray, scale: float = 55.0) -> np.ndarray:
    """Global contrast normalisation of rows [N, D]: (x - row mean) / row L2 norm * scale, in float64."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.sqrt((x * x).sum(axis=1, keepdims=True))
    return x / np.maximum(norm, 1e-8) * scale


def fit_zca(x: np.ndarray, filter_bias: float = 0.1, scale: float = 55.0) -> tuple[np.ndarray, np.ndarray]:
    """Fit on training images (any shape [N, ...]): returns (mean [D], P [D, D]) of the GCN'd data, float64."""
    x = np.asarray(x).reshape(len(x), -1)
    n, d = x.shape
    total = np.zeros(d)
    for i in range(0, n, _CHUNK):
        total += gcn(x[i : i + _CHUNK], scale).sum(axis=0)
    mean = total / n
    cov = np.zeros((d, d))
    for i in range(0, n, _CHUNK):
        xc = gcn(x[i : i + _CHUNK], scale) - mean
        cov += xc.T @ xc
    cov = cov / n + filter_bias * np.eye(d)
    eigval, eigvec = np.linalg.eigh(cov)
    P = (eigvec / np.sqrt(eigval)) @ eigvec.T
    return mean, P


def apply_zca(x: np.ndarray, mean: np.ndarray, P: np.ndarray, scale: float = 55.0) -> np.ndarray:
    """GCN then ``(x - mean) P`` for images [N, ...]; returns float32 of the same shape."""
    shape = np.shape(x)
    x = np.asarray(x).reshape(len(x), -1)
    out = np.empty(x.shape, dtype=np.float32)
    for i in range(0, len(x), _CHUNK):
        out[i : i + _CHUNK] = (gcn(x[i : i + _CHUNK], scale) - mean) @ P
    return out.reshape(shape)


def zca_whiten(
    x_train,
    x_test,
    cache_dir: str | os.PathLike | None = None,
    filter_bias: float = 0.1,
    scale: float = 55.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whiten train and test images (uint8 or float [N, C, H, W]) with GCN + ZCA fitted on the training set.

    Returns float32 tensors of the same shapes. With ``cache_dir`` the result is stored there (in a folder
    named by a hash of both inputs and the parameters) and read back on the next call with the same inputs.
    """
    x_train = x_train.numpy() if isinstance(x_train, torch.Tensor) else np.asarray(x_train)
    x_test = x_test.numpy() if isinstance(x_test, torch.Tensor) else np.asarray(x_test)
    target = None
    if cache_dir is not None:
        target = Path(cache_dir) / f"zca-{cache_key(x_train, x_test, filter_bias, scale)}"
        if (target / "train.npy").is_file() and (target / "test.npy").is_file():
            try:
                tr = np.load(target / "train.npy", allow_pickle=False)
                te = np.load(target / "test.npy", allow_pickle=False)
                if tr.shape == x_train.shape and te.shape == x_test.shape:
                    return torch.from_numpy(tr), torch.from_numpy(te)
            except (OSError, ValueError):
                pass  # an unreadable cache is recomputed and replaced
    mean, P = fit_zca(x_train, filter_bias, scale)
    tr, te = apply_zca(x_train, mean, P, scale), apply_zca(x_test, mean, P, scale)
    if target is not None:
        _store(target, tr, te, mean, P)
    return torch.from_numpy(tr), torch.from_numpy(te)


def cache_key(x_train: np.ndarray, x_test: np.ndarray, filter_bias: float, scale: float) -> str:
    """A hash of the inputs' bytes, dtypes, shapes and the parameters: any change gives a new key."""
    h = hashlib.blake2b(digest_size=12)
    h.update(f"{_CACHE_VERSION}|{filter_bias!r}|{scale!r}".encode())
    for a in (x_train, x_test):
        a = np.ascontiguousarray(a)
        h.update(f"|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


def _store(target: Path, tr, te, mean, P) -> None:
    """Write the cache folder atomically. Another process storing the same entry at the same moment (every
    rank of a multi-process run whitens the same data) or a read-only data root only costs the cache: the
    whitened arrays in memory are used all the same, with a warning for the latter."""
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        os.chmod(tmp, 0o777 & ~default_umask())
        for name, array in (("train", tr), ("test", te), ("mean", mean), ("P", P)):
            np.save(tmp / f"{name}.npy", array)
            os.chmod(tmp / f"{name}.npy", 0o666 & ~default_umask())
        if target.exists():  # unreadable, or it would have been used: replace it
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "test.npy").is_file():  # else another process has just stored the same entry
                raise
    except OSError as exc:
        warnings.warn(
            f"could not cache the ZCA-whitened data in {target} ({exc}); it is recomputed next time",
            stacklevel=3,
        )
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
