"""Reading, verifying and downloading the data set files, on small files written in the exact real formats."""

from __future__ import annotations

import hashlib
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from wrn.data import arrays, load_arrays, registry
from wrn.data.download import download_file, extract_tar, md5sum
from wrn.data.registry import RemoteFile
from wrn.data.safe_pickle import UnsafePickleError, safe_load_pickle
from wrn.errors import DataError


def pattern(n: int, c: int, r: int, col: int) -> np.ndarray:
    """A pixel value that tells image, channel, row and column apart."""
    return (np.asarray(n) * 37 + np.asarray(c) * 85 + np.asarray(r) * 7 + np.asarray(col) * 3) % 256


def write_cifar_batch(path: Path, first: int, n: int, labels: dict[bytes, list[int]]) -> None:
    """A batch as the originals are: protocol 2, byte-string keys, rows of 1024 R, 1024 G, 1024 B values."""
    k = np.arange(3072)
    c, r, col = k // 1024, (k % 1024) // 32, k % 32
    data = np.stack([pattern(first + i, c, r, col) for i in range(n)]).astype(np.uint8)
    obj = {
        b"batch_label": b"training batch",
        b"data": data,
        b"filenames": [f"img_{first + i}.png".encode() for i in range(n)],
        **labels,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def check_pattern(x: torch.Tensor, first: int) -> None:
    n, c, r, col = np.meshgrid(*(np.arange(s) for s in x.shape), indexing="ij")
    np.testing.assert_array_equal(x.numpy(), pattern(first + n, c, r, col).astype(np.uint8))


def make_cifar10(root: Path, per_batch: int = 3) -> dict[str, str]:
    """Five training batches and a test batch; returns md5s of the member files (relative names)."""
    base = root / "cifar-10-batches-py"
    for i in range(5):
        labels = [(i * per_batch + j) % 10 for j in range(per_batch)]
        write_cifar_batch(base / f"data_batch_{i + 1}", i * per_batch, per_batch, {b"labels": labels})
    write_cifar_batch(base / "test_batch", 1000, 2, {b"labels": [7, 3]})
    return {f"cifar-10-batches-py/{p.name}": md5sum(p) for p in base.iterdir()}


def write_svhn(path: Path, first: int, labels: list[int]) -> None:
    n = len(labels)
    r, col, c, i = np.meshgrid(np.arange(32), np.arange(32), np.arange(3), np.arange(n), indexing="ij")
    X = pattern(first + i, c, r, col).astype(np.uint8)  # (32, 32, 3, N): row, column, channel, image
    scipy.io.savemat(path, {"X": X, "y": np.asarray(labels, dtype=np.uint8).reshape(n, 1)}, format="5")


# ------------------------------------------------------------------------------------------ reading


def test_cifar10_batches_load_with_layout_and_labels(tmp_path):
    make_cifar10(tmp_path)
    x, y = load_arrays("cifar10", tmp_path, "train", verify=False)
    assert x.dtype == torch.uint8 and x.shape == (15, 3, 32, 32)
    assert y.dtype == torch.int64 and y.tolist() == [i % 10 for i in range(15)]
    check_pattern(x, 0)  # channel order R, G, B and every pixel's row and column
    x, y = load_arrays("cifar10", tmp_path, "test", verify=False)
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [7, 3]
    check_pattern(x, 1000)


def test_cifar100_fine_and_coarse_labels(tmp_path):
    labels = {b"fine_labels": [99, 5, 42], b"coarse_labels": [19, 0, 7]}
    write_cifar_batch(tmp_path / "cifar-100-python" / "train", 0, 3, labels)
    write_cifar_batch(tmp_path / "cifar-100-python" / "test", 50, 3, labels)
    x, y = load_arrays("cifar100", tmp_path, "train", verify=False)
    assert x.shape == (3, 3, 32, 32) and y.tolist() == [99, 5, 42]
    check_pattern(x, 0)
    x, y = load_arrays("cifar100", tmp_path, "test", verify=False, coarse=True)
    assert y.tolist() == [19, 0, 7]
    check_pattern(x, 50)


def test_svhn_mat_files_and_train_plus_extra(tmp_path):
    write_svhn(tmp_path / "train_32x32.mat", 0, [1, 10, 5])
    write_svhn(tmp_path / "extra_32x32.mat", 3, [10, 2])
    write_svhn(tmp_path / "test_32x32.mat", 100, [9])
    x, y = load_arrays("svhn", tmp_path, "train", verify=False)
    assert x.dtype == torch.uint8 and x.shape == (3, 3, 32, 32) and y.tolist() == [1, 0, 5]
    check_pattern(x, 0)
    x, y = load_arrays("svhn", tmp_path, "train+extra", verify=False)
    assert x.shape == (5, 3, 32, 32) and y.tolist() == [1, 0, 5, 0, 2]
    check_pattern(x, 0)
    x, y = load_arrays("svhn", tmp_path, "extra", verify=False)
    assert y.tolist() == [0, 2]
    assert load_arrays("svhn", tmp_path, "test", verify=False)[1].tolist() == [9]


def test_digits_offline_split():
    x, y = load_arrays("digits", None, "train")
    xt, yt = load_arrays("digits", None, "test")
    assert x.dtype == torch.uint8 and x.shape[1:] == (1, 8, 8) and len(x) + len(xt) == 1797
    assert len(xt) == 360 and int(x.max()) == 255 and int(x.min()) == 0
    # 0..16 scaled by round(v * 255 / 16): only those 17 levels occur.
    levels = set(np.round(np.arange(17) * 255 / 16).astype(int).tolist())
    assert set(torch.unique(x).tolist()) <= levels
    counts = torch.bincount(yt, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 37  # stratified: about 36 of each class
    x2, y2 = load_arrays("digits", None, "train")
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(load_arrays("digits", None, "test", seed=1)[1], yt)


# ------------------------------------------------------------------------------------------ checksums


def test_verified_files_load_and_one_flipped_byte_is_refused_before_unpickling(tmp_path, monkeypatch):
    md5s = make_cifar10(tmp_path)
    monkeypatch.setitem(registry.MEMBER_MD5, "cifar10", md5s)
    x, _ = load_arrays("cifar10", tmp_path, "train")  # verify=True, all md5s match
    assert x.shape[0] == 15

    victim = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    victim.write_bytes(bytes(raw))
    calls = []
    monkeypatch.setattr(arrays, "safe_load_pickle", lambda p: calls.append(p))
    with pytest.raises(DataError) as err:
        load_arrays("cifar10", tmp_path, "train")
    msg = str(err.value)
    assert str(victim) in msg and md5s["cifar-10-batches-py/data_batch_3"] in msg and md5sum(victim) in msg
    assert registry.ARCHIVES["cifar10"].url in msg and "verify=False" in msg
    assert calls == []  # nothing was unpickled


def test_real_md5s_refuse_files_that_are_not_the_originals(tmp_path):
    write_svhn(tmp_path / "test_32x32.mat", 0, [1])
    with pytest.raises(DataError, match="eb5a983be6a315427106f1b164d9cef3"):
        load_arrays("svhn", tmp_path, "test")


# ------------------------------------------------------------------------------------------ safe unpickling


class _WritesAFile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (exec, (f"open({str(self.target)!r}, 'w').close()",))


@pytest.mark.parametrize("verify", [False, True])
def test_crafted_pickle_is_refused_without_side_effect(tmp_path, monkeypatch, verify):
    target = tmp_path / "pwned"
    batch = tmp_path / "cifar-100-python" / "train"
    batch.parent.mkdir()
    obj = {b"data": np.zeros((1, 3072), np.uint8), b"fine_labels": [0], b"x": _WritesAFile(target)}
    batch.write_bytes(pickle.dumps(obj, protocol=2))
    # verify=True with a matching md5 still goes through the restricted unpickler
    monkeypatch.setitem(registry.MEMBER_MD5, "cifar100", {"cifar-100-python/train": md5sum(batch)})
    with pytest.raises(UnsafePickleError, match=r"__builtin__\.exec") as err:
        load_arrays("cifar100", tmp_path, "train", verify=verify)
    assert str(batch) in str(err.value)
    assert not target.exists()


def test_safe_unpickler_refuses_other_globals_and_object_arrays(tmp_path):
    path = tmp_path / "p"
    path.write_bytes(pickle.dumps({"a": Path("x")}, protocol=2))
    with pytest.raises(UnsafePickleError, match="pathlib"):
        safe_load_pickle(path)
    path.write_bytes(pickle.dumps(np.array([1, "a"], dtype=object), protocol=2))
    with pytest.raises(UnsafePickleError, match="object dtype"):
        safe_load_pickle(path)
    _reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]

    class ObjectArray:  # other routes to an object array: ndarray(shape, 'O') and _reconstruct(..., 'O')
        def __init__(self, how):
            self.how = how

        def __reduce__(self):
            if self.how == "ndarray":
                return (np.ndarray, ((3,), "O"))
            return (_reconstruct, (np.ndarray, (0,), "O"))

    for how in ("ndarray", "reconstruct"):
        path.write_bytes(pickle.dumps({b"data": ObjectArray(how)}, protocol=2))
        with pytest.raises(UnsafePickleError, match="object array"):
            safe_load_pickle(path)
    obj = {b"k": [1, 2], "s": "t", b"a": np.arange(6, dtype=np.float32).reshape(2, 3)}
    path.write_bytes(pickle.dumps(obj, protocol=2))
    back = safe_load_pickle(path)
    assert back[b"k"] == [1, 2] and np.array_equal(back[b"a"], obj[b"a"])


def test_cifar_labels_must_be_integers_in_range(tmp_path):
    make_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    for labels in ([10, 3], [-1, 3], [1.7, 2.2]):
        write_cifar_batch(path, 1000, 2, {b"labels": labels})
        with pytest.raises(DataError, match=r"test_batch holds labels that are not integers in 0\.\.9"):
            load_arrays("cifar10", tmp_path, "test", verify=False)


# ------------------------------------------------------------------------------------------ bad input


def test_bad_inputs_give_one_clear_sentence(tmp_path):
    with pytest.raises(DataError, match="unknown data set 'mnist'"):
        load_arrays("mnist", tmp_path, "train")
    with pytest.raises(DataError, match="no split 'valid'"):
        load_arrays("cifar10", tmp_path, "valid")
    with pytest.raises(DataError, match="does not exist"):
        load_arrays("cifar10", tmp_path / "nope", "train")
    with pytest.raises(DataError) as err:
        load_arrays("cifar10", tmp_path, "test")
    assert "test_batch is missing" in str(err.value) and "download=True" in str(err.value)
    assert "cifar-10-python.tar.gz" in str(err.value)
    make_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(DataError, match="truncated"):
        load_arrays("cifar10", tmp_path, "test", verify=False)
    write_svhn(tmp_path / "test_32x32.mat", 0, [1, 2])
    mat = tmp_path / "test_32x32.mat"
    mat.write_bytes(mat.read_bytes()[:300])
    with pytest.raises(DataError, match="test_32x32.mat"):
        load_arrays("svhn", tmp_path, "test", verify=False)


# ------------------------------------------------------------------------------------------ download


def _serve_cifar10(tmp_path, served):
    src = tmp_path / "src"
    md5s = make_cifar10(src)
    archive = served / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return md5s, md5sum(archive)


def test_download_extract_and_load(tmp_path, http_server, monkeypatch):
    served, base, _ = http_server
    md5s, archive_md5 = _serve_cifar10(tmp_path, served)
    url = f"{base}/cifar-10-python.tar.gz"
    monkeypatch.setitem(registry.ARCHIVES, "cifar10", RemoteFile(url, "cifar-10-python.tar.gz", archive_md5))
    monkeypatch.setitem(registry.MEMBER_MD5, "cifar10", md5s)
    root = tmp_path / "new" / "data"
    x, y = load_arrays("cifar10", root, "train", download=True)
    assert x.shape == (15, 3, 32, 32)
    check_pattern(x, 0)
    assert (root / "cifar-10-python.tar.gz").is_file()
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    # Next time nothing is downloaded: the extracted files are used.
    monkeypatch.setitem(registry.ARCHIVES, "cifar10", RemoteFile("http://127.0.0.1:9/x", "x.tar.gz", "0"))
    assert torch.equal(load_arrays("cifar10", root, "test")[1], torch.tensor([7, 3]))


def test_download_wrong_md5_keeps_nothing(tmp_path, http_server, monkeypatch):
    served, base, _ = http_server
    _serve_cifar10(tmp_path, served)
    url = f"{base}/cifar-10-python.tar.gz"
    monkeypatch.setitem(registry.ARCHIVES, "cifar10", RemoteFile(url, "cifar-10-python.tar.gz", "0" * 32))
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        load_arrays("cifar10", root, "train", download=True)
    msg = str(err.value)
    assert url in msg and "0" * 32 in msg and md5sum(served / "cifar-10-python.tar.gz") in msg
    assert not root.exists()  # no archive, no temporary file, nothing extracted, not even the empty folder


def test_download_server_gone(tmp_path, http_server):
    served, base, server = http_server
    (served / "f.bin").write_bytes(b"abc")
    dest = tmp_path / "out" / "f.bin"
    download_file(f"{base}/f.bin", dest, hashlib.md5(b"abc").hexdigest(), progress=False)
    assert dest.read_bytes() == b"abc"
    with pytest.raises(DataError, match="could not download .*missing.bin"):
        download_file(f"{base}/missing.bin", tmp_path / "out" / "m.bin", None, progress=False)
    server.shutdown()
    server.server_close()
    with pytest.raises(DataError) as err:
        download_file(f"{base}/f.bin", tmp_path / "out" / "g.bin", None, progress=False, timeout=5)
    assert "could not download" in str(err.value) and str(tmp_path / "out" / "g.bin") in str(err.value)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f.bin"]


def test_svhn_download(tmp_path, http_server, monkeypatch):
    served, base, _ = http_server
    write_svhn(served / "test_32x32.mat", 0, [3, 10])
    remote = RemoteFile(f"{base}/test_32x32.mat", "test_32x32.mat", md5sum(served / "test_32x32.mat"))
    monkeypatch.setitem(registry.SVHN_FILES, "test", remote)
    x, y = load_arrays("svhn", tmp_path / "svhn", "test", download=True)
    assert y.tolist() == [3, 0]
    check_pattern(x, 0)


def test_extract_refuses_truncated_archive(tmp_path):
    archive = tmp_path / "a.tar.gz"
    src = tmp_path / "f"
    src.write_bytes(np.random.default_rng(0).bytes(50_000))
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="f")
    archive.write_bytes(archive.read_bytes()[:1000])
    out = tmp_path / "out"
    with pytest.raises(DataError, match="a.tar.gz cannot be extracted"):
        extract_tar(archive, out)
    assert list(out.iterdir()) == []


