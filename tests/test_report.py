"""``wrn report`` on grids written here in the exact formats of ``wrn reproduce`` and ``wrn train``.

No training: each run directory is written by hand (config.yaml, metrics.jsonl, the files that make a run done,
stopped or failed), so that every figure of the report is known beforehand. The paper's recipe is written out
below from the paper (section 4), independently of the package's presets.
"""

from __future__ import annotations

import copy
import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from conftest import md_table
from wrn.cli import main as wrn_main

# The paper's CIFAR recipe (its section 4) with Table 4's ZCA, as a run's config.yaml spells it.
PAPER_CIFAR = {
    "model": {"name": None, "dropout": 0.0, "act": "relu", "bn_momentum": 0.1},
    "dataset": {"name": None, "root": "/data", "augment": "flip-crop", "normalization": "zca", "image_size": 32,
                "workers": 4, "download": False, "verify": True},
    "optim": {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0005, "batch_size": 128,
              "eval_batch_size": 256, "label_smoothing": 0.0},
    "schedule": {"name": "multistep", "epochs": 200, "milestones": [60, 120, 160], "gamma": 0.2,
                 "reset_momentum": True},
    "run": {"seed": 0, "device": "cuda", "amp": "bf16", "channels_last": True, "compile": False},
}  # fmt: skip
WIDE10, WIDE100 = "cifar10-wrn-40-4-zca", "cifar100-wrn-40-4-zca"


def scaled_config(model: str, dataset: str, seed: int) -> dict:
    """A digits run of 3 epochs: what `wrn reproduce table4 --dataset digits --epochs 3` trains."""
    cfg = copy.deepcopy(PAPER_CIFAR)
    cfg["model"]["name"] = model
    cfg["dataset"].update(name="digits", augment="none", normalization="digits", image_size=8)
    cfg["schedule"].update(epochs=3, milestones=[2])
    cfg["run"].update(seed=seed, device="cpu", amp="off")  # machine settings: not the paper's setting
    return cfg


def write_run(run: Path, cfg: dict, errors: list[float], train_time: float, done: bool) -> None:
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    lines = [
        {"epoch": e, "lr": 0.1, "train_loss": 1.0 / e, "test_error": err, "train_time": train_time,
         "test_time": 10.0, "train_precision": "fp32"}
        for e, err in enumerate(errors, 1)
    ]  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if done:
        (run / "model.json").write_text("{}")
        (run / "model.safetensors").write_bytes(b"")
    else:
        (run / "checkpoint.pt").write_bytes(b"")


def table4_grid(out: Path) -> None:
    """Table 4 on digits, 2 seeds; WRN-40-4 on CIFAR-10: 1 done, 1 failed; on CIFAR-100: 1 done, 1 stopped."""
    from wrn.reproduce import grid as G

    over = G.Overrides(("--dataset", "digits", "--epochs", "3"), {"dataset.name": "digits", "schedule.epochs": 3},
                       {"dataset": "digits", "data_dir": None, "epochs": 3, "image_size": None, "set": []})  # fmt: skip
    G.write_experiment(G.make_plan("table4", out, 2, over), None)
    write_run(
        out / WIDE10 / "seed-0", scaled_config("wrn-40-4", "cifar10", 0), [30.0, 20.0, 12.5], 100.0, True
    )
    write_run(
        out / WIDE100 / "seed-0", scaled_config("wrn-40-4", "cifar100", 0), [40.0, 30.0, 25.0], 50.0, True
    )
    write_run(out / WIDE100 / "seed-1", scaled_config("wrn-40-4", "cifar100", 1), [41.5], 50.0, False)
    (out / "logs").mkdir(exist_ok=True)
    (out / "logs" / f"{WIDE10}-seed-1.failed.json").write_text(
        json.dumps({"attempts": 2, "last_line": "wrn train: error: <b>boom</b> | half"})
    )


class Cells(HTMLParser):
    """Every <td> of a page: its data-label, its class and its text."""

    def __init__(self):
        super().__init__()
        self.cells: list[dict] = []
        self.headers: list[list[str]] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "thead":
            self.headers.append([])
        if tag in ("td", "th"):
            self._in = tag
            if tag == "td":
                self.cells.append({**dict(attrs), "text": ""})
            else:
                self.headers[-1].append("")

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._in = None

    def handle_data(self, data):
        if self._in == "td":
            self.cells[-1]["text"] += data
        elif self._in == "th":
            self.headers[-1][-1] += data


