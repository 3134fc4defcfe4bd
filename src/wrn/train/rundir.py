"""The run directory: what ``wrn train`` writes, where, and what "done" means. Every module that reads or
writes a run goes through :class:`RunDir`.

A run directory holds:

- ``config.yaml``: the resolved config the run trains with (written before anything is trained);
- ``checkpoint.pt``: everything needed to continue bit for bit (rewritten atomically, the last good one kept);
- ``metrics.jsonl``: one record per epoch, and ``tensorboard/``: the same as TensorBoard events;
- at the end ``model.safetensors`` + ``model.json`` (the final weights and what they are) and ``curves.png``.

Its states, one rule (:meth:`RunDir.state`) for every command: ``missing`` (no folder, or an empty one),
``unstarted`` (killed before its first checkpoint: only what a run writes before it, so it starts afresh),
``partial`` (a checkpoint to resume from), ``done`` (the final weights are written), and ``other`` (a folder
holding something else: never written into). One process trains a run at a time: it holds :class:`RunLock`,
an exclusive ``flock`` on the file ``.lock`` inside the folder, which has one inode whatever path names the
folder (a symlink, ``.``, a bind mount); ``wrn reproduce`` takes the same lock for the runs of a grid.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

CONFIG = "config.yaml"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
# The model folder of wrn.save_model (the WEIGHTS_FILE and CONFIG_FILE of wrn.models.io, not imported so
# that the light commands need no torch): the weights and what they are.
WEIGHTS = "model.safetensors"
MODEL_JSON = "model.json"
CURVES = "curves.png"
LOCK = ".lock"  # inside the run folder: one file, however the folder is named
EDITED_CONFIG = "config.edited.yaml"
BEST = "best"  # the best epoch's model folder (adv.holdout: early stopping on robust accuracy)
ROBUST_RECORD = "robust-{attack}-{norm}-{eps}.json"  # wrn eval --attack's record (eps: 8/255 written 8_255)
# Set by `wrn reproduce` for its `wrn train` child: the descriptor of the run's lock, which it holds already.
LOCK_FD_ENV = "WRN_RUN_LOCK_FD"

# What a run writes before its first checkpoint: a folder holding only these (and temporaries of atomic writes
# a kill left) has nothing worth keeping.
_BEFORE_FIRST_CHECKPOINT = (CONFIG, METRICS, TENSORBOARD)


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    def __str__(self) -> str:
        return str(self.path)

    config = property(lambda self: self.path / CONFIG)
    checkpoint = property(lambda self: self.path / CHECKPOINT)
    metrics = property(lambda self: self.path / METRICS)
    tensorboard = property(lambda self: self.path / TENSORBOARD)
    weights = property(lambda self: self.path / WEIGHTS)
    model_json = property(lambda self: self.path / MODEL_JSON)
    curves = property(lambda self: self.path / CURVES)
    edited_config = property(lambda self: self.path / EDITED_CONFIG)
    lock = property(lambda self: self.path / LOCK)
    best = property(lambda self: self.path / BEST)

    def robust_record(self, attack: str, norm: str, eps: str) -> Path:
        return self.path / ROBUST_RECORD.format(attack=attack, norm=norm, eps=eps.replace("/", "_"))

    def state(self) -> str:
        """``done``, ``partial``, ``unstarted``, ``other`` or ``missing`` (see the module's docstring).

        ``done`` means the model files are those of the run's end: model.json records the epochs its weights
        trained, and they are the config's (a run killed while a longer ``--resume`` wrote its model still
        holds the shorter run's model beside a later checkpoint: it is ``partial``, and a resume finishes it
        from the checkpoint)."""
        finished = self.model_json.is_file() and self.weights.is_file()
        if finished and (not self.checkpoint.is_file() or self._model_is_the_last()):
            return "done"
        if self.checkpoint.is_file():
            return "partial"
        if not self.path.is_dir():
            return "missing"
        entries = [e for e in self.path.iterdir() if e.name != LOCK]
        if not entries:
            return "missing"
        return "unstarted" if all(_before_first_checkpoint(e) for e in entries) else "other"

    def read_config(self):
        """The run's config.yaml, validated (a :class:`~wrn.train.config.TrainConfig`): the one reader of a run's
        config. Every failure (missing, unreadable, not YAML, not a valid config) is a ConfigError naming the
        file; a caller for which the config is optional catches it."""
        from wrn.errors import ConfigError
        from wrn.train.compose import read_yaml_file
        from wrn.train.config import validate

        data = read_yaml_file(self.config, "the run's config")
        try:
            return validate(data)
        except ConfigError as exc:
            raise ConfigError(f"{self.config}: {exc}") from None

    def model_epochs(self) -> int | None:
        """The epochs the weights of model.json trained (its ``metadata.epochs``), None if it does not say."""
        import json

        try:
            if self.model_json.stat().st_size > 1 << 24:  # (no model description is that large: unread)
                return None
            epochs = json.loads(self.model_json.read_text(encoding="utf-8"))["metadata"]["epochs"]
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return None
        return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None

    def _model_is_the_last(self) -> bool:
        """Whether model.json holds the weights of the run's last epoch (the config's number of epochs);
        true where either cannot be read (a model written by other code, a config edited beyond reading)."""
        from wrn.errors import ConfigError

        epochs = self.model_epochs()
        try:
            wanted = self.read_config().schedule.epochs if self.config.is_file() else None
        except ConfigError:
            wanted = None
        return epochs is None or wanted is None or epochs == wanted

    def clear_unstarted(self) -> None:
        """Remove what a run killed before its first checkpoint left, so that it starts afresh."""
        if self.state() == "unstarted":
            for entry in self.path.iterdir():
                if entry.name != LOCK:  # held by this process: another would lock a new file
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def check_new(self) -> None:
        """A new run may go into a folder that does not exist, an empty one, or one killed before its first
        checkpoint; anything else is refused in one sentence. Writes nothing."""
        from wrn.errors import ConfigError
        from wrn.paths import check_output_dir

        check_output_dir(self.path, "--out")  # a file, a path under a file, a read-only or unwritable place
        state = self.state()
        if state in ("partial", "done"):
            raise ConfigError(
                f"the output directory {str(self.path)!r} already exists and is a run directory; continue it with "
                f"'wrn train --resume {self.path}' or choose another --out"
            )
        if state == "other":
            raise ConfigError(
                f"the output directory {str(self.path)!r} already exists and is not empty; choose another --out"
            )

    def hold_lock(self) -> RunLock:
        """The run's lock, for this process's lifetime (one process trains a run at a time); a lock that
        ``wrn reproduce`` took for this process (``WRN_RUN_LOCK_FD``) is adopted."""
        from wrn.errors import ConfigError

        lock = RunLock(self.lock)
        inherited = os.environ.get(LOCK_FD_ENV, "")
        if inherited.isdigit() and lock.adopt(int(inherited)):
            return lock
        try:
            taken = lock.acquire()
        except OSError as exc:
            raise ConfigError(
                f"cannot create the run's lock file {str(self.lock)!r} ({exc.strerror}); "
                "train into a folder you can write to"
            ) from None
        if not taken:
            pid = lock.holder()
            who = f"process {pid}" if pid else "another process"
            raise ConfigError(
                f"{self} is being trained by {who} right now; wait for it to finish, or stop it first"
                + (f" (kill {pid})" if pid else "")
            )
        return lock


def _before_first_checkpoint(entry: Path) -> bool:
    """Whether ``entry`` of a run folder is what a run writes before its first checkpoint: config.yaml, an
    empty metrics.jsonl, TensorBoard events, or a temporary of an atomic write that a kill left."""
    from wrn.atomic import is_temporary

    if entry.name == METRICS:
        return entry.is_file() and not entry.read_text(encoding="utf-8", errors="replace").strip()
    return entry.name in _BEFORE_FIRST_CHECKPOINT or (entry.is_file() and is_temporary(entry.name))


def default_out_dir(name: str, root: str | os.PathLike = "runs") -> Path:
    """``runs/<name>-<timestamp>``, with ``-2``, ``-3``, ... if that exists already."""
    from datetime import datetime

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{name}-{stamp}"
    n = 2
    while path.exists():
        path = Path(root) / f"{name}-{stamp}-{n}"
        n += 1
    return path


class RunLock:
    """An exclusive ``flock`` on a run's lock file: one process trains a run at a time.

    The lock goes with the process: a lock left by a dead process never blocks. The holder's PID is written
    into the file, so that another process can say who holds it. A descriptor handed to a child process
    (``pass_fds``) keeps the lock held until the child has exited, even when the parent is killed first.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise
        self.fd = fd
        self.mark_holder()
        return True

    def adopt(self, fd: int) -> bool:
        """Take over the descriptor of this lock that a parent process holds for us (``WRN_RUN_LOCK_FD``)."""
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(self.path))
        except OSError:
            return False
        if same:
            self.fd = fd
            self.mark_holder()
        return same

    def mark_holder(self, pid: int | None = None) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{pid or os.getpid()}\n".encode(), 0)
        except OSError:  # a read-only lock file still locks; only the PID goes unsaid
            pass

    def holder(self) -> int | None:
        """The PID written by the process that holds the lock, if it wrote one."""
        try:
            text = self.path.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def lock_is_held(path: Path) -> bool:
    """Whether another process holds the lock at ``path`` (it is training that run now). Creates nothing."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
