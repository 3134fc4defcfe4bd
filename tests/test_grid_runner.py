"""The grid runner's outcomes through the real ``wrn reproduce``: a run stopped by SIGTERM or Ctrl-C, a run
killed by a fault and retried, a run that fails twice and is recorded, a run another process holds, and the
config file each run trains.

One row of Table 3 on the bundled digits, with WRN-10-1 so that a run takes seconds. Where no real process
is needed the command runs in this process (``wrn.cli.main``).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

ROW = "cifar10-wrn-40-2-l1-zca"
KEY = f"{ROW}/seed-0"
EPOCHS = 8  # about 0.4 s each: a run is stopped or killed after its first, long before its last


def grid(out: Path) -> list[str]:
    return ["reproduce", "table3", "--dataset", "digits", "--epochs", str(EPOCHS), "--runs", "1", "--rows", ROW,
            "--set", "model.name=wrn-10-1", "--out", str(out)]  # fmt: skip


def log_of(out: Path) -> Path:
    return out / "logs" / f"{ROW}-seed-0.log"


def epochs_of(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    text = path.read_text() if path.is_file() else ""
    return [json.loads(line)["epoch"] for line in text.splitlines() if line.endswith("}")]


def assert_done_line(out: Path, seconds_and_error: str) -> None:
    """``[1/1] done KEY in S s: test error E%``, E the last epoch's test error of the run's metrics."""
    m = re.fullmatch(
        rf"\[1/1\] done {re.escape(KEY)} in \d+\.\d s: test error (\d+\.\d\d)%", seconds_and_error
    )
    assert m, seconds_and_error
    last = json.loads((out / ROW / "seed-0" / "metrics.jsonl").read_text().splitlines()[-1])
    assert m.group(1) == f"{last['test_error']:.2f}"


def reproduce(args: list[str], capsys, monkeypatch) -> tuple[int, list[str], str]:
    """``wrn reproduce ARGS`` in this process: exit code, stdout lines after the header, stderr."""
    from wrn.cli import main

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the runs it starts: one thread each
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out.splitlines()[1:], err


def child_of_this_process(run: Path) -> int | None:
    """The pid of this process's child that trains ``run`` (its command line names the folder)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        if ppid == os.getpid() and str(run) in cmdline:
            return int(entry.name)
    return None


def ignore_sigint() -> None:
    """What a shell script does to the jobs it starts in the background: SIGINT ignored, inherited."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_a_grid(out: Path, signum: int, sigint_ignored: bool = False) -> tuple[int, str, str]:
    """Start the grid as a real process and send it ``signum`` once its run has trained an epoch;
    ``sigint_ignored``: started as a background job of a script starts it, with SIGINT ignored."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "wrn", *grid(out)]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=ignore_sigint if sigint_ignored else None,
    )  # fmt: skip
    start = time.monotonic()
    while not epochs_of(out / ROW / "seed-0"):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - start < 240, "the run did not train an epoch"
        time.sleep(0.02)
    proc.send_signal(signum)  # to the orchestrator only: it must stop its run itself
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout, stderr


def assert_stopped(out: Path, signum: int, result: tuple[int, str, str]) -> None:
    rc, stdout, stderr = result
    assert rc == 128 + signum, stdout + stderr
    assert stdout.splitlines()[1:] == [
        f"[1/1] start {KEY}: log {log_of(out)}",
        "stopping 1 run(s): each saves a checkpoint first (Ctrl-C again to kill them now)",
    ]
    assert (
        stderr == "wrn reproduce: stopped; run the same command again to continue (finished runs are kept)\n"
    )
    run = out / ROW / "seed-0"
    assert "SIGTERM received: checkpoint saved" in log_of(out).read_text()
    assert (run / "checkpoint.pt").is_file() and not (run / "model.json").exists()
    assert 1 <= len(epochs_of(run)) < EPOCHS
    assert not (out / "logs" / f"{ROW}-seed-0.failed.json").exists()  # a stop is no failure


@pytest.fixture(scope="module")
def sigterm(tmp_path_factory) -> tuple[Path, tuple[int, str, str]]:
    """A grid stopped by SIGTERM while its run trains, and what the command said."""
    out = tmp_path_factory.mktemp("stopped") / "t3"
    return out, stop_a_grid(out, signal.SIGTERM)


@pytest.fixture
def stopped(sigterm, tmp_path) -> Path:
    """A copy of that grid, with its partial run."""
    out = tmp_path / "t3"
    shutil.copytree(sigterm[0], out)
    return out


# --------------------------------------------------------------------------------------------- stops


def test_sigterm_stops_the_grid_and_its_run_saves_a_checkpoint(sigterm):
    out, result = sigterm
    assert_stopped(out, signal.SIGTERM, result)


@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_ctrl_c_stops_the_grid_the_same_way(tmp_path, inherited):
    # "ignored": a grid started in the background by a script gets SIGINT ignored; its runs stop on Ctrl-C
    # whatever they inherit, so the grid must too (it once trained on to the end and exited 0)
    out = tmp_path / "t3"
    assert_stopped(out, signal.SIGINT, stop_a_grid(out, signal.SIGINT, sigint_ignored=inherited == "ignored"))


# --------------------------------------------------------------------------------------------- outcomes


