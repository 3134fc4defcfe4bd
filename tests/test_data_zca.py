"""GCN + ZCA whitening against a direct computation of the paper's preprocessing (docs/data.md), and its on-disk cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wrn.data import zca


def direct(x_train, x_test, bias=0.1):
    """The preprocessing of docs/data.md written out plainly."""

    def gcn(x):
        x = x.reshape(len(x), -1).astype(np.float64)
        x = x - x.mean(1, keepdims=True)
        return 55.0 * x / np.linalg.norm(x, axis=1, keepdims=True)

    tr, te = gcn(x_train), gcn(x_test)
    mean = tr.mean(0)
    xc = tr - mean
    cov = xc.T @ xc / len(xc) + bias * np.eye(xc.shape[1])
    lam, E = np.linalg.eigh(cov)
    P = E @ np.diag(1 / np.sqrt(lam)) @ E.T
    return (tr - mean) @ P, (te - mean) @ P, P


def sample(seed=0, n=200):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 4, 4), dtype=np.uint8), rng.integers(
        0, 256, (30, 3, 4, 4), dtype=np.uint8
    )


def test_zca_matches_direct_numpy_and_predicted_covariance():
    x_train, x_test = sample()
    tr, te = zca.zca_whiten(torch.from_numpy(x_train), x_test)
    assert tr.dtype == torch.float32 and tr.shape == (200, 3, 4, 4) and te.shape == (30, 3, 4, 4)
    ref_tr, ref_te, P = direct(x_train, x_test)
    np.testing.assert_allclose(tr.reshape(200, -1).numpy(), ref_tr, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(te.reshape(30, -1).numpy(), ref_te, atol=1e-4, rtol=1e-4)
    # Whitened training data: mean 0 and covariance P (C - 0.1 I) P = I - 0.1 P^2, close to the identity.
    w = tr.reshape(200, -1).double().numpy()
    np.testing.assert_allclose(w.mean(0), 0, atol=1e-4)
    predicted = np.eye(48) - 0.1 * P @ P
    np.testing.assert_allclose(w.T @ w / 200, predicted, atol=1e-4)
    assert np.abs(predicted - np.eye(48)).max() < 0.2


def test_zca_is_cached_under_a_key_of_the_inputs(tmp_path, monkeypatch):
    x_train, x_test = sample(1)
    first = zca.zca_whiten(x_train, x_test, cache_dir=tmp_path)
    (entry,) = tmp_path.iterdir()
    assert sorted(p.name for p in entry.iterdir()) == ["P.npy", "mean.npy", "test.npy", "train.npy"]

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(zca, "fit_zca", refuse)
    again = zca.zca_whiten(x_train, x_test, cache_dir=tmp_path)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    x_test[0, 0, 0, 0] ^= 1
    with pytest.raises(AssertionError, match="recomputed"):
        zca.zca_whiten(x_train, x_test, cache_dir=tmp_path)
    assert zca.cache_key(x_train, x_test, 0.1, 55.0) != zca.cache_key(x_train, x_test, 0.01, 55.0)


def test_zca_cache_survives_a_concurrent_store_and_a_read_only_root(tmp_path, monkeypatch):
    import wrn.data.zca as zca

    rng = np.random.default_rng(1)
    x_tr = rng.integers(0, 256, (40, 1, 4, 4), dtype=np.uint8)
    x_te = rng.integers(0, 256, (10, 1, 4, 4), dtype=np.uint8)
    ref_tr, ref_te = zca.zca_whiten(x_tr, x_te, cache_dir=tmp_path)
    (entry,) = tmp_path.iterdir()
    # Another process stored the same entry between our check and our rename: no error, the entry stays.
    monkeypatch.setattr(zca.shutil, "rmtree", lambda *a, **k: None)
    zca._store(entry, ref_tr.numpy(), ref_te.numpy(), np.zeros(1), np.zeros(1))
    monkeypatch.undo()
    assert sorted(p.name for p in entry.iterdir()) == ["P.npy", "mean.npy", "test.npy", "train.npy"]

    # A data root that cannot be written: the whitened arrays are returned all the same, with a warning.
    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(zca.np, "save", refuse)
    with pytest.warns(UserWarning, match="could not cache the ZCA-whitened data"):
        tr, te = zca.zca_whiten(x_tr, x_te[:5], cache_dir=tmp_path / "ro")
    torch.testing.assert_close(tr, ref_tr)
    torch.testing.assert_close(te, ref_te[:5])
    assert not (tmp_path / "ro").exists() or not any((tmp_path / "ro").iterdir())
