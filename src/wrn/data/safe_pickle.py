"""A restricted unpickler for the CIFAR batch files.

A pickle can run any code when it is loaded. The CIFAR batches hold only a dict of byte strings/strings, lists
of ints and strings, and numpy arrays, so the unpickler here resolves only the few globals those need (numpy's
array reconstructor, ``ndarray``, ``dtype``, and the latin-1 ``_codecs.encode`` that Python 3 writes for byte
strings at protocol 2) and refuses every other global, before anything is called.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools

import numpy as np

from wrn.errors import DataError


class UnsafePickleError(DataError):
    """A pickle refers to something other than the plain types a data file holds."""


_reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's _reconstruct, wherever this numpy keeps it


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """The one use of ``_codecs.encode`` in protocol-2 pickles: a byte string stored as latin-1 text."""
    if encoding not in ("latin1", "latin-1") or errors != "strict" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _checked_dtype(*args, **kwargs):
    dtype = np.dtype(*args, **kwargs)
    if dtype.hasobject:
        raise pickle.UnpicklingError("refused a numpy object dtype")
    return dtype


def _checked_reconstruct(cls, shape, dtype, *args):
    # ``cls`` is what the pickle named as the array class: numpy.ndarray, resolved to _checked_ndarray below.
    if cls not in (np.ndarray, _checked_ndarray) or np.dtype(dtype).hasobject:
        raise pickle.UnpicklingError("refused a numpy object array or array subclass")
    return _reconstruct(np.ndarray, shape, dtype, *args)


def _checked_ndarray(shape, dtype=float, *args, **kwargs):
    if np.dtype(dtype).hasobject:
        raise pickle.UnpicklingError("refused a numpy object array")
    return np.ndarray(shape, dtype, *args, **kwargs)


_PLAIN = (str, bytes, int, float, bool, type(None))
# What a data file may hold, counted as a tree: every value each time it is reached, and how deep the values
# are built (a numpy array counts a few levels: its reconstruction and state). A CIFAR-100 training file, the
# largest, holds about 150,000 values (50,000 file names and twice 50,000 labels) built 6 deep. A pickle can
# refer to one list many times through its memo, so that a file of a few kilobytes stands for a tree of 12**17
# values ("billion laughs"), and can nest a tuple so deep that hashing it overflows the C stack: both are
# refused from the opcodes, before anything is built (:func:`_check_opcodes`).
MAX_VALUES = 1_000_000
MAX_DEPTH = 16
_IN_PLACE = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"})
_MEMO_PUT = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"})
_MEMO_GET = frozenset({"GET", "BINGET", "LONG_BINGET"})
_MARK = pickletools.markobject


def _check_opcodes(data: bytes, path) -> None:
    """Run the pickle's opcodes on a stack of (values, depth) pairs, building nothing: a new value counts
    itself and its items and is one deeper than its deepest item, a memo reference is worth what it refers
    to. Refuses a pickle that stands for more than :data:`MAX_VALUES` values or nests deeper than
    :data:`MAX_DEPTH`; a malformed stream raises ValueError, IndexError or KeyError (as the unpickler would)."""
    stack: list = []
    memo: dict = {}
    for op, arg, _pos in pickletools.genops(data):
        name = op.name
        if name in _MEMO_PUT:
            memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
        elif name in _MEMO_GET:
            stack.append(memo[arg])
        elif name == "DUP":
            stack.append(stack[-1])
        elif op.stack_after and op.stack_after[0] is _MARK:
            stack.append(_MARK)
        else:
            items = _pop_items(stack, op.stack_before)
            if op.stack_after:
                stack.append(_combine(items, name in _IN_PLACE, path))


def _pop_items(stack: list, before: list) -> list:
    """The items an opcode takes off the stack, the top first (down to the mark, if it takes one)."""
    items = []
    if _MARK in before:
        while stack[-1] is not _MARK:
            items.append(stack.pop())
        stack.pop()
        before = before[: before.index(_MARK)]
    items += [stack.pop() for _ in before]
    return items


def _combine(items: list, in_place: bool, path) -> tuple[int, int]:
    """The (values, depth) of what an opcode makes of its items: a new value, or the container (the lowest
    item) that takes in the others."""
    if in_place:
        (values, depth), items = items[-1], items[:-1]
    else:
        values, depth = 1, 0
    for v, d in items:
        values += v
        depth = max(depth, d + 1)
    if values > MAX_VALUES or depth > MAX_DEPTH:
        raise UnsafePickleError(_too_big(path, values > MAX_VALUES))
    return values, depth


def _too_big(path, values: bool) -> str:
    what = (
        f"stands for more than {MAX_VALUES:,} values (each reference counted)"
        if values
        else f"nests its values deeper than {MAX_DEPTH} levels"
    )
    return f"{path} {what}, unlike any data file: it is not a genuine data file; delete it and download it again."


def _check_plain(obj, path) -> None:
    """After loading: only containers of plain values and numeric/string arrays (no object dtypes, which a
    pickle could still reach by setting a dtype's state after it was built), at most :data:`MAX_VALUES` values
    nested at most :data:`MAX_DEPTH` deep, each shared value counted every time it is reached."""
    stack, seen = [(obj, 0)], 0
    while stack:
        obj, depth = stack.pop()
        seen += 1
        if seen > MAX_VALUES or depth > MAX_DEPTH:
            raise UnsafePickleError(_too_big(path, seen > MAX_VALUES))
        if isinstance(obj, dict):
            stack.extend((item, depth + 1) for pair in obj.items() for item in pair)
        elif isinstance(obj, (list, tuple)):
            stack.extend((value, depth + 1) for value in obj)
        else:
            _check_leaf(obj, path)


def _check_leaf(obj, path) -> None:
    if isinstance(obj, (np.ndarray, np.generic)):
        if obj.dtype.hasobject or obj.dtype.kind not in "biufcSU":
            raise UnsafePickleError(
                f"{path} holds a numpy array of dtype {obj.dtype}, which a data file never holds: delete it."
            )
    elif not isinstance(obj, _PLAIN):
        raise UnsafePickleError(
            f"{path} holds a {type(obj).__name__}, which a data file never holds: delete it."
        )


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("numpy", "ndarray"): _checked_ndarray,
    ("numpy", "dtype"): _checked_dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path):
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._path} refers to {module}.{name}, which a data file never holds, so it was not "
                f"unpickled: it is not a genuine data file (possibly malicious); delete it and download it again."
            ) from None

    def persistent_load(self, pid):
        raise UnsafePickleError(
            f"{self._path} uses persistent ids, which a data file never holds: delete it."
        )


def safe_load_pickle(path: str | os.PathLike):
    """Unpickle ``path`` admitting only dicts, lists, tuples, strings, bytes, numbers and numpy arrays, at most
    :data:`MAX_VALUES` of them (each reference counted) nested at most :data:`MAX_DEPTH` deep.

    Anything else, a truncated file, or an object-dtype array raises a :class:`DataError` naming the file;
    nothing in the file is ever called except numpy's array reconstruction.
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        _check_opcodes(data, path)
        obj = _RestrictedUnpickler(io.BytesIO(data), path).load()
    except DataError:
        raise
    except pickle.UnpicklingError as exc:
        raise UnsafePickleError(f"{path} was refused by the safe unpickler ({exc}): delete it.") from None
    except Exception as exc:  # EOFError, ValueError, ... from a truncated or garbled file
        raise DataError(
            f"{path} cannot be read as a pickle ({type(exc).__name__}: {exc}): it is truncated or corrupt, so "
            f"delete it and download it again."
        ) from None
    _check_plain(obj, path)
    return obj
