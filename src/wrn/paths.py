"""One check for every path a command reads or writes, each failure named in one sentence.

A command checks its paths before it writes anything: an input that does not exist or is of the wrong kind
(a file where a folder is expected, or the other way round), an output whose folder is a file, that exists
already, or that cannot be written (a read-only file system, no permission). Each failure is a
:class:`wrn.errors.PathError`: ``WHAT PATH is a file; FIX``.
"""

from __future__ import annotations

import os
from pathlib import Path

from wrn.errors import PathError


def _kind(path: Path) -> str:
    return "a directory" if path.is_dir() else "a file"


def _blocking_parent(path: Path) -> Path | None:
    """The nearest ancestor of ``path`` that exists but is not a directory (so nothing can be made below it)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _existing_ancestor(path: Path) -> Path:
    for parent in path.parents:
        if parent.is_dir():
            return parent
    return Path(".")


def _missing(path: Path, what: str, fix: str) -> PathError:
    blocker = _blocking_parent(path)
    if blocker is not None:
        return PathError(f"{what} {path}: its parent {blocker} is a file, not a directory; {fix}")
    return PathError(f"{what} {path} does not exist; {fix}")


def check_input_file(
    path: str | os.PathLike, what: str = "the file", fix: str = "give the path of a file"
) -> Path:
    """``path`` as a :class:`Path` if it is a readable file; else a :class:`PathError` naming the problem."""
    path = Path(path)
    if path.is_dir():
        raise PathError(f"{what} {path} is a directory, not a file; {fix}")
    if not path.exists():
        raise _missing(path, what, fix)
    if not os.access(path, os.R_OK):
        raise PathError(f"{what} {path} is not readable (permission denied); {fix}")
    return path


def check_input_dir(
    path: str | os.PathLike, what: str = "the directory", fix: str = "give the path of a directory"
) -> Path:
    """``path`` as a :class:`Path` if it is a readable directory; else a :class:`PathError`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PathError(f"{what} {path} is a file, not a directory; {fix}")
    if not path.exists():
        raise _missing(path, what, fix)
    if not os.access(path, os.R_OK | os.X_OK):
        raise PathError(f"{what} {path} is not readable (permission denied); {fix}")
    return path


def _check_writable_at(path: Path, what: str) -> None:
    """The nearest existing folder at or above ``path`` accepts new files (not read-only, not forbidden)."""
    blocker = _blocking_parent(path)
    if blocker is not None:
        raise PathError(
            f"{what} {path}: its parent {blocker} is a file, not a directory; choose a path in a directory"
        )
    folder = path if path.is_dir() else _existing_ancestor(path)
    if not os.access(folder, os.W_OK | os.X_OK):
        cause = (
            "is on a read-only file system" if _read_only(folder) else "is not writable (permission denied)"
        )
        raise PathError(f"{what} {path}: the directory {folder} {cause}; choose a writable location")


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_new_output_file(
    path: str | os.PathLike, force: bool = False, what: str = "the output file", flag: str = "--force"
) -> Path:
    """``path`` as a :class:`Path` if a file may be written there: not a directory, not existing unless
    ``force`` (then it is replaced), below directories (made if missing) that are writable."""
    path = Path(path)
    if path.is_dir():
        raise PathError(f"{what} {path} is a directory; give a file name inside it")
    if path.exists() and not force:
        raise PathError(f"{what} {path} already exists; pass {flag} to replace it, or choose another name")
    _check_writable_at(path, what)
    return path


def check_output_dir(path: str | os.PathLike, what: str = "the output directory") -> Path:
    """``path`` as a :class:`Path` if it is, or can be made, a writable directory."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PathError(f"{what} {path} is a file, not a directory; choose a directory")
    _check_writable_at(path, what)
    return path


__all__ = ["check_input_dir", "check_input_file", "check_new_output_file", "check_output_dir"]
