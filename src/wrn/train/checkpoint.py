"""Checkpoints that survive a crash at any moment and load with ``torch.load(..., weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (no modules, no Namespaces, no
``module.`` prefixes). It is written to a temporary file in the same directory, flushed and fsynced, then
renamed over ``checkpoint.pt`` and the directory fsynced: a kill at any point leaves either the previous
checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wrn.atomic import atomic_write, check_free_space
from wrn.errors import CheckpointError
from wrn.train.rundir import CHECKPOINT

FORMAT = "wrn-train-checkpoint"
VERSION = 1
# The entry that holds the checksum of the rest of the checkpoint.
DIGEST_KEY = "digest"


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` through a temporary file, fsync and rename (:mod:`wrn.atomic`).

    A training checkpoint (a dict with the format marker) gets a ``digest``: the sha256 of its content,
    which :func:`load` checks."""
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        obj = {**{k: v for k, v in obj.items() if k != DIGEST_KEY}, DIGEST_KEY: {"sha256": digest(obj)}}
    needed = _payload_bytes(obj)
    check_free_space(path, needed)  # torch's zip writer can abort the process on a full disk
    atomic_write(path, lambda tmp: torch.save(obj, tmp), needed=needed)


def _leaves(obj: Any, where: str = ""):
    """(path, value) of every leaf of a checkpoint's nested dicts, lists and tuples, in a fixed order."""
    if isinstance(obj, dict):
        for key in sorted(obj, key=str):
            yield from _leaves(obj[key], f"{where}/{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _leaves(value, f"{where}[{i}]")
    else:
        yield where, obj


def digest(state: dict[str, Any]) -> str:
    """The sha256 of a checkpoint's content: every tensor's dtype, shape and bytes and every other value,
    each with its place in the dict (the ``digest`` entry itself left out)."""
    h = hashlib.sha256()
    for where, value in _leaves({k: v for k, v in state.items() if k != DIGEST_KEY}):
        if isinstance(value, torch.Tensor):
            t = value.detach().to("cpu").contiguous().reshape(-1)
            h.update(f"{where}={t.dtype}{tuple(value.shape)}:".encode())
            h.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
        else:
            h.update(f"{where}={type(value).__name__}:{value!r};".encode())
    return h.hexdigest()


def _payload_bytes(obj: Any) -> int:
    return sum(v.numel() * v.element_size() for _, v in _leaves(obj) if isinstance(v, torch.Tensor))


def _is_int(value: Any, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def check_state(state: Any, path: str | Path = CHECKPOINT) -> dict[str, Any]:
    """Raise :class:`CheckpointError` unless ``state`` has every entry a resume reads, each of its type:
    the model's and the optimizer's state, whole-number counters and one part per process."""
    problems = []
    for key in ("epoch", "step", "global_step"):
        if not _is_int(state.get(key)):
            problems.append(f"'{key}' is {state.get(key)!r}, not a whole number")
    if not _is_int(state.get("world_size"), 1):
        problems.append(f"'world_size' is {state.get('world_size')!r}, not a positive whole number")
    model = state.get("model")
    if (
        not isinstance(model, dict)
        or not model
        or not all(isinstance(v, torch.Tensor) for v in model.values())
    ):
        problems.append("'model' is missing or is not a dict of tensors")
    optimizer = state.get("optimizer")
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get("param_groups"), list):
        problems.append("'optimizer' is missing or is not an optimizer's state_dict")
    for key in ("config", "schedule", "scaler"):
        if not isinstance(state.get(key), dict):
            problems.append(f"'{key}' is missing or is not a dict")
    ranks = state.get("ranks")
    if not isinstance(ranks, list) or len(ranks) != state.get("world_size"):
        problems.append("'ranks' is missing or does not hold one entry per process")
    elif not all(isinstance(r, dict) and {"rng", "loader", "sums"} <= r.keys() for r in ranks):
        problems.append("an entry of 'ranks' lacks its 'rng', 'loader' or 'sums'")
    if problems:
        raise CheckpointError(
            f"{path} is not a complete training checkpoint ({'; '.join(problems[:3])}); "
            "use a previous copy of the checkpoint or start the run again"
        )
    return state


def load(run_dir: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read ``RUN_DIR/checkpoint.pt``, check its entries (:func:`check_state`) and its digest; a missing,
    incomplete or corrupt file raises :class:`CheckpointError`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(
            f"{str(run_dir)!r} is not a directory; pass the run directory written by 'wrn train'"
        )
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(
            f"{str(run_dir)!r} holds no {CHECKPOINT}; pass the run directory of a run started by 'wrn train'"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a torn or foreign file: zip, pickle or unpickler errors of many kinds
        reason = (
            "it holds pickled Python objects" if "weights_only" in str(exc).lower() else type(exc).__name__
        )
        raise CheckpointError(
            f"{str(path)!r} is corrupt or not a training checkpoint ({reason}); "
            "start a new run or restore the file from a backup"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not a 'wrn train' checkpoint; start a new run with 'wrn train'"
        )
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint version {state.get('version')!r} but this wrn reads {VERSION}; "
            "resume it with the wrn version that wrote it"
        )
    check_state(state, path)
    recorded = state.get(DIGEST_KEY)
    if recorded is not None:  # checkpoints written before digests were recorded have none
        if not isinstance(recorded, dict) or recorded.get("sha256") != digest(state):
            raise CheckpointError(
                f"{path} is corrupt: its content does not match the checksum recorded when it was written; "
                "use a previous copy of the checkpoint or start the run again"
            )
    return state


# --------------------------------------------------------------------------------------------- RNG states


def rng_state() -> dict[str, Any]:
    """Every random generator a training step may touch, as plain tensors and numbers."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
