"""Download, checksum and extraction of the data set files.

Downloads go to a temporary name next to the destination and are renamed only once their md5 matches, and
archives are extracted into a temporary folder whose files are then moved into place, so nothing is ever left
half-written under the expected names.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from wrn.atomic import atomic_write, is_refused_write, write_error, writing
from wrn.errors import DataError

_CHUNK = 1 << 20


def md5sum(path: str | os.PathLike) -> str:
    """The hex md5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_md5(path: Path, expected: str, url: str, put_at: Path) -> None:
    """Raise a :class:`DataError` unless ``path`` has the md5 ``expected``.

    ``url`` is where the file (or the archive holding it) comes from and ``put_at`` where a hand-downloaded copy
    goes; both appear in the message.
    """
    actual = md5sum(path)
    if actual != expected:
        raise DataError(
            f"{path} fails its checksum (md5 {actual}, expected {expected}): it is corrupt or incomplete, so "
            f"delete it and download {url} again (--download, or `wrn data download`), or put a "
            f"hand-downloaded copy at {put_at}; pass verify=False only for a re-packed copy you trust."
        )


def download_file(
    url: str, dest: str | os.PathLike, md5: str | None, *, timeout: float = 60.0, progress=True
):
    """Fetch ``url`` to ``dest`` with a progress bar, checking its md5 before it gets its final name.

    Returns the destination path. Any failure (no network, server gone, truncated transfer, wrong md5) raises
    a :class:`DataError` naming the URL, and leaves no file under ``dest``.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    with writing(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)

    def fetch(tmp: str) -> None:
        digest, size = hashlib.md5(), 0
        try:
            with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                total = int(response.headers.get("Content-Length") or 0)
                with tqdm(
                    total=total or None, unit="B", unit_scale=True, desc=dest.name, disable=not progress
                ) as bar:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                        bar.update(len(chunk))
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            if is_refused_write(exc):  # the disk, not the network
                raise write_error(exc, dest) from None
            reason = getattr(exc, "reason", None) or exc
            raise DataError(
                f"could not download {url} ({reason}): check the network, or download it by hand and put it "
                f"at {dest}."
            ) from None
        if total and size != total:
            raise DataError(
                f"the download of {url} stopped after {size} of {total} bytes: try again, or download it by "
                f"hand and put it at {dest}."
            )
        actual = digest.hexdigest()
        if md5 is not None and actual != md5:
            raise DataError(
                f"the file downloaded from {url} has md5 {actual}, expected {md5}: it was not kept; try again "
                f"later, or put a hand-downloaded copy with the right md5 at {dest}."
            )

    atomic_write(dest, fetch)  # a temporary name until the md5 is checked; nothing is left on failure
    return dest


def extract_tar(archive: str | os.PathLike, into: str | os.PathLike) -> None:
    """Extract a tar archive into ``into``: safely (no paths outside it) and all-or-nothing per file."""
    archive, into = Path(archive), Path(into)
    with writing(into):
        into.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=into) as tmp:
        try:
            with tarfile.open(archive) as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    root = Path(tmp).resolve()
                    for member in tar.getmembers():
                        target = (root / member.name).resolve()
                        if root not in target.parents and target != root or member.issym() or member.islnk():
                            raise DataError(f"{archive} holds an unsafe member {member.name!r}: delete it.")
                    tar.extractall(tmp)
        except (tarfile.TarError, EOFError, OSError) as exc:
            if isinstance(exc, DataError):
                raise
            if is_refused_write(exc):  # the disk, not the archive
                raise write_error(exc, into) from None
            raise DataError(
                f"{archive} cannot be extracted ({exc}): it is truncated or not a tar archive, so delete it "
                f"and download it again."
            ) from None
        with writing(into):
            for dirpath, _dirnames, filenames in os.walk(tmp):
                rel = Path(dirpath).relative_to(tmp)
                (into / rel).mkdir(parents=True, exist_ok=True)
                for name in filenames:
                    os.replace(Path(dirpath) / name, into / rel / name)