def _py2_cifar_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch as Python 2's cPickle wrote the originals: str keys, numpy.core globals, str array data."""
    import struct

    def s(text: bytes) -> bytes:  # SHORT_BINSTRING
        return b"U" + bytes([len(text)]) + text

    def i4(v: int) -> bytes:  # BININT
        return b"J" + struct.pack("<i", v)

    dtype = b"cnumpy\ndtype\n" + s(b"u1") + i4(0) + i4(1) + b"\x87R"
    dtype += b"(" + i4(3) + s(b"|") + b"NNN" + i4(-1) + i4(-1) + i4(0) + b"tb"
    raw = data.tobytes()
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\n"
        + b"cnumpy\nndarray\n"
        + i4(0)
        + b"\x85"
        + s(b"b")
        + b"\x87R"
    )
    array += b"(" + i4(1) + i4(data.shape[0]) + i4(data.shape[1]) + b"\x86" + dtype + b"\x89"
    array += b"T" + struct.pack("<i", len(raw)) + raw + b"tb"
    label_list = b"](" + b"".join(i4(v) for v in labels) + b"e"
    body = s(b"batch_label") + s(b"testing batch 1 of 1") + s(b"labels") + label_list + s(b"data") + array
    return b"\x80\x02}(" + body + b"u."


def test_python2_written_batches_load(tmp_path):
    k = np.arange(3072)
    data = np.stack([pattern(i, k // 1024, (k % 1024) // 32, k % 32) for i in range(3)]).astype(np.uint8)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.parent.mkdir()
    path.write_bytes(_py2_cifar_pickle(data, [4, 0, 9]))
    x, y = load_arrays("cifar10", tmp_path, "test", verify=False)
    assert x.shape == (3, 3, 32, 32) and y.tolist() == [4, 0, 9]
    check_pattern(x, 0)
