"""``wrn report``: the results of reproduction grids beside the paper's, as report.md, report.html and PNGs.

For each grid found (a folder with ``experiment.yaml``, or a ``figure4.json`` of ``wrn bench figure4``):

- a table laid out like the paper's: per row the paper's figure, our median test error over the finished
  seeds with n and min-max (the LAST epoch's error, never the best one), the difference to the paper,
  parameters ours vs the paper's, training time per epoch and in all, the training precision and the status
  of its runs (done / running / stopped / failed / missing). Scaled-down grids are marked as such and have no
  difference column;
- Figures 2 and 3 from the runs of Tables 5 and 6: test error and training loss per epoch, the median over
  seeds as a line and the min-max as a band;
- Figure 4: the times per minibatch and the paper's ratios beside ours.

Everything is read from the run directories (``metrics.jsonl``, ``config.yaml``) and written to ``--out``;
nothing in the grids is changed. A partial grid gives a partial report; runs still going show their last epoch.
"""

from __future__ import annotations

import base64
import html
import json
import math
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from wrn.atomic import atomic_write_text
from wrn.errors import ConfigError
from wrn.reproduce import grid as G
from wrn.reproduce.experiments import (
    DATASET_TITLES,
    EXPERIMENTS,
    Experiment,
    Row,
    views_of,
)

DASH = "–"  # en dash for ranges
NONE = "—"  # em dash for "no value"


class ReportError(ConfigError):
    """Nothing to report, or a folder that is not a grid."""


# --------------------------------------------------------------------------------------------- reading runs


