"""``wrn reproduce`` and ``wrn report`` through the real command line.

A scaled-down Table 3 grid on the bundled digits is killed with ``kill -9`` half-way and run again: the
finished run is left untouched, the partial one resumes from its checkpoint, no orphan keeps training. Its
report is checked number by number against the run directories and against the paper's figures of spec
section 7, written out below independently of the package. A local Ray instance runs two runs at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from conftest import md_table, metrics, snapshot
from wrn.train.rundir import RunLock

# One thread per process: the tests run several processes at once on small machines.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ROW = "cifar10-wrn-40-2-l1-zca"  # Table 3, l=1: WRN-40-2 with one conv per block (2.2M parameters)
GRID = ["reproduce", "table3", "--dataset", "digits", "--epochs", "2", "--runs", "2", "--rows", ROW]

# The paper's tables, as it prints them: test error %, (top-1, top-5) for ImageNet.
PAPER_TABLES = {
    "table2": {
        "cifar10-wrn-40-2-b131-zca": 6.06,
        "cifar10-wrn-40-2-b31-zca": 5.78,
        "cifar10-wrn-40-2-b13-zca": 6.42,
        "cifar10-wrn-40-2-b311-zca": 5.86,
        "cifar10-wrn-28-2-zca": 5.73,
        "cifar10-wrn-22-2-b313-zca": 5.78,
    },
    "table3": {
        "cifar10-wrn-40-2-l1-zca": 6.69,
        "cifar10-wrn-40-2-l2-zca": 5.43,
        "cifar10-wrn-40-2-l3-zca": 5.65,
        "cifar10-wrn-40-2-l4-zca": 5.93,
    },
    "table4": {
        **{
            f"cifar10-wrn-{m}-zca": e
            for m, e in {
                "40-1": 6.85, "40-2": 5.33, "40-4": 4.97, "40-8": 4.66, "28-10": 4.17, "28-12": 4.33,
                "22-8": 4.38, "22-10": 4.44, "16-8": 4.81, "16-10": 4.56,
            }.items()
        },
        **{
            f"cifar100-wrn-{m}-zca": e
            for m, e in {
                "40-1": 30.89, "40-2": 26.04, "40-4": 22.89, "28-10": 20.50, "28-12": 20.43, "22-8": 21.22,
                "22-10": 20.75, "16-8": 22.07, "16-10": 21.59,
            }.items()
        },
    },
    "table5": {
        "cifar10-wrn-40-4": 4.53, "cifar100-wrn-40-4": 21.18, "cifar10-wrn-16-8": 4.27,
        "cifar100-wrn-16-8": 20.43, "cifar10-wrn-28-10": 4.00, "cifar100-wrn-28-10": 19.25,
        "cifar10-preact-resnet-164": 5.46, "cifar100-preact-resnet-164": 24.33,
        "cifar10-preact-resnet-1001": 4.92, "cifar100-preact-resnet-1001": 22.71,
    },
    "table6": {
        "cifar10-wrn-16-4": 5.02, "cifar100-wrn-16-4": 24.03, "svhn-wrn-16-4": 1.85,
        "cifar10-wrn-16-4-dropout": 5.24, "cifar100-wrn-16-4-dropout": 23.91, "svhn-wrn-16-4-dropout": 1.64,
        "cifar10-wrn-28-10": 4.00, "cifar100-wrn-28-10": 19.25,
        "cifar10-wrn-28-10-dropout": 3.89, "cifar100-wrn-28-10-dropout": 18.85,
        "cifar10-wrn-52-1": 6.43, "cifar100-wrn-52-1": 29.89, "svhn-wrn-52-1": 2.08,
        "cifar10-wrn-52-1-dropout": 6.28, "cifar100-wrn-52-1-dropout": 29.78, "svhn-wrn-52-1-dropout": 1.70,
    },
    "table7": {
        "imagenet-wrn-18-1.0": (30.4, 10.93), "imagenet-wrn-18-1.5": (27.06, 9.0),
        "imagenet-wrn-18-2.0": (25.58, 8.06), "imagenet-wrn-18-3.0": (24.06, 7.33),
        "imagenet-wrn-34-1.0": (26.77, 8.67), "imagenet-wrn-34-1.5": (24.5, 7.58),
        "imagenet-wrn-34-2.0": (23.39, 7.00),
    },
    "table8": {
        "imagenet-resnet-50": (24.01, 7.02), "imagenet-resnet-101": (22.44, 6.21),
        "imagenet-resnet-152": (22.16, 6.16), "imagenet-wrn-50-2": (21.9, 6.03),
        "imagenet-preact-resnet-200": (21.66, 5.79),
    },
    "table9": {"cifar10-wrn-40-10-dropout": 3.8, "cifar100-wrn-40-10-dropout": 18.3, "svhn-wrn-16-8-dropout": 1.54},
}  # fmt: skip


def wrn(*args: str, env: dict | None = None, timeout: float = 300, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wrn", *args],
        env=env or ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def epochs_logged(run_dir: Path) -> int:
    """Complete lines of a metrics file that a run may be writing right now."""
    try:
        return (run_dir / "metrics.jsonl").read_text().count("\n")
    except OSError:
        return 0


def flat(data: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def pids_with(text: str) -> list[int]:
    """Live processes whose command line mentions ``text`` (zombies excluded)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry))
    return found


