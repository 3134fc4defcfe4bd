"""Progress of one epoch: a live bar on a terminal, a few plain lines in logs, and the epoch's means.

The display reads the epoch's sums from the training loop's :class:`~wrn.train.meter.EpochMeter`, which keeps
them on the device; they are read back (one host sync) only when the display refreshes, at most every
``REFRESH_S`` seconds on a terminal and only at the few printed lines otherwise, so the progress display never
stalls the GPU pipeline.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

REFRESH_S = 0.5  # terminal bar: the most often values are read back from the device
PLAIN_EVERY_S = 30.0  # plain lines: at 25%, 50%, 75% and at least this often
PLAIN_QUARTERS = (0.25, 0.5, 0.75)
PLAIN_QUARTERS_AFTER_S = 5.0  # short epochs print only their summary line, keeping logs of small runs short
MIN_BAR_COLUMNS = 40  # narrower terminals get plain lines instead of a bar


def _terminal_columns(stream: TextIO) -> int:
    """The width of the terminal behind ``stream`` (COLUMNS first, as the shell sets it), or 80 if unknown."""
    import os
    import shutil

    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        columns = shutil.get_terminal_size((80, 24)).columns
    env = os.environ.get("COLUMNS", "")
    if env.strip().isdigit():
        columns = int(env)
    return columns


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class EpochProgress:
    """The progress display of one epoch of ``total_batches`` batches, read from the epoch's
    :class:`~wrn.train.meter.EpochMeter`: the display adds nothing up of its own.

    ``update()`` once per batch, after the meter has counted it. ``close()`` returns ``dict(loss, acc,
    images, seconds, images_per_s)``: the epoch's mean loss per image and accuracy in percent so far (from the
    meter), and the images and time since the display started. On a terminal it shows a tqdm bar (loss, acc,
    img/s, ETA); elsewhere it prints a plain line at 25%, 50% and 75% of the epoch and at least every 30 s.
    The meter is read back (one host sync) only when the display redraws. ``enabled=False`` prints nothing.
    """

    def __init__(
        self,
        meter,
        total_batches: int,
        desc: str = "epoch 1/200",
        enabled: bool = True,
        stream: TextIO | None = None,
    ):
        self.meter = meter
        self.total_batches = max(0, int(total_batches))
        self.desc = desc
        self.enabled = bool(enabled)
        self.stream = stream if stream is not None else sys.stderr
        self.batches = 0
        self._images_before = meter.seen  # a resumed epoch: the images counted before this display
        self._result: dict | None = None
        self._start = time.perf_counter()
        self._last_refresh = self._start
        self._last_plain = self._start
        self._next_quarter = 0
        self._bar = None
        try:
            is_tty = bool(self.stream.isatty())
        except (AttributeError, ValueError):  # no isatty, or a closed stream
            is_tty = False
        # A terminal too narrow to draw a bar (or one that reports a width of 0) gets the plain lines.
        self.is_tty = is_tty and _terminal_columns(self.stream) >= MIN_BAR_COLUMNS
        if self.enabled and self.is_tty:
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total_batches or None,
                desc=desc,
                file=self.stream,
                unit="batch",
                leave=False,
                dynamic_ncols=True,
                mininterval=REFRESH_S,
            )

    @property
    def images(self) -> int:
        return self.meter.seen - self._images_before

    def update(self) -> None:
        """Count one batch (the meter has counted its images, loss and correct predictions)."""
        self.batches += 1
        if not self.enabled:
            return
        now = time.perf_counter()
        if self._bar is not None:
            if now - self._last_refresh >= REFRESH_S or self.batches == self.total_batches:
                self._last_refresh = now
                self._refresh_bar(now)
        else:
            self._maybe_plain_line(now)

    # ---------------------------------------------------------------- reading back
    def _means(self, now: float) -> dict:
        seconds = now - self._start
        loss, acc = self.meter.means()
        return {
            "loss": loss,
            "acc": acc,
            "images": self.images,
            "seconds": seconds,
            "images_per_s": self.images / seconds if seconds > 0 else 0.0,
        }

    def _refresh_bar(self, now: float) -> None:
        means = self._means(now)
        postfix = {}
        if means["loss"] is not None:
            postfix["loss"] = f"{means['loss']:.4f}"
        if means["acc"] is not None:
            postfix["acc"] = f"{means['acc']:.2f}%"
        postfix["img/s"] = f"{means['images_per_s']:.0f}"
        # This method already limits the redraws (and device reads) to one per REFRESH_S: draw now.
        self._bar.n = self.batches
        self._bar.set_postfix(postfix, refresh=True)

    def _maybe_plain_line(self, now: float) -> None:
        due = False
        total = self.total_batches
        while (
            self._next_quarter < len(PLAIN_QUARTERS)
            and total
            and (self.batches >= math.ceil(PLAIN_QUARTERS[self._next_quarter] * total))
        ):
            self._next_quarter += 1
            due = True
        if now - self._last_plain >= PLAIN_EVERY_S:
            due = True
        if due and now - self._start < PLAIN_QUARTERS_AFTER_S:
            due = False
        if not due or (total and self.batches >= total):
            return
        self._last_plain = now
        means = self._means(now)
        parts = [self.desc + ":"]
        if total:
            parts.append(f"{100.0 * self.batches / total:3.0f}% ({self.batches}/{total} batches)")
        else:
            parts.append(f"{self.batches} batches")
        if means["loss"] is not None:
            parts.append(f"loss {means['loss']:.4f}")
        if means["acc"] is not None:
            parts.append(f"acc {means['acc']:.2f}%")
        parts.append(f"{means['images_per_s']:.0f} img/s")
        if total and self.batches:
            eta = means["seconds"] / self.batches * (total - self.batches)
            parts.append(f"ETA {_duration(eta)}")
        print("  ".join(parts), file=self.stream, flush=True)

    def close(self) -> dict:
        """Finish the display; return the epoch's mean loss, accuracy (%), images, seconds and images/s."""
        if self._result is not None:
            return self._result
        now = time.perf_counter()
        self._result = self._means(now)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        return self._result

    def __enter__(self) -> EpochProgress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _get(record: dict, key: str) -> float | None:
    value = record.get(key)
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def format_epoch_summary(epoch: int, epochs: int, record: dict) -> str:
    """One line per epoch, e.g.
    ``epoch  12/200  lr 0.1000  train loss 0.4321 acc 85.12%  test loss 0.5123 error 14.20%  1234 img/s
    train 45.1s test 3.2s``. Accuracies and errors in ``record`` are percentages; missing keys are left out.
    """
    width = len(str(epochs))
    parts = [f"epoch {epoch:>{width}}/{epochs}"]
    lr = _get(record, "lr")
    if lr is not None:
        parts.append(f"lr {lr:.4f}" if lr >= 1e-3 or lr == 0 else f"lr {lr:.2e}")

    train = []
    if (v := _get(record, "train_loss")) is not None:
        train.append(f"loss {v:.4f}")
    if (v := _get(record, "train_acc")) is not None:
        train.append(f"acc {v:.2f}%")
    if train:
        parts.append("train " + " ".join(train))

    test = []
    if (v := _get(record, "test_loss")) is not None:
        test.append(f"loss {v:.4f}")
    error = _get(record, "test_error")
    if error is None and (acc := _get(record, "test_acc")) is not None:
        error = 100.0 - acc
    if error is not None:
        test.append(f"error {error:.2f}%")
    if (v := _get(record, "test_top5_error")) is not None:
        test.append(f"top-5 error {v:.2f}%")
    if test:
        parts.append("test " + " ".join(test))
    if (v := _get(record, "ema_test_error")) is not None:  # --ema: the average's test pass
        parts.append(f"EMA error {v:.2f}%")

    if (v := _get(record, "images_per_s")) is not None:
        parts.append(f"{v:.0f} img/s")
    times = []
    if (v := _get(record, "train_time")) is not None:
        times.append(f"train {v:.1f}s")
    if (v := _get(record, "test_time")) is not None:
        times.append(f"test {v:.1f}s")
    if times:
        parts.append(" ".join(times))
    return "  ".join(parts)
