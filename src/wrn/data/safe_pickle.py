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


def _check_plain(obj, path, depth: int = 0) -> None:
    """After loading: only containers of plain values and numeric/string arrays (no object dtypes, which a
    pickle could still reach by setting a dtype's state after it was built)."""
    if depth > 20:
        raise UnsafePickleError(f"{path} nests deeper than any data file: delete it.")
    if isinstance(obj, dict):
        for key, value in obj.items():
            _check_plain(key, path, depth + 1)
            _check_plain(value, path, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _check_plain(value, path, depth + 1)
    elif isinstance(obj, (np.ndarray, np.generic)):
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
    """Unpickle ``path`` admitting only dicts, lists, tuples, strings, bytes, numbers and numpy arrays.

    Anything else, a truncated file, or an object-dtype array raises a :class:`DataError` naming the file;
    nothing in the file is ever called except numpy's array reconstruction.
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
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
