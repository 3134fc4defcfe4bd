"""Training curves in the style of the paper's Figure 2.

Test error (%) per epoch as solid lines, training loss per epoch as dashed lines on a second y axis (as in the
paper: loss on the left, error on the right), and the learning-rate drops as vertical dotted lines, in the
colour of their run. Everything comes from the run's ``metrics.jsonl`` (see :mod:`wrn.train.logging`); the
title and labels come from the run's ``config.yaml`` when it has one. The training loss is always on a log
scale (late in training it spans decades), for one run as for several; epochs are whole numbers; the one
grid follows the test-error axis. The file's extension picks the format: ``.png``, ``.svg`` or ``.pdf``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from wrn.atomic import atomic_write, writing
from wrn.errors import ConfigError
from wrn.train.logging import read_metrics
from wrn.train.rundir import CURVES, RunDir

DPI = 150
FORMATS = (".png", ".svg", ".pdf")
# Colour-blind friendly palette (Okabe-Ito), one colour per run.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")


def lr_drop_epochs(records: Sequence[dict]) -> list[int]:
    """Epochs whose learning rate is lower than the previous epoch's (the first epoch at the new rate)."""
    drops = []
    previous = None
    for i, record in enumerate(records):
        lr = record.get("lr")
        if not isinstance(lr, (int, float)) or isinstance(lr, bool):
            continue
        if previous is not None and lr < previous * (1 - 1e-9):
            drops.append(int(record.get("epoch", i + 1)))
        previous = lr
    return drops


def _number(value) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return math.nan


def _series(records: Sequence[dict]) -> tuple[list[float], list[float], list[float]]:
    """Epochs, test error in percent and train loss (NaN where a record lacks a value)."""
    epochs = [_number(r.get("epoch", i + 1)) for i, r in enumerate(records)]
    if any("test_error" in r for r in records):
        error = [_number(r.get("test_error")) for r in records]
    else:
        acc = [_number(r.get("test_acc")) for r in records]
        finite = [a for a in acc if not math.isnan(a)]
        scale = 1.0 if finite and max(finite) <= 1.0 else 100.0  # a fraction or a percentage
        error = [100.0 * (1.0 - a / scale) for a in acc]
    loss = [_number(r.get("train_loss")) for r in records]
    return epochs, error, loss


def _final(values: Sequence[float]) -> float:
    for value in reversed(values):
        if not math.isnan(value):
            return value
    return math.nan


def _read_config(run_dir: Path) -> dict:
    """The run's config as a dict, {} where it has none that reads (a label is not worth failing a plot for)."""
    try:
        return RunDir(run_dir).read_config().to_dict()
    except ConfigError:
        return {}


def _name(value) -> str | None:
    if isinstance(value, dict):
        value = value.get("name") or value.get("arch")
    return str(value) if value not in (None, "") else None


def run_label(run_dir: str | os.PathLike) -> str:
    """The model name from the run's config.yaml, else the folder name."""
    run_dir = Path(run_dir)
    return _name(_read_config(run_dir).get("model")) or run_dir.resolve().name


def run_title(run_dir: str | os.PathLike) -> str:
    """``MODEL on DATASET`` from the run's config.yaml, else the folder name."""
    run_dir = Path(run_dir)
    config = _read_config(run_dir)
    model, dataset = _name(config.get("model")), _name(config.get("dataset"))
    if model and dataset:
        return f"{model} on {dataset}"
    return model or dataset or run_dir.resolve().name


def _load(run_dir: Path) -> list[dict]:
    records = read_metrics(run_dir)
    if not records:
        raise ConfigError(
            f"{run_dir / 'metrics.jsonl'} holds no epochs yet; plot the run after its first epoch has finished"
        )
    return records


