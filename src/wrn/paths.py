"""One check for every path a command reads or writes, each failure named in one sentence.

A command checks its paths before it writes anything: a name longer than the file system allows, an input
that does not exist or is of the wrong kind (a file where a folder is expected, or the other way round; a FIFO,
socket or device where a file is expected, which would block or never end), an output whose folder is a file,
that exists already, or that cannot be written (a read-only file system, no permission). Each failure is a
:class:`wrn.errors.PathError`: ``WHAT PATH is a file; FIX``.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from wrn.errors import PathError

# The limits of Linux's file systems, where the system does not tell its own (pathconf).
NAME_MAX = 255
PATH_MAX = 4096


def _limit(path: Path, name: str, default: int) -> int:
    """The system's limit ``name`` where the nearest existing folder above ``path`` is (stat, not is_dir:
    a parent whose own name is too long must not raise here)."""
    for parent in path.absolute().parents:
        try:
            if stat.S_ISDIR(os.stat(parent).st_mode):
                return os.pathconf(parent, name)
        except (OSError, ValueError):
            continue
    return default


def check_length(path: str | os.PathLike, what: str = "the path") -> Path:
    """``path`` as a :class:`Path` if the system can name it: each part at most NAME_MAX bytes, the whole at
    most PATH_MAX; else a :class:`PathError` (the system's own error is "File name too long")."""
    path = Path(path)
    longest = max(path.parts, key=lambda part: len(os.fsencode(part)), default="")
    limit = _limit(path, "PC_NAME_MAX", NAME_MAX)
    if len(os.fsencode(longest)) > limit:
        shown = longest[:24] + "..." if len(longest) > 27 else longest
        raise PathError(
            f"{what} has a name of {len(os.fsencode(longest))} bytes ({shown!r}), longer than the {limit} the "
            "file system allows; choose a shorter name"
        )
    total = len(os.fsencode(os.path.abspath(path)))
    if total > _limit(path, "PC_PATH_MAX", PATH_MAX):
        raise PathError(f"{what} is {total} bytes long, longer than the system allows; choose a shorter path")
    return path


def too_long(exc: OSError) -> PathError | None:
    """The one sentence for an ``OSError`` "File name too long" raised by a path no check saw; else None."""
    if exc.errno != errno.ENAMETOOLONG:
        return None
    try:
        check_length(exc.filename or "", "a path")
    except PathError as error:
        return error
    return PathError(f"a path ({exc.filename}) is longer than the system allows; choose a shorter path")


def not_a_file(path: str | os.PathLike) -> str | None:
    """What ``path`` is if it exists but is neither a regular file nor a directory: "a FIFO" (reading it
    blocks until something writes to it), "a socket", "a device" (it may never end), "a link to nothing";
    else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "a link to nothing (its target does not exist)" if os.path.islink(path) else None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"


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
    path = check_length(path, what)
    if path.is_dir():
        raise PathError(f"{what} {path} is a directory, not a file; {fix}")
    if not path.exists():
        raise _missing(path, what, fix)
    kind = not_a_file(path)
    if kind is not None:
        raise PathError(f"{what} {path} is {kind}, not a regular file; {fix}")
    if not os.access(path, os.R_OK):
        raise PathError(f"{what} {path} is not readable (permission denied); {fix}")
    return path


def check_input_dir(
    path: str | os.PathLike, what: str = "the directory", fix: str = "give the path of a directory"
) -> Path:
    """``path`` as a :class:`Path` if it is a readable directory; else a :class:`PathError`."""
    path = check_length(path, what)
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
    path = check_length(path, what)
    if path.is_dir():
        raise PathError(f"{what} {path} is a directory; give a file name inside it")
    if path.exists() and not force:
        raise PathError(f"{what} {path} already exists; pass {flag} to replace it, or choose another name")
    _check_writable_at(path, what)
    return path


def check_output_dir(path: str | os.PathLike, what: str = "the output directory") -> Path:
    """``path`` as a :class:`Path` if it is, or can be made, a writable directory."""
    path = check_length(path, what)
    if path.exists() and not path.is_dir():
        raise PathError(f"{what} {path} is a file, not a directory; choose a directory")
    _check_writable_at(path, what)
    return path


__all__ = [
    "check_input_dir",
    "check_input_file",
    "check_length",
    "check_new_output_file",
    "check_output_dir",
    "not_a_file",
    "too_long",
]
