"""Checkpoints that survive a crash at any moment and load with ``torch.load(..., weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (no modules, no Namespaces, no
``module.`` prefixes). It is written to a temporary file in the same directory, flushed and fsynced, then
renamed over ``checkpoint.pt`` and the directory fsynced: a kill at any point leaves either the previous
checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wrn.atomic import atomic_write
from wrn.errors import CheckpointError

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = "wrn-train-checkpoint"
VERSION = 1


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` through a temporary file, fsync and rename (:mod:`wrn.atomic`)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def remove_stale_temporaries(run_dir: str | Path) -> None:
    """Delete temporary files left by a checkpoint write that was killed half-way."""
    for stale in Path(run_dir).glob(f".{CHECKPOINT_NAME}.*.tmp"):
        stale.unlink(missing_ok=True)


def load(run_dir: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read ``RUN_DIR/checkpoint.pt``; a missing or corrupt file raises :class:`CheckpointError`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(
            f"{str(run_dir)!r} is not a directory; pass the run directory written by 'wrn train'"
        )
    path = run_dir / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{str(run_dir)!r} holds no {CHECKPOINT_NAME}; pass the run directory of a run started by 'wrn train'"
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