def new_figure(title: str):
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8.0, 5.0), dpi=DPI, layout="constrained")
    ax_loss = fig.add_subplot()
    ax_err = ax_loss.twinx()
    ax_loss.set_title(title, fontsize=13)
    ax_loss.set_xlabel("epoch", fontsize=11)
    ax_loss.set_ylabel("training loss (dashed)", fontsize=11)
    ax_err.set_ylabel("test error, % (solid)", fontsize=11)
    ax_loss.set_yscale("log")  # late-training loss spans decades; the same scale for one run or several
    ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    # One grid, on the test error's ticks (the figure's subject) and the epochs; none on the loss axis.
    ax_loss.grid(True, axis="x", alpha=0.3)
    ax_err.grid(True, axis="y", alpha=0.3)
    for ax in (ax_loss, ax_err):
        ax.tick_params(labelsize=10)
    # The error curves are the figure's main subject: draw them above the loss curves.
    ax_err.set_zorder(ax_loss.get_zorder() + 1)
    ax_err.patch.set_visible(False)
    return fig, ax_loss, ax_err


def finish_axes(ax_loss, ax_err, errors: list[float], epochs: list[float]) -> None:
    """The test-error axis from 0 to just above the largest error; the epochs from 0 to the last."""
    finite_err = [v for v in errors if not math.isnan(v)]
    if finite_err:
        ax_err.set_ylim(0, max(finite_err) * 1.05 + 0.5)
    finite_ep = [e for e in epochs if not math.isnan(e)]
    if finite_ep:
        ax_loss.set_xlim(min(0.0, min(finite_ep)), max(finite_ep) + 0.5)


def plain_log_ticks(ax) -> None:
    """Tick labels of a log axis as plain numbers (2.25 and 0.6, not 2.25 x 10^0 or 6e-01), on the ticks
    matplotlib's LogFormatter chooses to label."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):
        def __call__(self, x, pos=None):
            return f"{x:g}" if super().__call__(x, pos) else ""

    for ticks in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        ticks(Plain(labelOnlyBase=False))


def mark_lr_drops(ax, drops: Sequence[int], colour: str = "0.45", offset: float = 0.0) -> None:
    for epoch in sorted(set(drops)):
        ax.axvline(epoch + offset, color=colour, linestyle=":", linewidth=1.3, zorder=0)


def save_figure(fig, out: Path) -> Path:
    """Write the figure in the format of its extension (PNG, SVG or PDF), atomically."""
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"cannot draw {out}: give a file name ending in {', '.join(FORMATS)}")
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(out, lambda tmp: fig.savefig(tmp, format=suffix[1:], dpi=DPI), keep_suffix=True)


def lr_drop_handle(label: str = "lr drop"):
    from matplotlib.lines import Line2D

    return Line2D([], [], color="0.45", linestyle=":", linewidth=1.3, label=label)


def plot_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Plot one run's curves to ``out`` (default ``RUN/curves.png``); returns the path written."""
    run_dir = Path(run_dir)
    return save_figure(draw_run(run_dir), Path(out) if out is not None else run_dir / CURVES)


