"""The report's figures, drawn from the collected runs: the table of ours vs the paper, and the curves of
Figures 2 and 3 (median over seeds as a line, min-max as a band). Figure 4 is :func:`wrn.bench.figure4.draw`.

Figures are drawn wide enough for a desktop page and with text large enough to stay readable when a phone
shows them at a scrollable minimum width (see the report's stylesheet).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from wrn.reproduce.collect import RowResult, RunInfo, Scaled, is_number
from wrn.reproduce.experiments import Experiment


def series(runs: list[RunInfo], key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """Per epoch: the median, min and max of ``key`` over the runs that have reached that epoch."""
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for rec in run.records:
            epoch, value = rec.get("epoch"), rec.get(key)
            if is_number(epoch) and is_number(value):
                by_epoch.setdefault(int(epoch), []).append(float(value))
    epochs = sorted(by_epoch)
    return (
        epochs,
        [statistics.median(by_epoch[e]) for e in epochs],
        [min(by_epoch[e]) for e in epochs],
        [max(by_epoch[e]) for e in epochs],
    )


def title_of(main: str, scaled: Scaled | None, width: int = 70) -> str:
    """A figure title; a scaled-down grid's says so, with what was changed, wrapped to fit the figure."""
    if scaled is None:
        return main
    import textwrap

    details = textwrap.fill(scaled.summary + ": not comparable to the paper", width)
    return f"{main}, SCALED DOWN\n{details}"


def _draw_series(ax, x, median, lo, hi, colour: str, style: dict, band_alpha: float = 0.18):
    """A median as a line and its min-max as a band; where the runs have one epoch, a marker with a min-max
    whisker (a line through one point draws nothing). Returns the legend's handle of the median."""
    if len(x) > 1:
        (handle,) = ax.plot(x, median, color=colour, **style)
        if lo != hi:
            ax.fill_between(x, lo, hi, color=colour, alpha=band_alpha, linewidth=0)
        return handle
    point = {k: v for k, v in style.items() if k != "linestyle"} | {"marker": "o", "markersize": 7}
    if lo == hi:
        (handle,) = ax.plot(x, median, color=colour, **point)
        return handle
    whisker = [
        [m - a for m, a in zip(median, lo, strict=True)],
        [b - m for m, b in zip(median, hi, strict=True)],
    ]
    return ax.errorbar(x, median, yerr=whisker, color=colour, capsize=4, **point)


def curves_figure(
    view: Experiment, panel: str, results: list[RowResult], scaled: Scaled | None, path: Path
) -> Path | None:
    """One panel of Figure 2 or 3: per row, median test error (solid) and train loss (dashed), min-max bands."""
    from wrn.train.plot import (
        COLOURS,
        finish_axes,
        lr_drop_epochs,
        lr_drop_handle,
        mark_lr_drops,
        new_figure,
        plain_log_ticks,
        save_figure,
    )

    with_data = [r for r in results if any(run.records for run in r.runs)]
    if not with_data:
        return None
    fig, ax_loss, ax_err = new_figure(title_of(f"{view.title}, {panel}", scaled))
    if scaled is not None:
        ax_loss.title.set_fontsize(10.5)
    handles, all_err, all_ep, drops = [], [], [], []
    for i, res in enumerate(results):
        runs = [run for run in res.runs if run.records]
        if not runs:
            continue
        colour = COLOURS[i % len(COLOURS)]
        ep, med, lo, hi = series(runs, "test_error")
        final = f"{med[-1]:.2f}%" if med else ""
        label = f"{res.row.label}: {final} (n={len(runs)})"
        handles.append(_draw_series(ax_err, ep, med, lo, hi, colour, dict(linewidth=1.8, label=label)))
        lep, lmed, llo, lhi = series(runs, "train_loss")
        loss_style = dict(linewidth=1.3, linestyle="--", alpha=0.9, markerfacecolor="none")
        _draw_series(ax_loss, lep, lmed, llo, lhi, colour, loss_style, band_alpha=0.10)
        all_err += hi
        all_ep += ep
        drops += lr_drop_epochs(runs[0].records)
    mark_lr_drops(ax_loss, drops)
    finish_axes(ax_loss, ax_err, all_err, [float(e) for e in all_ep])
    plain_log_ticks(ax_loss)
    if drops:
        handles.append(lr_drop_handle())
    # below the axes: inside, it covers the curves of whichever corner it takes
    fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)), fontsize=9,
               frameon=False, title="median test error (band: min–max)", title_fontsize=9)  # fmt: skip
    return save_figure(fig, path)


def table_figure(exp: Experiment, results: list[RowResult], scaled: Scaled | None, path: Path) -> Path | None:
    """Paper vs ours per row: the paper's figure as a hollow mark, our median with its min-max whisker."""
    from matplotlib.figure import Figure as MplFigure

    from wrn.train.plot import COLOURS, DPI, save_figure

    shown = [r for r in results if r.row.paper_error is not None or r.errors]
    if not any(r.errors for r in shown):
        return None
    labels = [f"{res.row.label} ({res.dataset_label})" for res in shown]  # the data set trained, scaled too
    height = 1.8 + 0.32 * len(shown)
    width = max(6.4, 4.0 + 0.07 * max(map(len, labels)))  # long labels leave the axes at least 4 inches
    fig = MplFigure(figsize=(width, height), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    for i, res in enumerate(shown):
        y = len(shown) - 1 - i
        if res.row.paper_error is not None:
            ax.plot(res.row.paper_error, y, marker="o", markersize=7, markerfacecolor="none",
                    markeredgecolor=COLOURS[1], markeredgewidth=1.6, linestyle="none")  # fmt: skip
        if res.errors:
            lo, hi = min(res.errors), max(res.errors)
            ax.plot([lo, hi], [y, y], color=COLOURS[0], linewidth=2.2, solid_capstyle="butt")
            ax.plot(res.median, y, marker="D", markersize=6, color=COLOURS[0], linestyle="none")
    ax.set_yticks(range(len(shown)), list(reversed(labels)), fontsize=9)
    # FixMatch's rows: each run's figure is the median of its last 20 epochs' test error (its Table 2's)
    per_run = "median of its last 20 epochs" if any(r.row.folds for r in shown) else "last epoch"
    ax.set_xlabel(f"test error, % (each run: {per_run})", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_xlim(left=0)
    ax.set_ylim(-0.6, len(shown) - 0.4)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", markerfacecolor="none", markeredgecolor=COLOURS[1], linestyle="none",
               markeredgewidth=1.6, label="paper"),
        Line2D([], [], marker="D", color=COLOURS[0], linewidth=2.2, label="ours: median of the runs, min–max"),
    ]  # fmt: skip
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=9, frameon=False)
    # over the whole figure, not the axes: long row labels leave the axes too narrow for a scaled grid's title
    fig.suptitle(
        title_of(f"{exp.title}: ours vs the paper", scaled, width=62), fontsize=11 if scaled is None else 9
    )
    return save_figure(fig, path)