def test_a_scaled_grid_lists_every_setting_its_runs_changed_and_the_status_of_each_row(tmp_path, capsys):
    out = tmp_path / "t4"
    table4_grid(out)
    assert wrn_main(["report", str(out), "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    text = (tmp_path / "r" / "report.md").read_text()
    # Every difference from the paper's recipe, from the runs' config.yaml (not only --dataset and --epochs),
    # and none of the machine settings (device, precision).
    changed = (
        "data set CIFAR-10 → digits, CIFAR-100 → digits, normalization zca → digits, augmentation flip-crop → "
        "none, image size 32 → 8, epochs 200 → 3, lr drops at epochs 60, 120, 160 → 2 (from the runs' own "
        "config.yaml)"
    )
    assert f"These runs differ from the paper's setting in: {changed}." in text
    page = (tmp_path / "r" / "report.html").read_text()
    assert changed in html.unescape(page)
    # One heading per section, no doubled name, no bare counts, no Python values, the paper cited.
    assert re.findall(r"^## .*$", text, re.M) == ["## Table 4 — scaled down"]
    for word in ("Table 4: table4", "(of ", "spec section", "True", "False"):
        assert word not in text, word
    assert "The paper's Table 4: depth and width of WRN-d-k on CIFAR-10 and CIFAR-100, ZCA." in text
    assert "Each row has 2 runs planned (seeds 0, 1)." in text

    header, rows = md_table(text, "Table 4")
    assert header == ["row", "data set", "paper (%)", "ours (%)", "n", "min–max (%)", "params ours / paper (M)",
                      "train time / epoch (s)", "total time (min)", "precision", "status"]  # fmt: skip
    by = {(r[0], r[1]): dict(zip(header, r, strict=True)) for r in rows}
    wide10 = by[("WRN-40-4", "digits (paper: CIFAR-10)")]
    wide100 = by[("WRN-40-4", "digits (paper: CIFAR-100)")]
    # One unit per column: 3 x (100 + 10) s = 5.5 min and 3 x (50 + 10) s = 3.0 min; 100 and 50 s per epoch.
    assert (wide10["ours (%)"], wide10["train time / epoch (s)"], wide10["total time (min)"]) == (
        "12.50",
        "100.0",
        "5.5",
    )
    assert (wide100["ours (%)"], wide100["train time / epoch (s)"], wide100["total time (min)"]) == (
        "25.00",
        "50.0",
        "3.0",
    )
    assert wide10["status"] == "1 of 2 done, 1 failed"
    assert wide100["status"] == "1 of 2 done, 1 stopped, seed 1 at epoch 1/3: 41.50%"
    assert by[("WRN-16-8", "digits (paper: CIFAR-10)")]["status"] == "0 of 2 done, 2 missing"
    # The failure's last log line, escaped for each format.
    assert r"wrn train: error: <b>boom</b> \| half" not in text  # only in the list below the table
    assert f"{WIDE10}/seed-1 failed after 2 tries: wrn train: error: <b>boom</b> | half" in text
    assert "<b>boom</b>" not in page and "&lt;b&gt;boom&lt;/b&gt; | half" in page


def test_the_status_is_structured_counts_that_both_files_show(tmp_path):
    from wrn.reproduce.collect import Going, Status
    from wrn.reproduce.report import collect_report

    out = tmp_path / "t4"
    table4_grid(out)
    (tmp_path / "r").mkdir()
    report = collect_report([out], tmp_path / "r")
    (section,) = report.sections
    table = section.tables[0]
    statuses = {row.cells[0] + " " + row.cells[1]: row.status for row in table.rows}
    assert statuses["WRN-40-4 digits (paper: CIFAR-10)"] == Status(done=1, failed=1)
    assert statuses["WRN-40-4 digits (paper: CIFAR-100)"] == Status(
        done=1, stopped=1, going=(Going(seed=1, epoch=1, of=3, error=41.5),)
    )
    assert statuses["WRN-40-4 digits (paper: CIFAR-100)"].total == 2
    assert {s.total for s in statuses.values()} == {2}
    assert statuses["WRN-28-10 digits (paper: CIFAR-10)"] == Status(missing=2)
    # The HTML draws each part of a status as its own badge, from the counts (not from the text).
    from wrn.reproduce.render import render

    page = render(report, "report.html")
    assert '<span class="st st-done">1 of 2 done</span> <span class="st st-stopped">1 stopped</span>' in page
    assert '<span class="st st-running">seed 1 at epoch 1/3: 41.50%</span>' in page


def test_on_a_phone_every_cell_carries_its_column_name_and_names_do_not_break(tmp_path, capsys):
    """The narrow layout shows each row as a card of "column: value" lines: every cell needs its label."""
    out = tmp_path / "t4"
    table4_grid(out)
    assert wrn_main(["report", str(out), "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    page = (tmp_path / "r" / "report.html").read_text()
    parser = Cells()
    parser.feed(page)
    (headers,) = parser.headers
    assert len(parser.cells) == len(headers) * 19  # Table 4: 10 networks on CIFAR-10, 9 on CIFAR-100
    for i, cell in enumerate(parser.cells):
        assert cell["data-label"] == headers[i % len(headers)]
    names = [c for c in parser.cells if c["data-label"] == "row"]
    assert {c.get("class") for c in names} == {"nw"} and "WRN-40-4" in {c["text"] for c in names}
    assert (
        "@media (max-width: 700px)" in page and "table.cards td::before { content: attr(data-label)" in page
    )
    assert "<script" not in page and "http://" not in page and "https://" not in page


def test_before_any_run_has_started_the_differences_come_from_the_grids_overrides(tmp_path, capsys):
    from wrn.reproduce import grid as G

    out = tmp_path / "t3"
    over = G.Overrides(("--dataset", "digits", "--epochs", "2"), {"dataset.name": "digits", "schedule.epochs": 2},
                       {"dataset": "digits", "data_dir": None, "epochs": 2, "image_size": None, "set": []})  # fmt: skip
    plan = G.make_plan("table3", out, 1, over)
    G.write_experiment(plan, None)
    assert wrn_main(["report", str(out), "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    text = (tmp_path / "r" / "report.md").read_text()
    asked = ", ".join(
        plan.scaled
    )  # what make_plan recorded, e.g. "dataset.name=digits, schedule.epochs=2, ..."
    assert asked.startswith("dataset.name=digits, schedule.epochs=2")
    drops = next(
        yaml.safe_load(x.split("=", 1)[1]) for x in plan.scaled if x.startswith("schedule.milestones=")
    )
    expected = f"data set digits, epochs 2, lr drops at epochs {', '.join(map(str, drops)) or 'none'}"
    assert (
        f"differ from the paper's setting in: {expected} (from the grid's overrides: no run has written"
        in text
    )
    _, rows = md_table(text, "Table 3")
    assert [r[-1] for r in rows] == ["0 of 1 done, 1 missing"] * 4


def figure4_doc(steps: int, spread: float) -> dict:
    models = [
        ("preact-resnet-164", 85.0, 700.0),
        ("preact-resnet-1001", 512.0, 110_000.0),
        ("wrn-40-4", 68.0, 1000.0),
    ]
    return {
        "format": "wrn-bench-figure4", "version": 1,
        "machine": {"device": "cpu", "device_name": "Test CPU", "torch": "2.4.0", "cuda": None, "threads": 2},
        "settings": {"batch_size": 32, "steps": steps, "warmup": 1, "amp": "off", "channels_last": True,
                     "compile": False},
        "models": [{"name": n, "paper_ms": p, "ms": ms, "ms_min": ms, "ms_max": ms * spread, "params": 1_000_000,
                    "images_per_s": 32_000 / ms} for n, p, ms in models],
        "ratios": [
            {"slow": "preact-resnet-1001", "fast": "wrn-40-4", "paper": 512 / 68, "ours": 110.0},
            {"slow": "preact-resnet-1001", "fast": "wrn-28-10", "paper": 512 / 312, "ours": None},
            {"slow": "preact-resnet-164", "fast": "wrn-40-4", "paper": 85 / 68, "ours": 0.7},
        ],
    }  # fmt: skip


def test_noisy_speed_figures_are_called_unreliable_and_come_after_the_tables(tmp_path, capsys):
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "figure4.json").write_text(json.dumps(figure4_doc(steps=2, spread=4.0)))
    out = tmp_path / "t4"
    table4_grid(out)
    assert (
        wrn_main(["report", str(bench), str(out), "--out", str(tmp_path / "r")]) == 0
    )  # Figure 4 given first
    capsys.readouterr()
    text = (tmp_path / "r" / "report.md").read_text()
    assert re.findall(r"^## .*$", text, re.M) == [
        "## Table 4 — scaled down",
        "## Figure 4",
    ]  # the paper's order
    warning = next(ln for ln in text.splitlines() if ln.startswith("> **Unreliable:**"))
    assert "too few timed steps per network (2; give --steps 5 or more)" in warning
    assert "preact-resnet-164 700–2,800 ms (4.0x)" in warning and "wrn-40-4 1,000–4,000 ms (4.0x)" in warning
    assert (
        "The ratios preact-resnet-1001 / wrn-40-4, preact-resnet-164 / wrn-40-4 are unreliable with them."
        in warning
    )
    assert "channels_last memory format, eager" in text and "channels_last True" not in text
    _, rows = md_table(text, "Figure 4")
    # images/s kept readable: 32 / 110 s = 0.291, never "0"; one unit per column (ms).
    assert [r[5] for r in rows] == ["45.7", "0.291", "32.0"]
    assert rows[1][2:4] == ["110,000", "110,000–440,000"]
    assert "Unreliable:" in (tmp_path / "r" / "report.html").read_text()


def test_steady_speed_figures_carry_no_warning(tmp_path, capsys):
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "figure4.json").write_text(json.dumps(figure4_doc(steps=20, spread=1.2)))
    assert wrn_main(["report", str(bench), "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert "nreliable" not in (tmp_path / "r" / "report.md").read_text()


# --------------------------------------------------------------------------------------------- figures


def digits_overrides(epochs: int):
    from wrn.reproduce import grid as G

    return G.Overrides(("--dataset", "digits", "--epochs", str(epochs)),
                       {"dataset.name": "digits", "schedule.epochs": epochs},
                       {"dataset": "digits", "data_dir": None, "epochs": epochs, "image_size": None, "set": []})  # fmt: skip


def digits_grid(out: Path, experiment: str, errors: dict[str, list[list[float]]]) -> None:
    """A grid of ``experiment`` on digits whose rows have run: row name -> each seed's test error per epoch."""
    from wrn.reproduce import grid as G
    from wrn.reproduce.experiments import EXPERIMENTS

    epochs = max(len(e) for seeds in errors.values() for e in seeds)
    runs = max(len(seeds) for seeds in errors.values())
    G.write_experiment(G.make_plan(experiment, out, runs, digits_overrides(epochs)), None)
    rows = {r.name: r for e in EXPERIMENTS.values() for r in e.rows}
    for name, seeds in errors.items():
        for seed, errs in enumerate(seeds):
            cfg = scaled_config(rows[name].model, rows[name].dataset, seed)
            cfg["schedule"].update(epochs=epochs, milestones=[])
            write_run(out / name / f"seed-{seed}", cfg, errs, 1.0, len(errs) == epochs)


@pytest.fixture
def drawn(monkeypatch) -> dict:
    """The matplotlib figures that `wrn report` saves (each still written), by file name, drawn."""
    import wrn.train.plot as plot

    figures: dict = {}
    save = plot.save_figure

    def keep(fig, out):
        written = save(fig, out)
        figures[Path(out).name] = fig
        return written

    monkeypatch.setattr(plot, "save_figure", keep)
    return figures


def laid_out(fig):
    """The figure drawn as it was saved (its layout done): the renderer that measures its parts."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def data_lines(fig) -> list:
    """Every line of the figure's axes that draws data (not the dotted lr drops), with its axes."""
    return [
        (ax, ln)
        for ax in fig.axes
        for ln in ax.get_lines()
        if len(ln.get_xdata()) and ln.get_linestyle() != ":"
    ]


F3_THIN, F3_WIDE = ("svhn-wrn-52-1", "svhn-wrn-52-1-dropout"), ("svhn-wrn-16-4", "svhn-wrn-16-4-dropout")


def test_runs_of_one_epoch_are_drawn_as_points_with_their_range(tmp_path, capsys, drawn):
    out = tmp_path / "t6"
    digits_grid(out, "figure3", {name: [[80.0], [70.0]] for name in F3_THIN + F3_WIDE})
    assert wrn_main(["report", str(out), "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    fig = drawn["figure3-svhn-thin-wrn-52-1.png"]
    lines = data_lines(fig)
    assert len(lines) >= 4  # test error and training loss of both rows
    for _, line in lines:  # a line through one point draws nothing: each such point has a marker
        assert len(line.get_xdata()) > 1 or line.get_marker() not in (None, "None", "", " "), line
    ax_err = fig.axes[1]
    whiskers = [seg for c in ax_err.collections for seg in c.get_segments()]
    assert sorted((round(s[:, 1].min()), round(s[:, 1].max())) for s in whiskers) == [(70, 80), (70, 80)]


def test_the_legend_of_the_curves_covers_none_of_them(tmp_path, capsys, drawn):
    out = tmp_path / "t6"
    high = [[88.0, 89.0, 90.0, 90.0], [86.0, 88.0, 89.0, 90.0]]  # the curves run along the top right
    digits_grid(out, "figure3", {name: high for name in F3_THIN + F3_WIDE})
    assert wrn_main(["report", str(out), "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    for name in ("figure3-svhn-thin-wrn-52-1.png", "figure3-svhn-wide-wrn-16-4.png"):
        fig = drawn[name]
        renderer = laid_out(fig)
        legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        assert len(legends) == 1
        box = legends[0].get_window_extent(renderer)
        for _, line in data_lines(fig):
            xy = line.get_xydata()
            dense = [
                a + (b - a) * t / 20 for a, b in zip(xy[:-1], xy[1:], strict=True) for t in range(21)
            ] or list(xy)
            shown = line.get_transform().transform(dense)
            assert not any(box.contains(x, y) for x, y in shown), (name, line.get_label())


def cutout_chart(tmp_path: Path, capsys, drawn):
    """The chart of a Cutout grid scaled to digits, as `wrn report` drew it: its CIFAR-10 and CIFAR-100 rows
    both trained on digits."""
    out = tmp_path / "cutout"
    digits_grid(out, "cutout", {
        "cifar10-wrn-28-10-cutout-baseline": [[30.0, 20.0]], "cifar10-wrn-28-10-cutout": [[25.0, 15.0]],
        "cifar100-wrn-28-10-cutout-baseline": [[32.0, 21.0]], "cifar100-wrn-28-10-cutout": [[26.0, 16.0]],
    })  # fmt: skip
    assert wrn_main(["report", str(out), "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    return drawn["cutout-vs-paper.png"]


def test_the_chart_of_a_scaled_grid_names_each_row_once(tmp_path, capsys, drawn):
    (ax,) = cutout_chart(tmp_path, capsys, drawn).axes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(set(labels)) == 4, labels
    assert "WRN-28-10 + dropout (CIFAR-100 → digits)" in labels


def test_the_title_of_a_chart_fits_its_figure(tmp_path, capsys, drawn):
    fig = cutout_chart(tmp_path, capsys, drawn)
    renderer = laid_out(fig)
    titles = [t for t in (fig._suptitle, fig.axes[0].title) if t is not None and t.get_text()]
    assert len(titles) == 1 and "SCALED DOWN" in titles[0].get_text()
    box = titles[0].get_window_extent(renderer)
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height  # nothing cut off


def test_two_grids_of_one_experiment_get_headings_that_tell_them_apart(tmp_path, capsys):
    for name, errors in (("short", [[80.0]]), ("long", [[80.0, 60.0, 40.0]])):
        digits_grid(tmp_path / name, "figure3", {row: errors for row in F3_THIN + F3_WIDE})
    assert (
        wrn_main(["report", str(tmp_path / "short"), str(tmp_path / "long"), "--out", str(tmp_path / "r")])
        == 0
    )
    capsys.readouterr()
    text = (tmp_path / "r" / "report.md").read_text()
    assert re.findall(r"^## .*$", text, re.M) == [  # each grid's figure right after its table
        "## Table 6 (the runs of figure3) in short — scaled down",
        "## Figure 3 in short — scaled down",
        "## Table 6 (the runs of figure3) in long — scaled down",
        "## Figure 3 in long — scaled down",
    ]
    one = tmp_path / "only"
    digits_grid(one, "figure3", {row: [[80.0]] for row in F3_THIN + F3_WIDE})
    assert wrn_main(["report", str(one), "--out", str(tmp_path / "r1")]) == 0
    capsys.readouterr()  # a grid alone keeps the plain heading
    assert "## Table 6 (the runs of figure3) — scaled down" in (tmp_path / "r1" / "report.md").read_text()
