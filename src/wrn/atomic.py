"""Atomic file writes: a reader (or a crash) never sees a half-written file.

The content goes to a temporary file in the same directory, is fsync'ed, then renamed over the target;
the directory is fsync'ed so the rename survives a power cut. The previous file stays intact until then.
A write the system refuses (no space left, a read-only file system, no permission) removes the temporary
file and raises one :class:`wrn.errors.WriteError` naming the path and the cause. A temporary file left by
a killed process (``.NAME.XXXXXXXX.tmp``) is removed by :func:`remove_stale_temporaries`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from wrn.errors import WriteError, WRNError

# mkstemp's names: ".NAME." + 8 random characters + ".tmp" (+ the target's suffix with keep_suffix).
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp(\.[^.]+)?$")
# Below this many free bytes after a failed write, the write failed because the disk is full.
_FULL_BELOW = 256 * 1024


def mount_point(path: str | os.PathLike) -> Path:
    """The mount point of the file system holding ``path`` (or its nearest existing ancestor): the longest
    mount point above it in /proc/self/mounts (which also knows bind mounts), else the nearest ancestor on
    another device."""
    path = Path(os.path.realpath(path))
    try:
        with open("/proc/self/mounts") as f:
            points = [Path(line.split()[1].replace("\\040", " ")) for line in f if line.strip()]
        above = [p for p in points if p == path or p in path.parents]
        if above:
            return max(above, key=lambda p: len(p.parts))
    except OSError:
        pass
    while not path.exists():
        path = path.parent
    while not os.path.ismount(path):
        path = path.parent
    return path


def _free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path if path.is_dir() else path.parent).free
    except OSError:
        return None


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}" if n < 10e6 else f"{n / 1e6:.0f}"


def write_error(exc: BaseException, path: str | os.PathLike, needed: int | None = None) -> WriteError:
    """One sentence for an OSError (or a writer's RuntimeError over a failed write) while writing ``path``."""
    path = Path(path)
    code = getattr(exc, "errno", None)
    free = _free_bytes(path)
    if code is None and free is not None and free < _FULL_BELOW:
        code = errno.ENOSPC  # torch.save reports a full disk as "file write failed", without an errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        need = f" (needed about {_mb(needed)} MB)" if needed else ""
        return WriteError(
            f"cannot write {path}: no space left on {mount_point(path)}{need}",
            "free space and try again",
            path=str(path),
            errno=code,
            needed=needed,
        )
    causes = {
        errno.EROFS: f"{mount_point(path)} is a read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.ENOENT: f"the directory {path.parent} does not exist",
        errno.ENOTDIR: f"a parent of {path} is a file, not a directory",
        errno.EISDIR: f"{path} is a directory",
        errno.EIO: "an input/output error of the disk",
        errno.ENAMETOOLONG: "the name is too long",
    }
    cause = causes.get(code) or getattr(exc, "strerror", None) or str(exc).splitlines()[0]
    return WriteError(
        f"cannot write {path}: {cause}",
        "choose a writable location and try again",
        path=str(path),
        errno=code,
    )


# The errors of a write the system refused (as opposed to a network or a format error).
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO})


def is_refused_write(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS


@contextlib.contextmanager
def writing(path: str | os.PathLike, needed: int | None = None) -> Iterator[None]:
    """Turn an OSError raised inside the block into the :class:`WriteError` for ``path``."""
    try:
        yield
    except WRNError:  # already one sentence
        raise
    except OSError as exc:
        raise write_error(exc, path, needed) from None


def _is_failed_write(exc: BaseException, path: Path) -> bool:
    """An OSError, or a writer's own report of a failed write: torch.save's PytorchStreamWriter raises a
    RuntimeError without an errno ("unexpected pos", "file write failed") when the disk fills up."""
    if isinstance(exc, WRNError):  # the writer's own sentence (a DataError is an OSError too)
        return False
    if isinstance(exc, OSError):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc).lower()
    free = _free_bytes(path)
    return "inline_container" in text or "write" in text or (free is not None and free < _FULL_BELOW)


def write_temporary(
    path: str | os.PathLike,
    write: Callable[[str], object],
    needed: int | None = None,
    keep_suffix: bool = False,
) -> str:
    """Call ``write(tmp_path)`` to produce the content of ``path`` under a temporary name beside it
    (``.NAME.XXXXXXXX.tmp``), fsync it, and return that name; the caller renames it onto ``path``. A write
    the system refuses removes the temporary file and raises the :class:`WriteError` of ``path``."""
    path = Path(path)
    suffix = ".tmp" + (path.suffix if keep_suffix else "")
    with writing(path, needed):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        os.close(fd)
        mode = 0o666 & ~default_umask()  # mkstemp makes 0600 files; give the usual permissions
        os.chmod(tmp, mode)
        write(tmp)
        os.chmod(tmp, mode)  # again: some writers (safetensors) replace the file they are given
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    except BaseException as exc:
        failed = _is_failed_write(exc, path)
        if failed:  # (named before the temporary file's space is given back)
            error = write_error(exc, path, needed)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if failed:
            raise error from None
        raise
    return tmp


def fsync_directory(directory: str | os.PathLike) -> None:
    """fsync a directory, so that the renames in it survive a power cut."""
    with writing(directory):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[str], object],
    keep_suffix: bool = False,
    needed: int | None = None,
) -> Path:
    """Call ``write(tmp_path)`` to produce the file, then move it onto ``path`` atomically.

    ``keep_suffix``: the temporary name ends in ``path``'s extension too, for writers that check it.
    ``needed``: about how many bytes the file takes, for the message when the disk is full."""
    path = Path(path)
    tmp = write_temporary(path, write, needed, keep_suffix)
    try:
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_error(exc, path, needed) from None
        raise
    fsync_directory(path.parent)
    return path


def is_temporary(name: str) -> bool:
    """Whether a file name is one of :func:`atomic_write`'s temporaries."""
    return _TEMPORARY.match(name) is not None


def remove_stale_temporaries(directory: str | os.PathLike, names: Iterable[str] | None = None) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write` made in ``directory`` and a killed process left
    behind (for the target ``names`` only, or for every target); returns those removed.

    Call it only where no other process is writing into ``directory`` (a run holds its lock)."""
    wanted = None if names is None else set(names)
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        match = _TEMPORARY.match(entry.name)
        if match and (wanted is None or match["name"] in wanted) and entry.is_file():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def default_umask() -> int:
    """The process umask, read without changing it where the system tells it (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(
    tmp: str | os.PathLike, data: bytes | memoryview, path: str | os.PathLike | None = None
) -> None:
    """Write ``data`` to the file ``tmp``; a refused write is the :class:`WriteError` of ``path`` (the file
    that ``tmp`` becomes), with the size it needed."""
    with writing(path or tmp, needed=len(data)), open(tmp, "wb") as f:
        f.write(data)


def check_free_space(path: str | os.PathLike, needed: int) -> None:
    """Raise the "no space left" :class:`WriteError` before writing, if ``path``'s disk has less than
    ``needed`` bytes free (some writers, as torch's zip writer, fail badly when the disk fills up)."""
    free = _free_bytes(Path(path))
    if free is not None and free < needed:
        raise write_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path, needed)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: write_bytes(tmp, data, path), needed=len(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