def test_a_run_another_process_holds_is_waited_for_then_resumed(stopped, capsys, monkeypatch):
    out = stopped
    run = out / ROW / "seed-0"
    trained = epochs_of(run)
    with open(run / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process is training the run
        threading.Timer(1.5, lambda: fcntl.flock(lock, fcntl.LOCK_UN)).start()
        start = time.monotonic()
        rc, lines, err = reproduce(grid(out), capsys, monkeypatch)
    assert rc == 0, "\n".join(lines) + err
    assert time.monotonic() - start >= 1.5
    assert lines[:2] == [
        f"waiting for 1 run(s) that another process is training: {KEY}",
        f"[1/1] resume {KEY}: log {log_of(out)}",
    ]
    assert_done_line(out, lines[2])
    assert lines[3:] == [f"1 of 1 runs done (1 trained now, 0 before), 0 failed. Report: wrn report {out}"]
    assert epochs_of(run) == list(range(1, EPOCHS + 1)) and epochs_of(run)[: len(trained)] == trained


def test_a_run_that_fails_twice_is_recorded_until_it_trains(stopped, capsys, monkeypatch):
    out = stopped
    run = out / ROW / "seed-0"
    failed = out / "logs" / f"{ROW}-seed-0.failed.json"
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])  # a torn checkpoint: every resume fails
    rc, lines, err = reproduce(grid(out), capsys, monkeypatch)
    assert rc == 1, "\n".join(lines) + err
    record = json.loads(failed.read_text())
    why = record["last_line"]
    assert why.startswith("wrn train: error: ") and "is corrupt or not a training checkpoint" in why
    assert lines == [
        f"[1/1] resume {KEY}: log {log_of(out)}",
        f"failed {KEY} (exit 2): {why}; trying once more",
        f"[1/1] resume (retry) {KEY}: log {log_of(out)}",
        f"[1/1] FAILED {KEY} (exit 2) after 2 tries: {why}",
        f"0 of 1 runs done (0 trained now, 0 before), 1 failed. Report: wrn report {out}",
    ]
    assert err == f"FAILED {KEY} after 2 tries: {why}\n"
    assert (record["run"], record["returncode"], record["attempts"]) == (KEY, 2, 2)
    assert record["log"] == str(log_of(out))
    # The user starts the run again from nothing: it trains, and its failure record goes.
    shutil.rmtree(run)
    rc, lines, err = reproduce(grid(out), capsys, monkeypatch)
    assert rc == 0, "\n".join(lines) + err
    assert lines[0] == f"[1/1] start {KEY}: log {log_of(out)}"
    assert_done_line(out, lines[1])
    assert not failed.exists() and epochs_of(run) == list(range(1, EPOCHS + 1))


def test_a_run_killed_by_a_fault_is_retried_from_its_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "t3"
    run = out / ROW / "seed-0"
    killed: list[int] = []

    def kill_it_after_an_epoch():  # as the kernel's OOM killer would
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            pid = child_of_this_process(run)
            if pid is not None and epochs_of(run):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_it_after_an_epoch)
    watcher.start()
    rc, lines, err = reproduce(grid(out), capsys, monkeypatch)
    watcher.join()
    assert killed and rc == 0, "\n".join(lines) + err
    assert lines[0] == f"[1/1] start {KEY}: log {log_of(out)}"
    assert lines[1].startswith(f"failed {KEY} (exit -9): ") and lines[1].endswith("; trying once more")
    assert lines[2] == f"[1/1] resume (retry) {KEY}: log {log_of(out)}"
    assert_done_line(out, lines[3])
    assert lines[4:] == [f"1 of 1 runs done (1 trained now, 0 before), 0 failed. Report: wrn report {out}"]
    log = log_of(out).read_text()
    assert log.count("=== wrn reproduce: start") == 1 and log.count("=== wrn reproduce: resume") == 1
    assert epochs_of(run) == list(range(1, EPOCHS + 1)) and (run / "model.safetensors").is_file()
    assert not (out / "logs" / f"{ROW}-seed-0.failed.json").exists()


# --------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "name, values",
    [
        ("table6", {"dataset.name": "digits", "schedule.epochs": 7, "model.name": "wrn-10-1"}),
        ("table7", {"schedule.epochs": 5, "optim.lr": 0.05, "dataset.root": "/data/imagenet"}),
        ("table3", {}),
    ],
)
def test_each_runs_config_file_is_its_whole_config(name, values, tmp_path):
    """What `wrn train --config FILE` builds from a run's config file is the config the grid validated."""
    from wrn.reproduce import grid as G
    from wrn.train.compose import build_config

    plan = G.make_plan(name, tmp_path / "out", 2, G.Overrides(values=values))
    assert len(plan.configs) == 2 * len(plan.experiment.runnable_rows)
    for spec in plan.runs:
        G.write_config(plan, spec)
        data = yaml.safe_load(spec.config_path.read_text())
        assert set(data) == {"preset", "description", "model", "dataset", "optim", "schedule", "objective",
                             "adv", "ssl", "run", "provenance"}  # fmt: skip
        cfg = build_config(None, str(spec.config_path))
        assert cfg == plan.resolved[spec.key], spec.key
        assert cfg.run.seed == spec.seed and cfg.model.name == values.get("model.name", spec.row.model)
        for key, value in values.items():
            section, field = key.split(".")
            assert getattr(getattr(cfg, section), field) == value, (spec.key, key)
