"""``wrn report``: the results of reproduction grids beside the paper's, as report.md, report.html and PNGs.

For each grid found (a folder with ``experiment.yaml``, or a ``figure4.json`` of ``wrn bench figure4``):

- a table laid out like the paper's: per row the paper's figure, our median test error over the finished
  seeds with n and min-max (the LAST epoch's error, never the best one), the difference to the paper,
  parameters ours vs the paper's, training time per epoch and in all, the training precision and the status
  of its runs (done / running / stopped / failed / missing, of the runs planned). A grid whose runs differ
  from the paper's setting lists every difference, read from the runs' own ``config.yaml``, and has no
  difference column;
- Figures 2 and 3 from the runs of Tables 5 and 6: test error and training loss per epoch, the median over
  seeds as a line and the min-max as a band;
- Figure 4: the times per minibatch and the paper's ratios beside ours, flagged when the timings are noisy.

The pieces: :mod:`wrn.reproduce.collect` reads the runs into typed content, this module lays the sections out,
:mod:`wrn.reproduce.figures` draws, :mod:`wrn.reproduce.render` writes both files from the same content.
Nothing in the grids is changed. A partial grid gives a partial report; runs still going show their last epoch.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from wrn.reproduce import grid as G
from wrn.reproduce.collect import (
    DASH,
    NONE,
    Column,
    Difference,
    Figure,
    Report,
    ReportError,
    RowResult,
    Scaled,
    Section,
    Table,
    TableRow,
    is_number,
    median,
    read_run,
    scaled_of,
)
from wrn.reproduce.experiments import DATASET_TITLES, EXPERIMENTS, Experiment, Row, views_of

__all__ = ["ReportError", "write_report", "collect_report"]

TITLE = "Wide Residual Networks: our results beside the paper's"
INTRO = (
    "Errors are test errors in percent of the last epoch (never the best one), medians over the finished "
    "seeds; the paper's are medians of 5 runs (its Table 9: best single runs). The sections of today's "
    "recipes (Cutout, AutoAugment, SAM) and robust training stand beside their own papers' (or RobustBench's) "
    "figures, named in each. FixMatch's rows are as its Table 2: each run's median test error of its last 20 "
    "epochs, the average of the weights' where it is evaluated, mean ± std over the folds of the labelled split "
    "(n: the folds)."
)


ATTACK_INTRO = (
    "Each run, once trained, is attacked by AutoAttack (standard version: APGD-CE, APGD-T, FAB-T, Square; L-inf "
    "at the run's training eps) with `wrn eval --attack autoattack`; a run that kept its best epoch on held-out "
    "images (early stopping, adv.holdout) is attacked with those weights (RUN/best), as RobustBench's entry is "
    "the early-stopped model, the others with their last epoch's. Ours: mean ± std over the attacked seeds of "
    "the clean and robust accuracy on the attacked images (n: the seeds); RobustBench's: one model each."
)


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


# --------------------------------------------------------------------------------------------- cells


def fmt_err(value: float | None) -> str:
    return NONE if value is None else f"{value:.2f}"


def fmt_millions(n: float | None) -> str:
    if n is None:
        return NONE
    return f"{n / 1e6:.2f}" if n < 100e6 else f"{n / 1e6:.1f}"


TIME_UNITS = (("s", 1.0), ("min", 60.0), ("h", 3600.0))


def time_unit(seconds: list[float | None]) -> tuple[str, float]:
    """One unit for a whole column: seconds up to 2 minutes, minutes up to 2 hours, else hours."""
    top = max((s for s in seconds if s is not None), default=0.0)
    return TIME_UNITS[0] if top < 120 else TIME_UNITS[1] if top < 7200 else TIME_UNITS[2]


def fmt_time(seconds: float | None, unit: tuple[str, float]) -> str:
    return NONE if seconds is None else f"{seconds / unit[1]:.1f}"


def _paper_cell(row: Row) -> str:
    if row.paper_std is not None:
        return f"{row.paper_error:.2f} ± {row.paper_std:.2f}"
    if row.paper_error is None:
        return NONE
    if row.paper_top5 is not None:
        return f"{row.paper_error:.2f} / {row.paper_top5:.2f}"
    return f"{row.paper_error:.2f}"


# --------------------------------------------------------------------------------------------- tables


def results_table(results: list[RowResult], compared: bool) -> Table:
    """The paper's table with ours beside it; ``compared``: the runs are the paper's setting (a Δ column)."""
    imagenet = any(r.row.paper_top5 is not None for r in results)
    with_time = any(r.row.paper_time is not None for r in results)
    per_epoch = time_unit([r.time_per_epoch for r in results])
    total = time_unit([r.total_time for r in results])
    err = "top-1 / top-5 (%)" if imagenet else "(%)"
    columns = [Column("row", "l", nowrap=True), Column("data set", "l"), Column(f"paper {err}"),
               Column(f"ours {err}"), Column("n"), Column("min–max (%)", nowrap=True)]  # fmt: skip
    if compared:
        columns.append(Column("Δ vs paper"))
    columns.append(Column("params ours / paper (M)", nowrap=True))
    if with_time:
        columns.append(Column("paper (s / epoch)"))
    columns += [Column(f"train time / epoch ({per_epoch[0]})"), Column(f"total time ({total[0]})"),
                Column("precision", "l")]  # fmt: skip
    table = Table(columns, status_title="status")
    for res in results:
        row, med, errors = res.row, res.median, res.errors
        ours = mean_std(errors) if row.folds else fmt_err(med)  # (FixMatch: over the folds)
        if imagenet and med is not None and res.top5:
            ours = f"{med:.2f} / {median(res.top5):.2f}"
        label = row.label
        if res.trained_model and row.model and res.trained_model != row.model:
            label += f" (ran {res.trained_model})"
        data_set = DATASET_TITLES.get(row.dataset, row.dataset)
        if res.trained_dataset and res.trained_dataset != row.dataset:
            data_set = f"{res.dataset_title} (paper: {data_set})"
        rng = f"{min(errors):.2f}{DASH}{max(errors):.2f}" if len(errors) > 1 else NONE
        cells = [label, data_set, _paper_cell(row), ours, str(len(errors)), rng]
        if compared:
            cells.append(NONE if med is None or row.paper_error is None else f"{med - row.paper_error:+.2f}")
        paper_params = NONE if row.paper_params is None else f"{row.paper_params:g}"
        cells.append(f"{fmt_millions(res.params)} / {paper_params}")
        if with_time:
            cells.append(NONE if row.paper_time is None else f"{row.paper_time:g}")
        cells += [fmt_time(res.time_per_epoch, per_epoch), fmt_time(res.total_time, total),
                  ", ".join(res.precisions) or NONE]  # fmt: skip
        table.rows.append(TableRow(cells, res.status))
    return table


def mean_std(values: list[float]) -> str:
    """``mean ± std`` over seeds (the sample std), the mean alone for one seed, a dash for none."""
    if not values:
        return NONE
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.2f} ± {std:.2f}"


def attack_table(results: list[RowResult]) -> Table:
    """Clean and AutoAttack accuracy of each row's attacked runs (mean ± std over seeds) beside the reference's."""
    columns = [Column("row", "l", nowrap=True), Column("data set", "l"), Column("RobustBench clean (%)"),
               Column("ours clean (%)", nowrap=True), Column("RobustBench AutoAttack (%)"),
               Column("ours AutoAttack (%)", nowrap=True), Column("n"), Column("weights attacked", "l"),
               Column("images attacked"), Column("eps")]  # fmt: skip
    table = Table(columns, status_title="status")
    for res in results:
        row = res.row
        attacked = [r for r in res.runs if r.attack_acc("clean_acc") is not None]
        clean = [r.attack_acc("clean_acc") for r in attacked]
        robust = [
            r.attack_acc("autoattack_acc") for r in attacked if r.attack_acc("autoattack_acc") is not None
        ]
        data_set = DATASET_TITLES.get(row.dataset, row.dataset)
        if res.trained_dataset and res.trained_dataset != row.dataset:
            whose = "RobustBench" if on_robustbench(row) else "its reference"
            data_set = f"{res.dataset_title} ({whose}: {data_set})"
        held = [(r.config.get("adv") or {}).get("holdout") for r in res.runs if r.config]
        weights = ("best epoch (RUN/best)" if any(held) else "last epoch") if held else NONE
        images = sorted({str(r.attack.get("n_points")) for r in attacked if r.attack})
        eps = sorted({str(r.attack.get("eps")) for r in attacked if r.attack})
        ref = "" if on_robustbench(row) else " (authors')"  # a reference RobustBench does not list
        cells = [row.label, data_set, _num(row.paper_clean) + ref, mean_std(clean), _num(row.paper_robust) + ref,
                 mean_std(robust), str(len(attacked)), weights, ", ".join(images) or NONE,
                 ", ".join(eps) or NONE]  # fmt: skip
        table.rows.append(TableRow(cells, res.status))
    return table


def on_robustbench(row) -> bool:
    """Whether ``row``'s reference figures are a RobustBench entry's (its model_info file), not its authors'."""
    return row.paper_file.startswith("model_info/")