@dataclass
class RunInfo:
    spec: G.RunSpec
    status: str  # done, running, stopped, failed, missing
    records: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    failure: dict | None = None

    @property
    def last(self) -> dict:
        return self.records[-1] if self.records else {}

    @property
    def planned_epochs(self) -> int | None:
        value = (self.config.get("schedule") or {}).get("epochs")
        return int(value) if isinstance(value, (int, float)) else None

    def value(self, key: str) -> float | None:
        v = self.last.get(key)
        return float(v) if _is_number(v) else None

    @property
    def train_time_per_epoch(self) -> float | None:
        times = [float(r["train_time"]) for r in self.records if _is_number(r.get("train_time"))]
        return sum(times) / len(times) if times else None

    @property
    def total_time(self) -> float | None:
        times = [
            float(r.get("train_time") or 0) + float(r.get("test_time") or 0)
            for r in self.records
            if _is_number(r.get("train_time"))
        ]
        return sum(times) if times else None

    @property
    def precision(self) -> str | None:
        value = self.last.get("train_precision")
        if isinstance(value, str):
            return value
        amp = (self.config.get("run") or {}).get("amp")
        return {"off": "fp32", "bf16": "bf16", "fp16": "fp16"}.get(amp) if isinstance(amp, str) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def read_run(spec: G.RunSpec) -> RunInfo:
    from wrn.train.logging import read_metrics

    state = G.run_state(spec.dir)
    records: list[dict] = []
    if (spec.dir / "metrics.jsonl").is_file():
        try:
            records = read_metrics(spec.dir)
        except ConfigError:
            records = []
    config = _read_yaml(spec.dir / "config.yaml")
    failure = None
    if spec.failed_path.is_file():
        try:
            failure = json.loads(spec.failed_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            failure = {"last_line": "(unreadable failure record)"}
    if state == "done":
        status = "done"
    elif G.lock_is_held(spec.lock_path):
        status = "running"
    elif failure is not None:
        status = "failed"
    elif state in ("partial", "unstarted"):
        status = "stopped"
    else:
        status = "missing"
    return RunInfo(spec, status, records, config, failure)


# --------------------------------------------------------------------------------------------- parameters

_PARAMS: dict[tuple, int | None] = {}


def count_params(model: str | None, dataset: str | None) -> int | None:
    """Trainable parameters of ``model`` built for ``dataset`` (its classes and channels), on the meta device."""
    if not model or not dataset:
        return None
    key = (model, dataset)
    if key not in _PARAMS:
        try:
            import torch

            from wrn.data.registry import DATASETS
            from wrn.models.complexity import count_parameters
            from wrn.models.registry import create_model

            info = DATASETS.get(dataset)
            if info is None or info.num_classes is None:  # an image folder: classes known only from its files
                _PARAMS[key] = None
                return None
            classes, channels = info.num_classes, info.in_channels
            extra = {"in_channels": channels} if channels != 3 else {}
            with torch.device("meta"):
                net = create_model(model, num_classes=classes, **extra)
            _PARAMS[key] = count_parameters(net)
        except Exception:  # a model this version cannot build: no count rather than no report
            _PARAMS[key] = None
    return _PARAMS[key]


# --------------------------------------------------------------------------------------------- rows


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass
class RowResult:
    row: Row
    runs: list[RunInfo]
    overrides: dict = field(default_factory=dict)  # the grid's, from experiment.yaml

    @property
    def done(self) -> list[RunInfo]:
        return [r for r in self.runs if r.status == "done" and r.value("test_error") is not None]

    @property
    def errors(self) -> list[float]:
        return [r.value("test_error") for r in self.done]

    @property
    def top5(self) -> list[float]:
        """Top-5 test errors of the finished runs (metrics hold them for data sets of more than 10 classes)."""
        out = []
        for r in self.done:
            err = r.value("test_top5_error")
            if err is None and r.value("test_top5") is not None:  # the top-5 accuracy only
                err = 100.0 - r.value("test_top5")
            if err is not None:
                out.append(err)
        return out

    @property
    def median(self) -> float | None:
        return _median(self.errors)

    def _trained(self, section: str, override: str | None) -> str | None:
        """What the runs trained (their config.yaml), else what the grid's overrides make of the row."""
        for r in self.runs:
            name = (r.config.get(section) or {}).get("name")
            if name:
                return str(name)
        return override

    @property
    def trained_model(self) -> str | None:
        override = self.row.model
        for item in self.overrides.get("set") or []:
            key, _, value = str(item).partition("=")
            if key.strip() == "model.name":
                override = value.strip()
        return self._trained("model", override)

    @property
    def trained_dataset(self) -> str | None:
        return self._trained("dataset", self.overrides.get("dataset") or self.row.dataset)

    @property
    def params(self) -> int | None:
        return count_params(self.trained_model, self.trained_dataset)

    @property
    def time_per_epoch(self) -> float | None:
        return _median([t for t in (r.train_time_per_epoch for r in self.runs) if t is not None])

    @property
    def total_time(self) -> float | None:
        return _median([t for t in (r.total_time for r in self.done) if t is not None])

    @property
    def precisions(self) -> list[str]:
        out: list[str] = []
        for r in self.runs:
            p = r.precision
            if p and p not in out and r.records:
                out.append(p)
        return out

    def status_text(self) -> str:
        if self.row.model is None:
            return "not built by wrn"
        counts: dict[str, int] = {}
        for r in self.runs:
            counts[r.status] = counts.get(r.status, 0) + 1
        parts = []
        for status in ("done", "running", "stopped", "failed", "missing"):
            if counts.get(status):
                parts.append(f"{counts[status]} {status}")
        going = [r for r in self.runs if r.status in ("running", "stopped") and r.records]
        for r in going:
            err = r.value("test_error")
            of = f"/{r.planned_epochs}" if r.planned_epochs else ""
            at = f" {err:.2f}%" if err is not None else ""
            parts.append(f"seed {r.spec.seed} at epoch {r.last.get('epoch')}{of}:{at}")
        return ", ".join(parts) or "missing"


# --------------------------------------------------------------------------------------------- grids


@dataclass
class Figure:
    title: str
    path: Path
    caption: str = ""


@dataclass
class Section:
    """One experiment's part of the report: its table(s), figures and notes."""

    title: str
    subtitle: str
    source: Path
    scaled: list[str] | None = None  # the recipe values a scaled grid changed; None: the paper's recipe
    headers: list[str] = field(default_factory=list)
    align: list[str] = field(default_factory=list)  # "l" or "r" per column
    rows: list[list[str]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra_tables: list[tuple[str, list[str], list[str], list[list[str]]]] = field(default_factory=list)


def find_sources(paths: list[Path]) -> list[tuple[str, Path]]:
    """("grid", folder) for each experiment.yaml, ("bench", file) for a lone figure4.json, in order."""
    found: list[tuple[str, Path]] = []

    def visit(folder: Path) -> bool:
        if (folder / G.EXPERIMENT_FILE).is_file():
            found.append(("grid", folder))
            return True
        if (folder / G.BENCH_FILE).is_file():
            found.append(("bench", folder / G.BENCH_FILE))
            return True
        return False

    for path in paths:
        if path.is_file() and path.name.endswith(".json"):
            found.append(("bench", path))
            continue
        if not path.is_dir():
            raise ReportError(f"{path} does not exist; pass folders written by 'wrn reproduce'")
        if visit(path):
            continue
        for child in sorted(p for p in path.iterdir() if p.is_dir()):
            visit(child)
    if not found:
        shown = ", ".join(str(p) for p in paths)
        raise ReportError(
            f"no runs found in {shown}: pass folders written by 'wrn reproduce' (each holds {G.EXPERIMENT_FILE})"
        )
    return found


def _fmt_err(value: float | None) -> str:
    return NONE if value is None else f"{value:.2f}"


def _fmt_params(n: int | None) -> str:
    if n is None:
        return NONE
    return f"{n / 1e6:.2f}M" if n < 100e6 else f"{n / 1e6:.1f}M"


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _paper_cell(row: Row) -> str:
    if row.paper_error is None:
        return NONE
    if row.paper_top5 is not None:
        return f"{row.paper_error:.2f} / {row.paper_top5:.2f}"
    return f"{row.paper_error:.2f}"


def table_section(out: Path, data: dict, exp: Experiment, results: list[RowResult]) -> Section:
    scaled = list(data.get("scaled_by") or []) if data.get("scaled") else None
    imagenet = any(r.row.paper_top5 is not None for r in results)
    with_time = any(r.row.paper_time is not None for r in results)
    headers = ["row", "data set", "paper (%)", "ours (%)", "n", "min–max"]
    if imagenet:
        headers[2] = "paper top-1 / top-5 (%)"
        headers[3] = "ours top-1 / top-5 (%)"
    if scaled is None:
        headers.append("Δ vs paper")
    headers += ["params ours / paper"]
    if with_time:
        headers.append("paper s / epoch")
    headers += ["train time / epoch", "total time", "precision", "status"]
    align = ["l", "l"] + ["r"] * (len(headers) - 4) + ["l", "l"]

    rows = []
    for res in results:
        row = res.row
        med = res.median
        ours = _fmt_err(med)
        if imagenet and med is not None and res.top5:
            ours = f"{med:.2f} / {_median(res.top5):.2f}"
        errors = res.errors
        rng = f"{min(errors):.2f}{DASH}{max(errors):.2f}" if len(errors) > 1 else NONE
        label = row.label
        if res.trained_model and row.model and res.trained_model != row.model:
            label += f" (ran {res.trained_model})"
        data_set = DATASET_TITLES.get(row.dataset, row.dataset)
        if res.trained_dataset and res.trained_dataset != row.dataset:
            data_set = f"{res.trained_dataset} (paper: {data_set})"
        cells = [
            label,
            data_set,
            _paper_cell(row),
            ours,
            str(len(errors)),
            rng,
        ]
        if scaled is None:
            diff = NONE if med is None or row.paper_error is None else f"{med - row.paper_error:+.2f}"
            cells.append(diff)
        paper_params = NONE if row.paper_params is None else f"{row.paper_params:g}M"
        cells.append(f"{_fmt_params(res.params)} / {paper_params}")
        if with_time:
            cells.append(NONE if row.paper_time is None else f"{row.paper_time:g} s")
        cells += [
            _fmt_time(res.time_per_epoch),
            _fmt_time(res.total_time),
            ", ".join(res.precisions) or NONE,
            res.status_text(),
        ]
        rows.append(cells)

    seeds = data.get("seeds") or []
    subtitle = (
        f"{exp.description}. Test error of the last epoch, median over the finished seeds "
        f"(of {len(seeds)}: {', '.join(map(str, seeds))})."
    )
    title = f"{exp.title}: {exp.name}"
    section = Section(title, subtitle, out, scaled, headers, align, rows)
    for res in results:
        note = f"{res.row.label}: {res.row.note}."
        if res.row.note and note not in section.notes:
            section.notes.append(note)
        for run in res.runs:
            if run.status == "failed" and run.failure:
                section.notes.append(
                    f"{run.spec.key} failed after {run.failure.get('attempts', '?')} tries: "
                    f"{run.failure.get('last_line') or '(empty log)'} (log: {run.spec.log_path})"
                )
    return section


# --------------------------------------------------------------------------------------------- figures


def _series(runs: list[RunInfo], key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """Per epoch: the median, min and max of ``key`` over the runs that have reached that epoch."""
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for rec in run.records:
            epoch, value = rec.get("epoch"), rec.get(key)
            if _is_number(epoch) and _is_number(value):
                by_epoch.setdefault(int(epoch), []).append(float(value))
    epochs = sorted(by_epoch)
    return (
        epochs,
        [statistics.median(by_epoch[e]) for e in epochs],
        [min(by_epoch[e]) for e in epochs],
        [max(by_epoch[e]) for e in epochs],
    )


def _title(main: str, scaled: list[str] | None, width: int = 80) -> str:
    """A figure title; a scaled-down grid's says so, with what was changed, wrapped to fit the figure."""
    if scaled is None:
        return main
    import textwrap

    details = textwrap.fill(", ".join(scaled) + ": not comparable to the paper", width)
    return f"{main}, SCALED DOWN\n{details}"


def curves_figure(view: Experiment, panel: str, results: list[RowResult], scaled, path: Path) -> Path | None:
    """One panel of Figure 2 or 3: per row, median test error (solid) and train loss (dashed), min-max bands."""
    from wrn.train.plot import (
        COLOURS,
        finish_axes,
        lr_drop_epochs,
        lr_drop_handle,
        mark_lr_drops,
        new_figure,
        save_figure,
    )

    with_data = [r for r in results if any(run.records for run in r.runs)]
    if not with_data:
        return None
    fig, ax_loss, ax_err = new_figure(_title(f"{view.title}, {panel}", scaled))
    if scaled is not None:
        ax_loss.title.set_fontsize(10.5)
    handles, all_err, all_ep, drops = [], [], [], []
    for i, res in enumerate(results):
        runs = [run for run in res.runs if run.records]
        if not runs:
            continue
        colour = COLOURS[i % len(COLOURS)]
        ep, med, lo, hi = _series(runs, "test_error")
        lep, lmed, llo, lhi = _series(runs, "train_loss")
        final = f"{med[-1]:.2f}%" if med else ""
        label = f"{res.row.label}: {final} (n={len(runs)})"
        (h,) = ax_err.plot(ep, med, color=colour, linewidth=1.8, label=label)
        if len(runs) > 1:
            ax_err.fill_between(ep, lo, hi, color=colour, alpha=0.18, linewidth=0)
            ax_loss.fill_between(lep, llo, lhi, color=colour, alpha=0.10, linewidth=0)
        ax_loss.plot(lep, lmed, color=colour, linewidth=1.3, linestyle="--", alpha=0.9)
        handles.append(h)
        all_err += hi
        all_ep += ep
        drops += lr_drop_epochs(runs[0].records)
    mark_lr_drops(ax_loss, drops)
    finish_axes(ax_loss, ax_err, all_err, [float(e) for e in all_ep])
    if drops:
        handles.append(lr_drop_handle())
    ax_err.legend(handles=handles, loc="upper right", fontsize=9, framealpha=0.9,
                  title="median test error (band: min–max)", title_fontsize=9)  # fmt: skip
    return save_figure(fig, path)


def table_figure(exp: Experiment, results: list[RowResult], scaled, path: Path) -> Path | None:
    """Paper vs ours per row: the paper's figure as a hollow mark, our median with its min-max whisker."""
    from matplotlib.figure import Figure as MplFigure

    from wrn.train.plot import COLOURS, DPI, save_figure

    shown = [r for r in results if r.row.paper_error is not None or r.errors]
    if not any(r.errors for r in shown):
        return None
    height = 1.8 + 0.32 * len(shown)
    fig = MplFigure(figsize=(8.0, height), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    labels = []
    for i, res in enumerate(shown):
        y = len(shown) - 1 - i
        trained = res.trained_dataset or res.row.dataset  # a scaled-down grid's data set, if it has another
        labels.append(f"{res.row.label} ({DATASET_TITLES.get(trained, trained)})")
        if res.row.paper_error is not None:
            ax.plot(res.row.paper_error, y, marker="o", markersize=7, markerfacecolor="none",
                    markeredgecolor=COLOURS[1], markeredgewidth=1.6, linestyle="none")  # fmt: skip
        if res.errors:
            lo, hi = min(res.errors), max(res.errors)
            ax.plot([lo, hi], [y, y], color=COLOURS[0], linewidth=2.2, solid_capstyle="butt")
            ax.plot(res.median, y, marker="D", markersize=6, color=COLOURS[0], linestyle="none")
    ax.set_yticks(range(len(shown)), list(reversed(labels)), fontsize=9)
    ax.set_xlabel("test error, % (last epoch)", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_xlim(left=0)
    ax.set_ylim(-0.6, len(shown) - 0.4)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", markerfacecolor="none", markeredgecolor=COLOURS[1], linestyle="none",
               markeredgewidth=1.6, label="paper"),
        Line2D([], [], marker="D", color=COLOURS[0], linewidth=2.2, label="ours: median, min–max"),
    ]  # fmt: skip
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=9, frameon=False)
    ax.set_title(_title(f"{exp.title}: ours vs the paper", scaled), fontsize=11 if scaled is None else 10)
    return save_figure(fig, path)


def bench_section(path: Path | None, source: Path, out_dir: Path, stem: str) -> Section:
    section = Section("Figure 4: figure4", "", source)
    if path is None or not path.is_file():
        log = source / G.LOGS_DIR / "figure4.log"
        line = G.last_log_line(log) if log.is_file() else ""
        section.subtitle = "the speed benchmark has not written its figure4.json yet"
        if line:
            section.notes.append(f"last line of its log ({log}): {line}")
        return section
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        doc = None
    if not isinstance(doc, dict) or doc.get("format") != "wrn-bench-figure4":
        section.subtitle = f"{path} is not a figure4.json of 'wrn bench figure4'"
        return section
    machine = doc.get("machine") or {}
    settings = doc.get("settings") or {}
    section.subtitle = (
        "Time of forward + backward + update of one minibatch (spec section 7). What carries over to other "
        "hardware is the ratios, not the milliseconds. Ours: "
        + ", ".join(
            f"{k} {v}"
            for k, v in (
                ("device", machine.get("device_name") or machine.get("device")),
                ("torch", machine.get("torch")),
                ("CUDA", machine.get("cuda")),
                ("threads", machine.get("threads")),
                ("batch", settings.get("batch_size")),
                ("steps", settings.get("steps")),
                ("amp", settings.get("amp")),
                ("channels_last", settings.get("channels_last")),
                ("compile", settings.get("compile")),
            )
            if v is not None
        )
        + f" (from {path})."
    )
    section.headers = ["model", "paper ms (Titan X)", "ours ms", "ours min–max", "params", "images / s"]
    section.align = ["l", "r", "r", "r", "r", "r"]
    for m in doc.get("models") or []:
        lo, hi = m.get("ms_min"), m.get("ms_max")
        section.rows.append(
            [
                str(m.get("name")),
                f"{m['paper_ms']:g}" if _is_number(m.get("paper_ms")) else NONE,
                f"{m['ms']:.1f}" if _is_number(m.get("ms")) else NONE,
                f"{lo:.1f}{DASH}{hi:.1f}" if _is_number(lo) and _is_number(hi) else NONE,
                _fmt_params(m.get("params")) if _is_number(m.get("params")) else NONE,
                f"{m['images_per_s']:.0f}" if _is_number(m.get("images_per_s")) else NONE,
            ]
        )
    ratio_rows = []
    for r in doc.get("ratios") or []:
        ours = r.get("ours")
        paper = r.get("paper")
        ratio_rows.append(
            [
                f"{r.get('slow')} / {r.get('fast')}",
                f"{paper:.2f}" if _is_number(paper) else NONE,
                f"{ours:.2f}" if _is_number(ours) else NONE,
            ]
        )
    section.extra_tables.append(
        ("Speed ratios (time of the slow net / time of the fast one)", ["ratio", "paper", "ours"], ["l", "r", "r"],
         ratio_rows)
    )  # fmt: skip
    from wrn.bench.figure4 import draw

    png = draw(doc, out_dir / f"{stem}.png")
    section.figures.append(Figure("Figure 4: ours beside the paper", png))
    return section


# --------------------------------------------------------------------------------------------- one grid


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-").replace("--", "-")


def grid_sections(out: Path, out_dir: Path, used: set[str]) -> list[Section]:
    data = G.read_experiment(out) or {}
    name = str(data.get("experiment"))
    if name == "figure4":
        stem = _unique("figure4", used)
        return [bench_section(out / G.BENCH_DIR / G.BENCH_FILE, out, out_dir, stem)]
    exp = EXPERIMENTS.get(name)
    if exp is None:
        raise ReportError(
            f"{out / G.EXPERIMENT_FILE} names experiment {name!r}, which this wrn does not know"
        )
    specs = G.grid_specs(out, data)
    runs = {s.key: read_run(s) for s in specs}
    listed_rows = {s.row.name for s in specs}
    # The table: every row of the experiment that the grid lists (a Figure 2 grid lists only its rows);
    # reference rows of the paper (no model) are shown for orientation.
    rows = [
        r
        for r in exp.rows
        if r.name in listed_rows or (r.model is None and listed_rows & {x.name for x in exp.rows})
    ]
    results = []
    for row in rows:
        row_runs = [runs[s.key] for s in specs if s.row.name == row.name]
        results.append(RowResult(row, row_runs, dict(data.get("overrides") or {})))
    scaled = list(data.get("scaled_by") or []) if data.get("scaled") else None
    sections = []
    section = table_section(out, data, exp, results)
    requested = data.get("requested") or [name]
    if name not in requested:
        section.title += f" (the runs of {', '.join(requested)})"
    chart = table_figure(exp, results, scaled, out_dir / f"{_unique(exp.name, used)}-vs-paper.png")
    if chart is not None:
        section.figures.append(Figure(f"{exp.title}: ours vs the paper", chart))
    sections.append(section)
    by_name = {r.row.name: r for r in results}
    for view in views_of(exp.name):
        panels = []
        for panel, names in view.panels:
            view_results = [
                by_name.get(n) or RowResult(view.row(n), [], dict(data.get("overrides") or {})) for n in names
            ]
            stem = _unique(f"{view.name}-{_slug(panel)}", used)
            png = curves_figure(view, panel, view_results, scaled, out_dir / f"{stem}.png")
            if png is not None:
                panels.append(Figure(f"{view.title}, {panel}", png))
        if panels or view.name in requested:
            vs = Section(f"{view.title}: {view.name}", view.description + ".", out, scaled)
            vs.subtitle += (
                " Solid: test error (right axis); dashed: training loss (left axis); the line is the median "
                "over seeds and the band their min–max; dotted verticals: learning-rate drops."
            )
            vs.figures = panels
            if not panels:
                vs.notes.append(
                    f"no epoch of its runs has finished yet (rows {', '.join(n for _, ns in view.panels for n in ns)})"
                )
            sections.append(vs)
    return sections


def _unique(stem: str, used: set[str]) -> str:
    name, n = stem, 2
    while name in used:
        name, n = f"{stem}-{n}", n + 1
    used.add(name)
    return name


# --------------------------------------------------------------------------------------------- writing


def write_report(paths: list[str | Path], out_dir: str | Path | None = None) -> Path:
    """Write report.md, report.html and the PNG figures of every grid found in ``paths``; returns the folder."""
    paths = [Path(p) for p in paths]
    sources = find_sources(paths)
    if out_dir is None:
        out_dir = (paths[0] / "report") if len(paths) == 1 and paths[0].is_dir() else Path("report")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ReportError(f"--out {out_dir} is a file; give a folder for the report")
    out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    sections: list[Section] = []
    for kind, src in sources:
        if kind == "grid":
            sections += grid_sections(src, out_dir, used)
        else:
            sections.append(bench_section(src, src.parent, out_dir, _unique("figure4", used)))
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    atomic_write_text(out_dir / "report.md", render_markdown(sections, stamp, out_dir))
    atomic_write_text(out_dir / "report.html", render_html(sections, stamp))
    return out_dir


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(headers: list[str], align: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(sections: list[Section], stamp: str, out_dir: Path) -> str:
    lines = [
        "# Wide Residual Networks: our results beside the paper's",
        "",
        f"Written by `wrn report` on {stamp}. Errors are test errors in percent of the last epoch (never the best "
        "one), medians over the finished seeds; the paper's are medians of 5 runs (Table 9: best single runs).",
        "",
    ]
    for s in sections:
        title = s.title + (" — SCALED DOWN" if s.scaled is not None else "")
        lines += [f"## {title}", ""]
        if s.scaled is not None:
            lines += [
                f"> **Scaled-down grid** ({', '.join(s.scaled)}): not the paper's setting, so no difference to the "
                "paper is shown; the paper's figures are there for orientation only.",
                "",
            ]
        if s.subtitle:
            lines += [s.subtitle, ""]
        lines += [f"Runs: `{s.source}`", ""]
        if s.rows:
            lines += _md_table(s.headers, s.align, s.rows) + [""]
        for caption, headers, align, rows in s.extra_tables:
            lines += [f"**{caption}**", ""] + _md_table(headers, align, rows) + [""]
        for note in s.notes:
            lines.append(f"- {note}")
        if s.notes:
            lines.append("")
        for fig in s.figures:
            lines += [f"![{fig.title}]({fig.path.name})", ""]
    return "\n".join(lines).rstrip() + "\n"


_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: #1f2328;
       max-width: 1180px; margin: 2em auto; padding: 0 1.2em; line-height: 1.45; background: #fff; }
h1 { font-size: 1.7em; border-bottom: 1px solid #d0d7de; padding-bottom: .3em; }
h2 { font-size: 1.3em; margin-top: 2.2em; border-bottom: 1px solid #eaeef2; padding-bottom: .25em; }
p.meta, p.source { color: #57606a; font-size: .92em; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .9em;
       background: #f6f8fa; padding: .1em .3em; border-radius: 4px; }
.scaled { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px; padding: .6em .9em; margin: .8em 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .8em 0 1.2em; font-size: .88em; }
th, td { border: 1px solid #d0d7de; padding: .32em .6em; vertical-align: top; }
th { background: #f6f8fa; text-align: left; white-space: nowrap; }
td.r { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fbfcfd; }
.st { display: inline-block; border-radius: 10px; padding: 0 .5em; font-size: .85em; margin: 1px 0;
      white-space: nowrap; }
.st-done { background: #dafbe1; color: #116329; } .st-running { background: #ddf4ff; color: #0550ae; }
.st-stopped { background: #fff1c2; color: #7d4e00; } .st-failed { background: #ffebe9; color: #a40e26; }
.st-missing { background: #eaeef2; color: #57606a; }
figure { margin: 1em 0 1.6em; } figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: .9em; }
ul.notes { font-size: .9em; color: #3d444d; }
"""


def _status_html(text: str) -> str:
    parts = []
    for part in text.split(", "):
        kind = next(
            (k for k in ("done", "running", "stopped", "failed", "missing") if part.endswith(k)), None
        )
        cls = f"st st-{kind}" if kind else "st st-running" if part.startswith("seed ") else "st st-missing"
        parts.append(f'<span class="{cls}">{html.escape(part)}</span>')
    return " ".join(parts)


def _html_table(headers: list[str], align: list[str], rows: list[list[str]], status_col: bool) -> list[str]:
    out = ['<div class="scroll"><table>', "<thead><tr>"]
    out += [f"<th>{html.escape(h)}</th>" for h in headers]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        for i, (cell, a) in enumerate(zip(row, align, strict=False)):
            if status_col and i == len(row) - 1:
                out.append(f"<td>{_status_html(cell)}</td>")
            else:
                cls = ' class="r"' if a == "r" else ""
                out.append(f"<td{cls}>{html.escape(cell)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return out


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_html(sections: list[Section], stamp: str) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Wide Residual Networks: our results beside the paper's</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Wide Residual Networks: our results beside the paper's</h1>",
        f'<p class="meta">Written by <code>wrn report</code> on {e(stamp)}. Errors are test errors in percent of '
        "the last epoch (never the best one), medians over the finished seeds; the paper's are medians of 5 "
        "runs (Table 9: best single runs).</p>",
    ]
    for s in sections:
        title = s.title + (" — scaled down" if s.scaled is not None else "")
        out.append(f"<h2>{e(title)}</h2>")
        if s.scaled is not None:
            out.append(
                f'<div class="scaled"><b>Scaled-down grid</b> ({e(", ".join(s.scaled))}): not the paper\'s '
                "setting, so no difference to the paper is shown; the paper's figures are there for orientation "
                "only.</div>"
            )
        if s.subtitle:
            out.append(f"<p>{e(s.subtitle)}</p>")
        out.append(f'<p class="source">Runs: <code>{e(str(s.source))}</code></p>')
        if s.rows:
            out += _html_table(s.headers, s.align, s.rows, status_col=s.headers[-1] == "status")
        for caption, headers, align, rows in s.extra_tables:
            out.append(f"<p><b>{e(caption)}</b></p>")
            out += _html_table(headers, align, rows, status_col=False)
        if s.notes:
            out.append('<ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in s.notes) + "</ul>")
        for fig in s.figures:
            out.append(
                f'<figure><img src="{_data_uri(fig.path)}" alt="{e(fig.title)}">'
                f"<figcaption>{e(fig.title)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"