# --------------------------------------------------------------------------------------------- the data


def test_experiments_hold_the_papers_numbers():
    from wrn.reproduce.experiments import EXPERIMENTS

    for name, expected in PAPER_TABLES.items():
        rows = EXPERIMENTS[name].rows
        got = {
            r.name: (r.paper_error, r.paper_top5) if r.paper_top5 is not None else r.paper_error for r in rows
        }
        assert got == expected, name
    # The figures are views of the tables' runs.
    assert {r.name for r in EXPERIMENTS["figure2"].rows} <= set(PAPER_TABLES["table5"])
    assert {r.name for r in EXPERIMENTS["figure3"].rows} == {
        n for n in PAPER_TABLES["table6"] if n.startswith("svhn")
    }
    # Table 4: the row without a CIFAR-100 figure is not run on CIFAR-100; Table 6: no WRN-28-10 on SVHN.
    assert "cifar100-wrn-40-8-zca" not in PAPER_TABLES["table4"] and len(EXPERIMENTS["table4"].rows) == 19
    # The recipes of the rows: ZCA for Tables 2-4, dropout 0.3 on CIFAR and 0.4 on SVHN.
    assert all(r.normalization == "zca" for n in ("table2", "table3", "table4") for r in EXPERIMENTS[n].rows)
    drop = {r.name: r.dropout for r in EXPERIMENTS["table6"].rows + EXPERIMENTS["table9"].rows}
    assert drop["cifar100-wrn-28-10-dropout"] == 0.3 and drop["svhn-wrn-16-8-dropout"] == 0.4
    assert drop["cifar10-wrn-52-1"] is None


def test_cached_compute_matches_the_package():
    import torch

    from wrn.models.complexity import count_macs
    from wrn.models.registry import create_model
    from wrn.reproduce.experiments import FORWARD_MACS

    names = (
        list(FORWARD_MACS)
        if os.environ.get("WRN_SLOW") == "1"
        else ["wrn-40-2-b131", "wrn-28-10", "resnet-50"]
    )
    for name in names:
        with torch.device("meta"):
            model = create_model(name)
        size = 224 if name.startswith(("imagenet-", "resnet-", "wrn-50-")) else 32
        assert count_macs(model, size) == FORWARD_MACS[name], name


def test_list_prints_every_experiment_with_its_runs_and_gpu_hours():
    proc = wrn("reproduce", "list")
    assert proc.returncode == 0, proc.stderr
    lines = {
        ln.split()[0]: ln.split() for ln in proc.stdout.splitlines()[1:] if ln and not ln.startswith("*")
    }
    assert list(lines) == ["table2", "table3", "table4", "table5", "table6", "table7", "table8", "table9",
                           "figure2", "figure3", "figure4", "cutout", "autoaugment", "sam", "robust",
                           "fixmatch"]  # fmt: skip
    # name, rows, runs per seed, epochs per seed
    assert lines["table4"][1:4] == ["19", "19", "3,800"]
    assert lines["table6"][1:4] == ["16", "16", "3,040"]  # 12 CIFAR rows x 200 + 4 SVHN rows x 160
    assert lines["table8"][1:4] == ["5", "4", "360"]  # pre-ResNet-200 is a reference line only
    assert lines["fixmatch"][1:4] == ["6", "6", "6,144"]  # 1024 "epochs" of 1024 steps each
    assert "estimated GPU-hours" in proc.stdout


# --------------------------------------------------------------------------------------------- a killed grid