def plot_runs(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Several runs on one figure (e.g. thin vs wide): one colour per run, final test error in the legend."""
    return save_figure(draw_runs(run_dirs), Path(out))


def draw_run(run_dir: str | os.PathLike):
    """The matplotlib Figure of one run's curves (what :func:`plot_run` writes)."""
    run_dir = Path(run_dir)
    records = _load(run_dir)
    epochs, errors, losses = _series(records)
    drops = lr_drop_epochs(records)

    fig, ax_loss, ax_err = new_figure(run_title(run_dir))
    colour_err, colour_loss = COLOURS[0], COLOURS[1]
    final = _final(errors)
    err_label = "test error" if math.isnan(final) else f"test error (final {final:.2f}%)"
    (h_err,) = ax_err.plot(epochs, errors, color=colour_err, linewidth=1.8, label=err_label)
    adv_cfg = _read_config(run_dir).get("adv") or {}
    adv = adv_cfg.get("method", "none")
    loss_label = "train loss" if adv in (None, "none") else f"train loss ({adv}: its attacked images)"
    (h_loss,) = ax_loss.plot(
        epochs, losses, color=colour_loss, linewidth=1.5, linestyle="--", label=loss_label
    )
    handles = [h_err, h_loss]
    robust = [100.0 - _number(r.get("holdout_robust_acc")) for r in records]
    if any(not math.isnan(v) for v in robust):  # early stopping on robust accuracy (adv.holdout)
        best = next((r["holdout_best_epoch"] for r in reversed(records) if "holdout_best_epoch" in r), None)
        from wrn.train.holdout import holdout_images

        which = holdout_images(adv_cfg.get("holdout"), adv_cfg.get("holdout_rule")).removeprefix("the ")
        label = f"robust error, {which}" + (f" (best: epoch {best})" if best else "")
        (h_rob,) = ax_err.plot(epochs, robust, color=COLOURS[2], linewidth=1.5, linestyle="-.", label=label)
        handles.append(h_rob)
        errors = errors + robust
    ax_err.set_ylabel("test error, %" if len(handles) == 2 else "error, %", fontsize=11, color=colour_err)
    ax_loss.set_ylabel("training loss", fontsize=11, color=colour_loss)
    mark_lr_drops(ax_loss, drops)
    finish_axes(ax_loss, ax_err, errors, epochs)
    plain_log_ticks(ax_loss)
    handles += [lr_drop_handle()] if drops else []
    ax_err.legend(handles=handles, loc="upper right", fontsize=10, framealpha=0.9)
    return fig


def draw_runs(run_dirs: Sequence[str | os.PathLike]):
    """The matplotlib Figure of several runs (what :func:`plot_runs` writes)."""
    run_dirs = [Path(r) for r in run_dirs]
    if not run_dirs:
        raise ConfigError("no runs to plot; pass at least one run directory")
    loaded = [(r, _load(r)) for r in run_dirs]

    labels = [run_label(r) for r in run_dirs]
    if len(set(labels)) < len(labels):  # e.g. several seeds of one model: tell them apart by folder
        labels = [
            f"{label} ({r.resolve().name})" if labels.count(label) > 1 else label
            for label, r in zip(labels, run_dirs, strict=True)
        ]

    configs = [_read_config(r) for r in run_dirs]
    datasets = {_name(c.get("dataset")) for c in configs} - {None}
    title = "training curves" + (f" on {datasets.pop()}" if len(datasets) == 1 else "")
    fig, ax_loss, ax_err = new_figure(title)
    ax_loss.set_ylabel("training loss (dashed)", fontsize=11)
    ax_err.set_ylabel("test error, % (solid)", fontsize=11)

    all_err, all_ep, drops, handles = [], [], [], []
    for i, ((_, records), label) in enumerate(zip(loaded, labels, strict=True)):
        colour = COLOURS[i % len(COLOURS)]
        epochs, errors, losses = _series(records)
        # each run's drops in its colour, nudged apart so that drops at the same epoch all show
        mark_lr_drops(ax_loss, lr_drop_epochs(records), colour, offset=0.06 * (i - (len(loaded) - 1) / 2))
        final = _final(errors)
        text = label if math.isnan(final) else f"{label}: {final:.2f}%"
        (h,) = ax_err.plot(epochs, errors, color=colour, linewidth=1.8, label=text)
        ax_loss.plot(epochs, losses, color=colour, linewidth=1.3, linestyle="--", alpha=0.85)
        handles.append(h)
        all_err += errors
        all_ep += epochs
        drops += lr_drop_epochs(records)
    finish_axes(ax_loss, ax_err, all_err, all_ep)
    if drops:
        handles.append(lr_drop_handle("lr drop (run's colour)"))
    ax_err.legend(
        handles=handles,
        loc="upper right",
        fontsize=10,
        framealpha=0.9,
        title="final test error",
        title_fontsize=10,
    )
    return fig