def _num(value: float | None) -> str:
    return NONE if value is None else f"{value:.2f}"


def _seeds_sentence(seeds: list) -> str:
    if not seeds:
        return "No run is planned yet."
    names = ", ".join(map(str, seeds))
    return f"Each row has {len(seeds)} run{'s' if len(seeds) != 1 else ''} planned (seed{'s' if len(seeds) != 1 else ''} {names})."


def table_section(out: Path, data: dict, exp: Experiment, results: list[RowResult]) -> Section:
    scaled = scaled_of(data, results)
    if exp.source:
        intro = f"{exp.title}: {exp.description}. The paper's figures: {exp.source}."
    elif scaled:
        intro = f"The paper's {exp.title}: {exp.description}."
    else:
        intro = f"{exp.description[0].upper()}{exp.description[1:]}."
    attack = dict(data.get("attack") or {})
    if exp.attack and scaled is not None and attack.get("n"):
        images = Difference("AutoAttack's test images", (("all", f"the first {attack['n']}"),))
        scaled = Scaled([*scaled.differences, images], scaled.source)
    section = Section(exp.title, [intro, _seeds_sentence(list(data.get("seeds") or []))], out, scaled)
    if exp.attack:
        section.intro.append(ATTACK_INTRO)
        section.tables.append(attack_table(results))
    else:
        section.tables.append(results_table(results, compared=scaled is None))
    for res in results:
        if res.row.paper_file:
            whose = (
                "RobustBench's figures"
                if on_robustbench(res.row)
                else "its authors' figures (not on RobustBench)"
            )
            section.notes.append(f"{res.row.label}: {whose} from {res.row.paper_file}.")
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