@pytest.fixture(scope="module")
def killed_grid(tmp_path_factory):
    """Table 3 (row l=1, 2 seeds, 2 epochs, digits): kill -9 the orchestrator while seed 1 trains, re-run."""
    out = tmp_path_factory.mktemp("grid") / "t3"
    first, second = out / ROW / "seed-0", out / ROW / "seed-1"
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wrn", *GRID, "--out", str(out)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    while not ((first / "model.json").is_file() and epochs_logged(second) >= 1):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() - start < 240, "the grid did not get to its second run"
        time.sleep(0.05)
    children = pids_with(str(second))
    proc.kill()  # SIGKILL: no handler runs in the orchestrator
    first_output = proc.communicate()[0]
    first_done = snapshot(first)
    # At once, while the orphaned run may still be saving its checkpoint: the new orchestrator must wait
    # for its lock rather than train the run a second time.
    rerun = subprocess.Popen(
        [sys.executable, "-m", "wrn", *GRID, "--out", str(out)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    gone = time.monotonic()
    while [p for p in children if p in pids_with(str(second))]:
        assert time.monotonic() - gone < 30, "the run kept going after its orchestrator was killed"
        time.sleep(0.05)
    orphan_seconds = time.monotonic() - gone
    stdout, stderr = rerun.communicate(timeout=240)
    return {
        "out": out,
        "children": children,
        "first_output": first_output,
        "first_done": first_done,
        "orphan_seconds": orphan_seconds,
        "rerun": (rerun.returncode, stdout, stderr),
        "seconds": time.monotonic() - start,
    }


def test_kill_9_of_the_orchestrator_loses_nothing(killed_grid):
    out = killed_grid["out"]
    first, second = out / ROW / "seed-0", out / ROW / "seed-1"
    assert killed_grid["children"], "the second run was not running when the orchestrator was killed"
    assert killed_grid["orphan_seconds"] < 30
    rc, stdout, stderr = killed_grid["rerun"]
    assert rc == 0, stdout + stderr
    assert "2 of 2 runs done (1 trained now, 1 before), 0 failed" in stdout
    # The finished run: not a byte or an mtime changed.
    assert snapshot(first) == killed_grid["first_done"]
    # The partial run: stopped by SIGTERM when its parent died (checkpoint saved), then resumed, not restarted.
    log = (out / "logs" / f"{ROW}-seed-1.log").read_text()
    assert log.count("=== wrn reproduce: start") == 1 and log.count("=== wrn reproduce: resume") == 1, log
    assert "SIGTERM received: checkpoint saved" in log
    assert re.search(r"continuing: .*seed-1 at epoch \d, step \d+", log), log
    assert log.count("run directory:") == 1  # one fresh start only
    records = metrics(second)
    assert [r["epoch"] for r in records] == [1, 2]
    assert (second / "model.safetensors").is_file()
    # The grid's identity: the experiment, the overrides, the seeds and every run of Table 3.
    exp = yaml.safe_load((out / "experiment.yaml").read_text())
    assert exp["experiment"] == "table3" and exp["seeds"] == [0, 1] and exp["scaled"] is True
    assert exp["overrides"] == {
        "dataset": "digits",
        "data_dir": None,
        "epochs": 2,
        "image_size": None,
        "set": [],
    }
    assert [(r["row"], r["seed"]) for r in exp["runs"]] == [
        (f"cifar10-wrn-40-2-l{n}-zca", s) for n in (1, 2, 3, 4) for s in (0, 1)
    ]
    # Each run is an ordinary wrn train run directory. Its config file is its whole config, the grid's
    # overrides merged in, and its command line names only that file and the run's folder.
    path = out / "configs" / f"{ROW}-seed-1.yaml"
    config = yaml.safe_load(path.read_text())
    assert list(config) == [
        "preset",
        "description",
        "model",
        "dataset",
        "optim",
        "schedule",
        "objective",
        "adv",
        "ssl",
        "run",
        "provenance",
    ]
    assert config["preset"] is None and config["model"]["name"] == "wrn-40-2-l1"
    assert config["dataset"]["name"] == "digits" and config["dataset"]["normalization"] is None  # digits' own
    assert config["run"]["seed"] == 1 and config["schedule"]["epochs"] == 2
    assert f": wrn train --config {path} --out {second} --no-progress\n" in log
    saved = flat(yaml.safe_load((second / "config.yaml").read_text()))
    # config.yaml is the file as wrn train resolved it: only what the file leaves open (None, auto) is filled
    # in, for this machine
    given = {
        k: v for k, v in flat(config).items() if v not in (None, "auto") and not k.startswith("provenance.")
    }
    assert {k: saved[k] for k in given} == {**given, "run.progress": False}  # --no-progress


def test_running_again_skips_finished_runs_and_touches_nothing(killed_grid):
    out = killed_grid["out"]
    before = snapshot(out)
    proc = wrn(*GRID, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "2 of 2 runs done (0 trained now, 2 before)" in proc.stdout
    assert snapshot(out) == before


@pytest.mark.parametrize(
    "args, words",
    [
        (["table3", "--dataset", "digits", "--epochs", "3", "--runs", "2"], "holds a table3 grid run with"),
        (["table2", "--dataset", "digits", "--epochs", "2"], "holds the grid of table3, not of table2"),
        (["figure2", "--dataset", "digits", "--epochs", "2"], "not of table5 (which figure2 is drawn from)"),
    ],
    ids=["other-overrides", "other-experiment", "figure-of-another-table"],
)
def test_another_grid_into_the_same_folder_is_refused(killed_grid, args, words):
    out = killed_grid["out"]
    before = snapshot(out)
    proc = wrn("reproduce", *args, "--out", str(out))
    assert proc.returncode == 2
    assert words in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert proc.stdout == ""
    assert snapshot(out) == before


def test_report_matches_the_runs_and_the_paper(killed_grid, tmp_path):
    out = killed_grid["out"]
    proc = wrn("report", str(out), "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "r" / "report.md").read_text()
    assert "## Table 3 — scaled down" in text and "Scaled down, not the paper's setting." in text
    # Everything the runs changed from the paper's setting, as their config.yaml says (ZCA and flip-crop too).
    saved = yaml.safe_load((out / ROW / "seed-0" / "config.yaml").read_text())
    drops = ", ".join(map(str, saved["schedule"]["milestones"])) or "none"
    assert (
        "differ from the paper's setting in: data set CIFAR-10 → digits, normalization zca → digits, augmentation "
        f"flip-crop → none, image size 32 → 8, epochs 200 → 2, lr drops at epochs 60, 120, 160 → {drops} (from the "
        "runs' own config.yaml)"
    ) in text
    runs = [metrics(out / ROW / f"seed-{s}") for s in (0, 1)]
    total = statistics.median(sum(x["train_time"] + x["test_time"] for x in r) for r in runs)
    header, rows = md_table(text, "Table 3")
    assert header == [
        "row",
        "data set",
        "paper (%)",
        "ours (%)",
        "n",
        "min–max (%)",
        "params ours / paper (M)",
        "train time / epoch (s)",
        "total time (s)" if total < 120 else "total time (min)",
        "precision",
        "status",
    ]  # fmt: skip (no difference)
    cells = {r[0]: dict(zip(header, r, strict=True)) for r in rows}
    assert list(cells) == ["l=1", "l=2", "l=3", "l=4"]
    # The paper's figures (docs/benchmarks.md), shown even for a scaled-down grid.
    for n, paper in zip((1, 2, 3, 4), (6.69, 5.43, 5.65, 5.93), strict=True):
        assert float(cells[f"l={n}"]["paper (%)"]) == paper
        assert cells[f"l={n}"]["data set"] == "digits (paper: CIFAR-10)"
    # Ours: the LAST epoch's test error of each seed, median, n and min-max.
    last = [r[-1]["test_error"] for r in runs]
    best = [min(x["test_error"] for x in r) for r in runs]
    row = cells["l=1"]
    assert row["ours (%)"] == f"{statistics.median(last):.2f}"
    if statistics.median(best) != statistics.median(last):
        assert row["ours (%)"] != f"{statistics.median(best):.2f}"
    assert row["n"] == "2"
    assert row["min–max (%)"] == f"{min(last):.2f}–{max(last):.2f}"
    # Parameters: counted from the model name for the data set trained (1 channel, 10 classes) = what ran.
    assert runs[0][-1]["n_parameters"] == 2_243_258
    assert row["params ours / paper (M)"] == "2.24 / 2.2"
    per_epoch = statistics.median(statistics.mean(x["train_time"] for x in r) for r in runs)
    assert row["train time / epoch (s)"] == f"{per_epoch:.1f}"
    assert row[header[8]] == (f"{total:.1f}" if total < 120 else f"{total / 60:.1f}")
    assert row["precision"] == "fp32"
    assert row["status"] == "2 of 2 done"
    assert cells["l=3"]["ours (%)"] == "—" and cells["l=3"]["status"] == "0 of 2 done, 2 missing"
    # The figure and a self-contained HTML page: images inline, nothing fetched from the network.
    page = (tmp_path / "r" / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 1
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert (tmp_path / "r" / "table3-vs-paper.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for n in (1, 2, 3, 4):
        assert f"l={n}" in page


def test_report_shows_stopped_running_and_failed_runs(killed_grid, tmp_path):
    """A partial copy of the grid: one run stopped after epoch 1, then held by a process, then failed."""
    import shutil

    from wrn.reproduce.report import write_report

    out = tmp_path / "t3"
    shutil.copytree(killed_grid["out"], out)
    run = out / ROW / "seed-1"
    for name in ("model.json", "model.safetensors"):
        (run / name).unlink()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(lines[0] + "\n")
    epoch1 = json.loads(lines[0])["test_error"]

    def status() -> str:
        header, rows = md_table((write_report([out], tmp_path / "r") / "report.md").read_text(), "Table 3")
        return dict(zip(header, rows[0], strict=True))["status"]

    assert status() == f"1 of 2 done, 1 stopped, seed 1 at epoch 1/2: {epoch1:.2f}%"
    with open(out / ROW / "seed-1" / ".lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert status() == f"1 of 2 done, 1 running, seed 1 at epoch 1/2: {epoch1:.2f}%"
    (out / "logs" / f"{ROW}-seed-1.failed.json").write_text(
        json.dumps({"attempts": 2, "last_line": "wrn train: error: boom"})
    )
    assert status().startswith("1 of 2 done, 1 failed")
    assert "failed after 2 tries: wrn train: error: boom" in (tmp_path / "r" / "report.md").read_text()


def test_a_run_locked_by_another_process_is_waited_for(tmp_path):
    """Another process holds the run's lock and finishes it meanwhile: wait for it, then skip it."""
    from wrn.reproduce import grid as G
    from wrn.reproduce.experiments import EXPERIMENTS
    from wrn.reproduce.runner import run_local

    spec = G.RunSpec(tmp_path, EXPERIMENTS["table3"].row(ROW), 0)
    lock = RunLock(spec.lock_path)
    assert lock.acquire()

    def the_other_process_finishes():
        spec.dir.mkdir(parents=True, exist_ok=True)  # (the lock is a file inside the run's folder)
        (spec.dir / "model.safetensors").write_bytes(b"")
        (spec.dir / "model.json").write_text("{}")
        lock.release()

    threading.Timer(1.5, the_other_process_finishes).start()
    said: list[str] = []
    start = time.monotonic()
    summary = run_local([spec], jobs=1, gpus=[], say=said.append)
    assert time.monotonic() - start >= 1.4
    assert said == [f"waiting for 1 run(s) that another process is training: {ROW}/seed-0"]
    assert [o.status for o in summary.outcomes] == ["skipped"]
    assert not (tmp_path / "logs").exists()  # nothing was started


# --------------------------------------------------------------------------------------------- failures


def test_a_failing_run_is_retried_once_then_reported_with_its_last_log_line(tmp_path):
    out = tmp_path / "t3"
    env = {**ENV, "CUDA_VISIBLE_DEVICES": "4,7"}  # two "GPUs" to pin runs to (the runs use the CPU anyway)
    args = ["table3", "--dataset", "digits", "--epochs", "1", "--runs", "1", "--rows", ROW,
            "--set", "optim.batch_size=5000"]  # fmt: skip
    proc = wrn("reproduce", *args, "--jobs", "2", "--out", str(out), env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "2 at once on GPUs 4,7" in proc.stdout
    why = "batch size 5000 is larger than the digits training set"
    assert proc.stdout.count("trying once more") == 1
    assert "0 of 1 runs done (0 trained now, 0 before), 1 failed" in proc.stdout
    assert proc.stderr.count("FAILED") == 1 and why in proc.stderr
    log = (out / "logs" / f"{ROW}-seed-0.log").read_text()
    assert (
        log.count(f"=== wrn reproduce: start {ROW}/seed-0 on GPU 4 at") == 2
    )  # pinned to the first slot's GPU
    failed = json.loads((out / "logs" / f"{ROW}-seed-0.failed.json").read_text())
    assert failed["attempts"] == 2 and failed["returncode"] == 2 and why in failed["last_line"]
    from wrn.reproduce.report import write_report

    text = (write_report([out]) / "report.md").read_text()  # into OUT/report
    assert "| 0 of 1 done, 1 failed |" in text and f"failed after 2 tries: wrn train: error: {why}" in text


def _bad_cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    out = ["--out", str(tmp / "out")]
    digits = ["--dataset", "digits", "--epochs", "1", "--runs", "1"]
    return {
        "unknown-experiment": (["reproduce", "table10", *out], "unknown experiment 'table10'"),
        "unknown-option": (["reproduce", "table3", "--frobnicate", *out], "unrecognized arguments"),
        "missing-data": (
            ["reproduce", "table3", "--data-dir", str(tmp / "nodata"), *out],
            f"'wrn data download cifar10 --root {tmp / 'nodata'}'",
        ),
        "no-ray": (["reproduce", "table3", *digits, "--ray", "local", *out], "pip install 'wrn[ray]'"),
        "unreachable-ray": (["reproduce", "table3", *digits, "--ray", "127.0.0.1:9", *out], "cannot reach"),
        "zero-runs": (["reproduce", "table3", "--runs", "0", *out], "--runs 0"),
        "unknown-row": (["reproduce", "table3", "--rows", "wrn-99", *out], "--rows 'wrn-99' names no row"),
        "seed-override": (["reproduce", "table3", *digits, "--set", "run.seed=3", *out], "--set run.seed"),
        "bad-epochs": (["reproduce", "table3", "--dataset", "digits", "--epochs", "0", *out], "schedule.epochs = 0"),
        "report-no-runs": (["report", str(tmp / "empty")], "no runs found"),
    }  # fmt: skip


# Through a real process: argparse's own error, and Ray missing from the environment.
SUBPROCESS_BAD = ["unknown-option", "no-ray"]


@pytest.mark.parametrize("name", list(_bad_cases(Path("/x"))))
def test_bad_input_gives_one_sentence_exit_2_and_writes_nothing(name, tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "nodata").mkdir()
    args, words = _bad_cases(tmp_path)[name]
    before = sorted(tmp_path.rglob("*"))
    if name in SUBPROCESS_BAD:
        env = ENV
        if name == "no-ray":  # a `ray` that cannot be imported, first on the path
            (tmp_path / "noray" / "ray").mkdir(parents=True)
            (tmp_path / "noray" / "ray" / "__init__.py").write_text(
                "raise ImportError(\"No module named 'ray'\")\n"
            )
            env = {**ENV, "PYTHONPATH": f"{tmp_path / 'noray'}{os.pathsep}{ENV.get('PYTHONPATH', '')}"}
            before = sorted(tmp_path.rglob("*"))
        proc = wrn(*args, env=env, cwd=tmp_path)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    else:  # the same entry point in this process (no interpreter start): the suite stays fast
        from wrn.cli import main

        monkeypatch.chdir(tmp_path)
        rc = main(args)
        out, err = capsys.readouterr()
    assert rc == 2, out + err
    assert "Traceback" not in err and out == ""
    first = err.strip().splitlines()[0]
    assert first.startswith("wrn") and words in first, err
    if name == "unknown-option":  # argparse's sentence, then one short usage line
        assert err.strip().splitlines()[1:] == ["usage: wrn reproduce ... (see wrn reproduce --help)"], err
    else:
        assert err.strip().count("\n") == 0, err
    assert sorted(tmp_path.rglob("*")) == before  # no OUT, no report folder, no runs/ in the working folder


def test_dry_run_prints_every_runs_config_and_starts_nothing(tmp_path):
    proc = wrn("reproduce", "table6", "--dry-run", "--runs", "2", "--out", str(tmp_path / "t6"))
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "t6").exists()
    docs = re.split(r"\n(?=# \S+/seed-\d+: )", proc.stdout)[1:]
    assert len(docs) == 16 * 2
    by_key = {d.split(":", 1)[0][2:]: yaml.safe_load(d) for d in docs}
    t6, row = tmp_path / "t6", "svhn-wrn-16-4-dropout"  # the command the runner would give (train_args)
    assert (
        f"# {row}/seed-1: would start: wrn train --config {t6}/configs/{row}-seed-1.yaml --out {t6}/{row}/seed-1 "
        "--no-progress\n"
    ) in proc.stdout
    cfg = by_key["svhn-wrn-16-4-dropout/seed-1"]
    assert (cfg["model"]["name"], cfg["model"]["dropout"]) == ("wrn-16-4", 0.4)
    assert cfg["dataset"]["name"] == "svhn" and cfg["run"]["seed"] == 1
    assert (cfg["optim"]["lr"], cfg["schedule"]["epochs"], cfg["schedule"]["milestones"]) == (
        0.01,
        160,
        [80, 120],
    )
    cfg = by_key["cifar100-wrn-28-10-dropout/seed-0"]
    assert cfg["model"]["dropout"] == 0.3 and cfg["schedule"]["milestones"] == [60, 120, 160]
    assert cfg["dataset"]["root"] == str(Path.cwd() / "data")  # absolute: runs may start elsewhere (Ray)


def test_figure2_is_drawn_from_a_table5_grid(tmp_path):
    """`wrn reproduce figure2 --out <a table5 grid>` adds its runs to that grid; the report draws its curves."""
    from wrn.reproduce import grid as G
    from wrn.reproduce.report import write_report

    out = tmp_path / "t5"
    over = G.Overrides(("--dataset", "digits", "--epochs", "3"), {"dataset.name": "digits", "schedule.epochs": 3},
                       {"dataset": "digits", "data_dir": None, "epochs": 3, "image_size": None, "set": []})  # fmt: skip
    plan = G.make_plan("table5", out, 2, over)
    G.write_experiment(plan, None)
    # Runs of the thin and the wide net on CIFAR-10, as wrn train writes them (3 epochs, the lr drops at 3).
    for row, errors in (("cifar10-preact-resnet-164", (30, 20, 10)), ("cifar10-wrn-28-10", (20, 10, 5))):
        for seed in (0, 1):
            run = out / row / f"seed-{seed}"
            run.mkdir(parents=True)
            lines = [
                {"epoch": e, "lr": 0.1 if e < 3 else 0.02, "train_loss": 1.0 / e, "test_error": err + seed,
                 "train_time": 2.0, "test_time": 0.5}
                for e, err in zip((1, 2, 3), errors, strict=True)
            ]  # fmt: skip
            (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
            (run / "model.json").write_text("{}")
            (run / "model.safetensors").write_bytes(b"")
    proc = wrn("reproduce", "figure2", "--dataset", "digits", "--epochs", "3", "--out", str(out), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert len(re.findall(r"^# \S+/seed-\d: ", proc.stdout, re.M)) == 4 * 5  # figure2's rows only, 5 seeds
    assert "cifar10-wrn-28-10/seed-0: done: would be skipped" in proc.stdout
    text = (write_report([out], tmp_path / "r") / "report.md").read_text()
    assert "## Figure 2 — scaled down" in text
    assert "![Figure 2, CIFAR-10](figure2-cifar-10.png)" in text
    assert (tmp_path / "r" / "figure2-cifar-10.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "r" / "figure2-cifar-100.png").exists()  # no CIFAR-100 run has an epoch yet
    _, rows = md_table(text, "Table 5")
    wide = next(r for r in rows if r[0] == "WRN-28-10" and "CIFAR-10)" in r[1])
    assert wide[3:6] == ["5.50", "2", "5.00–6.00"]  # last epoch, median of seeds 0 and 1


# --------------------------------------------------------------------------------------------- figure 4


def test_report_of_a_figure4_json(tmp_path):
    doc = {
        "format": "wrn-bench-figure4",
        "version": 1,
        "machine": {"device": "cuda", "device_name": "Test GPU", "torch": "2.4.0", "cuda": "12.4", "threads": 8},
        "settings": {"batch_size": 32, "steps": 20, "warmup": 5, "amp": "bf16", "channels_last": True, "compile": False},
        "models": [
            {"name": n, "paper_ms": p, "ms": ms, "ms_min": ms * 0.9, "ms_max": ms * 1.1, "params": 1_000_000,
             "images_per_s": 32000 / ms}
            for n, p, ms in (("preact-resnet-164", 85.0, 20.0), ("preact-resnet-1001", 512.0, 110.0),
                             ("wrn-40-4", 68.0, 10.0), ("wrn-16-10", 164.0, 22.0), ("wrn-28-10", 312.0, 40.0))
        ],
        "ratios": [
            {"slow": "preact-resnet-1001", "fast": "wrn-40-4", "paper": 7.53, "ours": 11.0},
            {"slow": "preact-resnet-1001", "fast": "wrn-28-10", "paper": 1.64, "ours": 2.75},
            {"slow": "preact-resnet-164", "fast": "wrn-40-4", "paper": 1.25, "ours": None},
        ],
    }  # fmt: skip
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "figure4.json").write_text(json.dumps(doc))
    proc = wrn("report", str(bench), "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "r" / "report.md").read_text()
    header, rows = md_table(text, "Figure 4")
    assert header[:3] == ["model", "paper (ms, Titan X)", "ours (ms)"]
    assert rows[1][:4] == ["preact-resnet-1001", "512", "110", "99.0–121"]
    assert "nreliable" not in text  # 20 steps, 1.2x apart
    assert "| preact-resnet-1001 / wrn-40-4 | 7.53 | 11.00 |" in text
    assert "| preact-resnet-164 / wrn-40-4 | 1.25 | — |" in text
    assert "Test GPU" in text
    assert (tmp_path / "r" / "figure4.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The estimate of GPU-hours can use the measured speed instead of the assumed one.
    listing = wrn("reproduce", "list", "--bench", str(bench / "figure4.json"))
    assert listing.returncode == 0, listing.stderr
    assert "measured for WRN-28-10" in listing.stdout


# --------------------------------------------------------------------------------------------- Ray


def test_a_local_ray_instance_runs_a_grid_two_runs_at_once(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    args = ["table3", "--dataset", "digits", "--epochs", "1", "--runs", "1", "--set", "model.name=wrn-10-1",
            "--rows", "cifar10-wrn-40-2-l1-zca,cifar10-wrn-40-2-l2-zca", "--ray", "local", "--out", str(out)]  # fmt: skip
    proc = wrn("reproduce", *args, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 of 2 runs done (2 trained now, 0 before), 0 failed" in proc.stdout
    spans = []
    for n in (1, 2):
        row = f"cifar10-wrn-40-2-l{n}-zca"
        run = out / row / "seed-0"
        assert [r["epoch"] for r in metrics(run)] == [1]
        assert yaml.safe_load((run / "config.yaml").read_text())["model"]["name"] == "wrn-10-1"
        # from the moment the task started its `wrn train` (the log's first line) to its final weights
        first = (out / "logs" / f"{row}-seed-0.log").read_text().splitlines()[0]
        started = datetime.fromisoformat(first.split(" at ")[1].split(": ")[0]).timestamp()
        spans.append((started, (run / "model.json").stat().st_mtime))
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1, f"the two runs did not overlap: {spans}"
    assert not pids_with(str(out))  # Ray's workers are gone, and their runs with them


def kill_a_ray_worker(tmp_path: Path, epochs: int, *options: str) -> tuple[Path, str]:
    """A Table 3 run on Ray whose worker is killed (SIGKILL) once the run has trained an epoch: the run's folder
    and log, after the grid's command ended well. Before the kill, the run leads a process group of its own:
    Ray kills a dead worker's group at once (SIGKILL), before a run there could save a checkpoint."""
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    run = out / ROW / "seed-0"
    args = ["reproduce", "table3", "--dataset", "digits", "--epochs", str(epochs), "--runs", "1", "--rows", ROW,
            *options, "--ray", "local", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "wrn", *args], env=ENV, stdout=subprocess.PIPE, text=True)
    start = time.monotonic()
    while epochs_logged(run) < 1:
        assert proc.poll() is None and time.monotonic() - start < 300
        time.sleep(0.05)
    (child,) = pids_with(str(run))
    worker = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert os.getpgid(child) == child != os.getpgid(worker)
    os.kill(worker, signal.SIGKILL)  # the Ray worker that runs the task, not the run itself
    stdout, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, stdout
    assert "1 of 1 runs done (1 trained now, 0 before), 0 failed" in stdout
    log = (out / "logs" / f"{ROW}-seed-0.log").read_text()
    # the run got the SIGTERM of its parent's death, saved a checkpoint, and the retried task resumed it
    assert "SIGTERM received: checkpoint saved" in log and "=== wrn reproduce: resume" in log
    assert [r["epoch"] for r in metrics(run)] == list(range(1, epochs + 1))
    assert f"epoch 1/{epochs} " not in log.split("=== wrn reproduce: resume")[1]  # not trained again
    return run, log


def test_a_ray_worker_that_dies_has_its_run_retried_and_resumed(tmp_path):
    kill_a_ray_worker(tmp_path, 8, "--set", "model.name=wrn-10-1")  # 8 epochs of about 0.4 s


@pytest.mark.slow
def test_a_ray_worker_that_dies_during_long_steps_loses_no_epoch(tmp_path):
    # WRN-40-2-l1 steps take seconds: Ray's kill of the worker's group came first, the checkpoint of the
    # epoch was never written and the retry trained the run from its start again
    kill_a_ray_worker(tmp_path, 2)
