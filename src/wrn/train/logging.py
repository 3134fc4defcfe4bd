"""Per-run metrics: one JSON line per epoch in ``metrics.jsonl`` plus TensorBoard scalars.

``metrics.jsonl`` is the run's record of truth (``wrn plot`` and the experiment tables read it); each line is
flushed and fsynced as soon as the epoch ends, so a killed run loses at most the line being written. A resumed
run drops the lines after the epoch it resumes from, so no epoch appears twice.

Conventions of a record (what the training loop writes): ``epoch`` is 1-indexed; accuracies and errors are
percentages (0-100), as in the original code's log; losses are means per image; times are seconds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from wrn.atomic import atomic_write_text, writing
from wrn.errors import ConfigError
from wrn.train.rundir import METRICS, TENSORBOARD

TENSORBOARD_DIR = TENSORBOARD
# Per-step scalars go to their own TensorBoard run: TensorBoard purges events whose step goes backwards
# within one run, so epoch numbers and iteration numbers must never share a writer.
STEPS_SUBDIR = "steps"

# Record key -> TensorBoard tag. Other numeric keys are written under "other/<key>".
SCALAR_TAGS = {
    "train_loss": "loss/train",
    "test_loss": "loss/test",
    "train_acc": "accuracy/train",
    "test_acc": "accuracy/test",
    "train_error": "error/train",
    "test_error": "error/test",
    "lr": "lr",
    "images_per_s": "speed/images_per_s",
    "train_time": "time/train_s",
    "test_time": "time/test_s",
    "n_parameters": "model/n_parameters",
}
# Keys never written as scalars (the step itself, or values that are not measurements).
_NOT_SCALARS = {"epoch", "step", "seed"}


def _plain(value: Any) -> Any:
    """A JSON-friendly Python value: 0-d tensors and numpy scalars become int/float."""
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (ValueError, RuntimeError):  # a tensor with more than one element: leave it to json
            return value
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _metrics_path(path_or_run_dir: str | os.PathLike) -> Path:
    path = Path(path_or_run_dir)
    return path / METRICS if path.is_dir() else path


def _parse_lines(text: str, path: Path) -> list[dict]:
    """Records of a metrics file. A torn last line is skipped; a restarted epoch replaces the later ones."""
    lines = text.split("\n")
    records: list[dict] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError:
            if all(not rest.strip() for rest in lines[i + 1 :]):
                break  # the last line, cut short by a killed process
            raise ConfigError(
                f"{path} line {i + 1} is not a JSON object; repair or delete that line of the metrics file"
            ) from None
        epoch = record.get("epoch")
        if _is_number(epoch):
            # A run resumed without truncating its file: keep the newest lines for each epoch.
            records = [r for r in records if not (_is_number(r.get("epoch")) and r["epoch"] >= epoch)]
        records.append(record)
    return records


def read_metrics(path_or_run_dir: str | os.PathLike) -> list[dict]:
    """The per-epoch records of a run, from ``RUN/metrics.jsonl`` or a metrics file given directly."""
    path = _metrics_path(path_or_run_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"no metrics file at {path}; pass a run directory written by `wrn train` (it holds {METRICS})"
        ) from None
    except (IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        raise ConfigError(
            f"cannot read the metrics file {path} ({exc.strerror}); pass a run directory"
        ) from None
    return _parse_lines(text, path)


class RunLogger:
    """Writes ``out_dir/metrics.jsonl`` and TensorBoard scalars under ``out_dir/tensorboard``.

    ``resume_epoch=N``: the run continues after epoch N, so existing lines with epoch > N are dropped (and
    TensorBoard purges its events after N). ``enabled=False`` (DDP ranks other than 0) makes every method a
    no-op that touches no file.
    """

    def __init__(self, out_dir: str | os.PathLike, enabled: bool = True, resume_epoch: int | None = None):
        self.out_dir = Path(out_dir)
        self.enabled = bool(enabled)
        self.resume_epoch = resume_epoch
        self.metrics_path = self.out_dir / METRICS
        self._file = None
        self._writer = None
        self._step_writer = None
        self._closed = False
        if not self.enabled:
            return
        with writing(self.metrics_path):
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._repair_metrics()
            self._file = open(self.metrics_path, "a", encoding="utf-8")

    def _repair_metrics(self) -> None:
        """Drop a torn last line and, on resume, the epochs after ``resume_epoch`` (atomic rewrite)."""
        if not self.metrics_path.exists():
            return
        text = self.metrics_path.read_text(encoding="utf-8")
        records = _parse_lines(text, self.metrics_path)
        if self.resume_epoch is not None:
            records = [
                r for r in records if not (_is_number(r.get("epoch")) and r["epoch"] > self.resume_epoch)
            ]
        new_text = "".join(json.dumps(r) + "\n" for r in records)
        if new_text != text:
            atomic_write_text(self.metrics_path, new_text)

    def _tensorboard(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if self.resume_epoch is None else self.resume_epoch + 1
            self._writer = SummaryWriter(log_dir=str(self.out_dir / TENSORBOARD_DIR), purge_step=purge)
        return self._writer

    def log_epoch(self, record: dict) -> None:
        """Append one epoch's record (durable on disk when this returns) and write its scalars."""
        if not self.enabled:
            return
        if self._closed:
            raise RuntimeError("RunLogger.log_epoch called after close()")
        record = {str(k): _plain(v) for k, v in record.items()}
        line = json.dumps(record)
        with writing(self.metrics_path, needed=len(line) + 1):
            self._file.write(line + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())

        epoch = record.get("epoch")
        if not _is_number(epoch):
            return
        writer = self._tensorboard()
        for key, value in record.items():
            if key in _NOT_SCALARS or not _is_number(value):
                continue
            writer.add_scalar(SCALAR_TAGS.get(key, f"other/{key}"), value, global_step=int(epoch))
        writer.flush()

    def log_step(self, step: int, **scalars: Any) -> None:
        """Per-step scalars (e.g. ``log_step(it, loss=...)`` every N steps), in the ``steps`` TensorBoard run.

        Values may be 0-d tensors; each costs one host sync, so call it every N steps, not every step.
        """
        if not self.enabled or self._closed:
            return
        if self._step_writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._step_writer = SummaryWriter(log_dir=str(self.out_dir / TENSORBOARD_DIR / STEPS_SUBDIR))
        for key, value in scalars.items():
            value = _plain(value)
            if _is_number(value):
                self._step_writer.add_scalar(f"step/{key}", value, global_step=int(step))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._file is not None:
            self._file.close()
        for writer in (self._writer, self._step_writer):
            if writer is not None:
                writer.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