# --------------------------------------------------------------------------------------------- grids


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-").replace("--", "-")


def _unique(stem: str, used: set[str]) -> str:
    name, n = stem, 2
    while name in used:
        name, n = f"{stem}-{n}", n + 1
    used.add(name)
    return name


def paper_order(name: str) -> tuple:
    """Tables by number, each figure right after the table its runs come from, Figure 4 after the tables."""
    exp = EXPERIMENTS.get(name)
    if exp is not None and exp.view_of:
        return (int(exp.view_of.removeprefix("table")), 1)
    if name.startswith("table") and name[5:].isdigit():
        return (int(name[5:]), 0)
    if exp is not None and exp.source:  # today's recipes: after the paper's, in the order they are listed
        return (200 + list(EXPERIMENTS).index(name), 0)
    return (100, 0)


def view_section(view: Experiment, results: dict[str, RowResult], base: Section, overrides: dict,
                 out_dir: Path, used: set[str]) -> Section:  # fmt: skip
    """Figure 2 or 3: one panel of curves per data set, from the runs of its table."""
    from wrn.reproduce.figures import curves_figure

    intro = (
        f"{view.description[0].upper()}{view.description[1:]}. Solid: test error (right axis); dashed: "
        "training loss (left axis); the line is the median over seeds and the band their min–max; dotted "
        "verticals: learning-rate drops."
    )
    section = Section(view.title, [intro], base.source, base.scaled, order=paper_order(view.name))
    for panel, names in view.panels:
        rows = [results.get(n) or RowResult(view.row(n), [], overrides) for n in names]
        png = curves_figure(
            view, panel, rows, base.scaled, out_dir / f"{_unique(f'{view.name}-{_slug(panel)}', used)}.png"
        )
        if png is not None:
            section.figures.append(Figure(f"{view.title}, {panel}", png))
    if not section.figures:
        listed = ", ".join(n for _, ns in view.panels for n in ns)
        section.notes.append(f"no epoch of its runs has finished yet (rows {listed})")
    return section


