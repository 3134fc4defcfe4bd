"""``wrn data``: download and verify from the command line, errors as one line."""

from __future__ import annotations

import numpy as np
import scipy.io

from wrn.cli import main
from wrn.data import md5sum, registry
from wrn.data.registry import RemoteFile


def test_download_then_verify_and_errors(tmp_path, monkeypatch, capsys, http_server):
    served, base_url, _ = http_server
    X = np.zeros((32, 32, 3, 2), np.uint8)
    scipy.io.savemat(served / "test_32x32.mat", {"X": X, "y": np.array([[1], [10]], np.uint8)})
    url = f"{base_url}/test_32x32.mat"
    remote = RemoteFile(url, "test_32x32.mat", md5sum(served / "test_32x32.mat"))
    monkeypatch.setitem(registry.SVHN_FILES, "test", remote)
    root = tmp_path / "root"
    assert main(["data", "download", "svhn", "--root", str(root), "--split", "test"]) == 0
    assert (root / "test_32x32.mat").is_file() and "verified" in capsys.readouterr().out
    assert main(["data", "verify", "svhn", "--root", str(root), "--split", "test"]) == 0
    capsys.readouterr()
    (root / "test_32x32.mat").write_bytes(b"junk")
    assert main(["data", "verify", "svhn", "--root", str(root), "--split", "test"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fails its checksum" in err and "Traceback" not in err
    assert main(["data", "verify", "cifar10", "--root", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