def grid_sections(out: Path, out_dir: Path, used: set[str]) -> list[Section]:
    from wrn.reproduce.figures import table_figure

    data = G.read_experiment(out) or {}
    name = str(data.get("experiment"))
    if name == "figure4":
        return [bench_section(out / G.BENCH_DIR / G.BENCH_FILE, out, out_dir, _unique("figure4", used))]
    exp = EXPERIMENTS.get(name)
    if exp is None:
        raise ReportError(
            f"{out / G.EXPERIMENT_FILE} names experiment {name!r}, which this wrn does not know"
        )
    specs = G.grid_specs(out, data)
    runs = {s.key: read_run(s) for s in specs}
    listed = {s.row.name for s in specs}
    # Every row of the experiment that the grid lists (a Figure 2 grid lists only its rows); the paper's
    # reference rows (no model) are shown for orientation.
    rows = [
        r for r in exp.rows if r.name in listed or (r.model is None and listed & {x.name for x in exp.rows})
    ]
    overrides = dict(data.get("overrides") or {})
    results = [
        RowResult(row, [runs[s.key] for s in specs if s.row.name == row.name], overrides) for row in rows
    ]
    section = table_section(out, data, exp, results)
    section.order = paper_order(name)
    requested = data.get("requested") or [name]
    if name not in requested:
        section.title += f" (the runs of {', '.join(requested)})"
    chart = None
    if not exp.attack:  # an attacked experiment's table holds its accuracies; the chart is of test errors
        chart = table_figure(
            exp, results, section.scaled, out_dir / f"{_unique(exp.name, used)}-vs-paper.png"
        )
    if chart is not None:
        section.figures.append(Figure(f"{exp.title}: ours vs the paper", chart))
    sections = [section]
    by_name = {r.row.name: r for r in results}
    for view in views_of(exp.name):
        vs = view_section(view, by_name, section, overrides, out_dir, used)
        if vs.figures or view.name in requested:
            sections.append(vs)
    return sections


# --------------------------------------------------------------------------------------------- figure 4


def bench_section(path: Path | None, source: Path, out_dir: Path, stem: str) -> Section:
    from wrn.bench import figure4

    section = Section("Figure 4", [], source, order=paper_order("figure4"))
    if path is None or not path.is_file():
        log = source / G.LOGS_DIR / "figure4.log"
        line = G.last_log_line(log) if log.is_file() else ""
        section.intro.append("The speed benchmark has not written its figure4.json yet.")
        if line:
            section.notes.append(f"last line of its log ({log}): {line}")
        return section
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        doc = None
    if not isinstance(doc, dict) or doc.get("format") != figure4.FORMAT:
        section.intro.append(f"{path} is not a figure4.json of 'wrn bench figure4'.")
        return section
    section.intro += [figure4.ABOUT, f"Ours: {figure4.settings_text(doc)} (from {path})."]
    warning = " ".join(figure4.unreliable(doc))
    if warning:
        section.warnings.append(warning)
    section.tables += bench_tables(doc)
    section.figures.append(
        Figure("Figure 4: ours beside the paper", figure4.draw(doc, out_dir / f"{stem}.png"))
    )
    return section


def bench_tables(doc: dict) -> list[Table]:
    from wrn.bench.common import readable

    def num(value, fmt) -> str:
        return fmt(value) if is_number(value) else NONE

    models = Table([Column("model", "l", nowrap=True), Column("paper (ms, Titan X)"), Column("ours (ms)"),
                    Column("ours min–max (ms)", nowrap=True), Column("params (M)"), Column("images / s")])  # fmt: skip
    for m in doc.get("models") or []:
        lo, hi = m.get("ms_min"), m.get("ms_max")
        models.rows.append(TableRow([
            str(m.get("name")), num(m.get("paper_ms"), lambda v: f"{v:g}"), num(m.get("ms"), readable),
            f"{readable(lo)}{DASH}{readable(hi)}" if is_number(lo) and is_number(hi) else NONE,
            num(m.get("params"), fmt_millions), num(m.get("images_per_s"), readable),
        ]))  # fmt: skip
    ratios = Table([Column("ratio", "l", nowrap=True), Column("paper"), Column("ours")],
                   caption="Speed ratios (time of the slow net / time of the fast one)")  # fmt: skip
    for r in doc.get("ratios") or []:
        ratios.rows.append(TableRow([f"{r.get('slow')} / {r.get('fast')}",
                                     num(r.get("paper"), lambda v: f"{v:.2f}"),
                                     num(r.get("ours"), lambda v: f"{v:.2f}")]))  # fmt: skip
    return [models, ratios]


# --------------------------------------------------------------------------------------------- writing


def collect_report(paths: list[Path], out_dir: Path) -> Report:
    """Read every grid found in ``paths`` and draw its figures into ``out_dir``: the report's one content."""
    used: set[str] = set()
    sections: list[Section] = []
    for kind, src in find_sources(paths):
        if kind == "grid":
            sections += grid_sections(src, out_dir, used)
        else:
            sections.append(bench_section(src, src.parent, out_dir, _unique("figure4", used)))
    # the paper's order; two grids of one experiment in the order given, each with its figures after it
    given = {src: i for i, src in enumerate(dict.fromkeys(s.source for s in sections))}
    sections.sort(key=lambda s: (s.order[0], given[s.source], s.order[1:]))
    name_the_grids(sections)
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    return Report(TITLE, f"Written by wrn report on {stamp}. {INTRO}", sections)


def name_the_grids(sections: list[Section]) -> None:
    """Sections that would read the same (two grids of Table 6, say) get their grid's folder in the heading:
    its name, or its whole path where two folders have the same name."""
    same: dict[str, list[Section]] = {}
    for section in sections:
        same.setdefault(section.heading, []).append(section)
    for group in same.values():
        folders = {s.source for s in group}
        if len(folders) < 2:
            continue
        names = {s.source.name for s in group}
        for section in group:
            section.where = section.source.name if len(names) == len(folders) else str(section.source)


def write_report(paths: list[str | Path], out_dir: str | Path | None = None) -> Path:
    """Write report.md, report.html and the PNG figures of every grid found in ``paths``; returns the folder."""
    from wrn.atomic import atomic_write_text
    from wrn.paths import check_output_dir
    from wrn.reproduce.render import render

    paths = [Path(p) for p in paths]
    find_sources(paths)  # nothing to report: say so before making any folder
    if out_dir is None:
        out_dir = (paths[0] / "report") if len(paths) == 1 and paths[0].is_dir() else Path("report")
    out_dir = check_output_dir(out_dir, "--out")  # a file, a name too long, a read-only or unwritable place
    out_dir.mkdir(parents=True, exist_ok=True)
    report = collect_report(paths, out_dir)
    for name in ("report.md", "report.html"):
        atomic_write_text(out_dir / name, render(report, name))
    return out_dir
