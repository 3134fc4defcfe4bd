"""Faults of a training run, made to happen: a second process on the same run, weights that blow up, a
resume that must change nothing when it fails, a SIGTERM during the start-up, a kill before curves.png."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import WRN_ENV, metrics, run_wrn, run_wrn_killed_at, snapshot, start_wrn
from wrn.cli import main
from wrn.train import checkpoint as ckpt
from wrn.train.rundir import RunDir, RunLock

TINY = ["--preset", "demo", "--model", "wrn-10-1", "--batch-size", "256", "--no-progress"]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    """A 1-epoch run, extendable: its checkpoint is a real 'partial' run for --resume --epochs 2."""
    run = tmp_path_factory.mktemp("faults") / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(run)]) == 0
    return run


def test_a_second_process_on_a_run_is_refused_naming_the_holder(stopped, capsys):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from wrn.train.rundir import RunLock; "
            f"lock = RunLock({str(RunDir(stopped).lock)!r}); assert lock.acquire(); print('held', flush=True); "
            "time.sleep(60)",
        ],
        env=WRN_ENV,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(stopped)
        assert main(["train", "--resume", str(stopped), "--epochs", "2"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"is being trained by process {holder.pid}" in err[0], err
        assert snapshot(stopped) == before  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_a_run_named_by_another_path_is_the_same_run(stopped, tmp_path, capsys):
    """The lock is a file inside the run folder: a second `wrn train --resume` is refused whether it names the
    run by a symlink, by `.` from inside it, or through a bind mount."""
    run = shutil.copytree(stopped, tmp_path / "LK")
    (tmp_path / "LKlink").symlink_to(run)
    trainer = start_wrn("train", "--resume", run, "--epochs", "100")
    try:
        deadline = time.monotonic() + 120
        while RunLock(RunDir(run).lock).holder() != trainer.pid and time.monotonic() < deadline:
            assert trainer.poll() is None, trainer.communicate()
            time.sleep(0.05)
        names = [tmp_path / "LKlink", Path(".")]
        bind = tmp_path / "LKbind"
        bind.mkdir()
        if subprocess.run(["mount", "--bind", str(run), str(bind)], capture_output=True).returncode == 0:
            names.append(bind)
        here = os.getcwd()
        try:
            for name in names:
                os.chdir(run if name == Path(".") else here)
                assert main(["train", "--resume", str(name), "--epochs", "100"]) == 2
                err = capsys.readouterr().err
                assert err == (
                    f"wrn train: error: {name} is being trained by process {trainer.pid} right now; wait for it "
                    f"to finish, or stop it first (kill {trainer.pid})\n"
                )
        finally:
            os.chdir(here)
            subprocess.run(["umount", str(bind)], capture_output=True)
        assert trainer.poll() is None  # the first one trained on, alone
        trainer.send_signal(signal.SIGTERM)
        trainer.communicate(timeout=120)
    finally:
        trainer.kill()
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, len(epochs) + 1))  # one process wrote them: no epoch twice
    if len(names) < 3:
        pytest.skip("bind mounts are refused here: the symlink and `.` were checked")


def test_a_lock_left_by_a_dead_process_never_blocks(stopped, tmp_path):
    run = shutil.copytree(stopped, tmp_path / "copy")
    dead = subprocess.run([sys.executable, "-c", "pass"])
    RunDir(run).lock.write_text("999999\n")  # a PID file with no flock behind it, as a killed process leaves
    assert dead.returncode == 0
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    assert RunDir(run).state() == "done"


def test_the_lock_is_held_for_the_run_s_lifetime(tmp_path):
    """A run long enough to be caught training (100 epochs): while it trains the lock is its, and a SIGTERM
    stops it with a checkpoint and releases the lock."""
    run = tmp_path / "run"
    proc = start_wrn("train", *TINY, "--epochs", "100", "--out", run, "--checkpoint-every", "2steps")
    try:
        deadline = time.monotonic() + 240
        while not RunDir(run).checkpoint.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before its lock could be looked at"
        lock = RunLock(RunDir(run).lock)
        assert not lock.acquire()
        assert lock.holder() == proc.pid
        proc.send_signal(signal.SIGTERM)
    finally:
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert lock.acquire()  # released with the process
    lock.release()


def test_weights_that_blow_up_are_never_checkpointed(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(
        ["train", *TINY, "--epochs", "2", "--lr", "1e6", "--checkpoint-every", "1steps", "--out", str(run)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "NaN or infinite" in err and "Traceback" not in err
    assert "the last good checkpoint (" in err and str(run) in err
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    tensors = [t for t in state["model"].values() if t.is_floating_point()]
    tensors += [t for s in state["optimizer"]["state"].values() for t in s.values() if torch.is_tensor(t)]
    assert tensors and all(torch.isfinite(t).all() for t in tensors)


def test_a_failed_resume_changes_nothing(stopped, tmp_path, capsys):
    run = shutil.copytree(stopped, tmp_path / "corrupt")
    (run / "model.json").unlink()  # not finished: resume would train
    (run / "metrics.jsonl").write_text('{"epoch": 1}\nnot json\n{"epoch": 1}\n')
    before = snapshot(run)
    assert main(["train", "--resume", str(run), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "metrics.jsonl line 2 is not a JSON object" in err
    assert snapshot(run) == before  # config.yaml not rewritten with epochs: 2


def test_an_invalid_config_yaml_of_a_started_run_is_kept_aside(stopped, tmp_path):
    run = shutil.copytree(stopped, tmp_path / "edited")
    (run / "config.yaml").write_text("model: [unclosed\n")
    with pytest.warns(UserWarning, match="no longer a valid config"):
        assert main(["train", "--resume", str(run), "--epochs", "2"]) == 0
    assert (run / "config.edited.yaml").read_text() == "model: [unclosed\n"
    assert "wrn-10-1" in (run / "config.yaml").read_text()


def _catches_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc to time the signal")
def test_sigterm_during_the_start_up_saves_and_says_how_to_continue(tmp_path):
    run = tmp_path / "run"
    proc = start_wrn("train", *TINY, "--epochs", "1", "--out", run)
    deadline = time.monotonic() + 60
    while not _catches_sigterm(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGTERM)  # during imports, data loading, building
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert f"continue with 'wrn train --resume {run}'" in err and "Traceback" not in err
    assert RunDir(run).state() == "partial"
    assert run_wrn("train", "--resume", run).returncode == 0
    assert RunDir(run).state() == "done"


@pytest.mark.parametrize("kind", ["rename", pytest.param("fsync", marks=pytest.mark.slow)])
def test_a_kill_at_any_write_of_a_longer_resume_is_finished_from_the_checkpoint(
    stopped, tmp_path, capsys, kind
):
    """`wrn train --resume R --epochs 2` on a finished 1-epoch run, killed (SIGKILL) at its writes (with
    WRN_SLOW=1 at each rename and each fsync; by default at the model pair's renames): the next resume ends
    with model files that hold the checkpoint's epoch-2 weights, and only then says the run is complete
    (before: the epoch-1 model beside an epoch-2 checkpoint was called complete)."""
    args = ("train", "--resume", "{run}", "--epochs", "2", "--no-progress")
    probe_run = shutil.copytree(stopped, tmp_path / "probe")
    probe = run_wrn_killed_at(kind, 0, *(a.format(run=probe_run) for a in args))
    assert probe.returncode == 0, probe.stderr
    total = int(re.search(rf"\b{kind}=(\d+)", probe.stderr.splitlines()[-1]).group(1))
    assert total >= (5 if kind == "rename" else 8)  # config, checkpoint, the model pair, curves.png
    # every call with WRN_SLOW=1; by default the model pair's two renames (the last but curves.png's)
    every = os.environ.get("WRN_SLOW") == "1"
    for n in range(1, total + 1) if every else (total - 2, total - 1):
        run = shutil.copytree(stopped, tmp_path / f"{kind}-{n}")
        killed = run_wrn_killed_at(kind, n, *(a.format(run=run) for a in args))
        assert killed.returncode == -signal.SIGKILL, (n, killed.stderr)
        assert main([a.format(run=run) for a in args]) == 0, n
        capsys.readouterr()
        state = ckpt.load(run)
        weights = load_file(str(run / "model.safetensors"))
        assert (
            state["epoch"] == 2 and json.loads((run / "model.json").read_text())["metadata"]["epochs"] == 2
        ), n
        assert all(torch.equal(weights[k], v) for k, v in state["model"].items()), n
        assert [r["epoch"] for r in metrics(run)] == [1, 2], n
        assert main([a.format(run=run) for a in args]) == 0
        assert "is complete: 2 of 2 epochs trained" in capsys.readouterr().out, n


def test_a_finished_run_whose_weights_were_deleted_is_written_again_from_its_checkpoint(
    stopped, tmp_path, capsys
):
    run = shutil.copytree(stopped, tmp_path / "lost")
    (run / "model.safetensors").unlink()
    assert RunDir(run).state() == "partial"  # a grid resumes it rather than skip it as done
    assert main(["train", "--resume", str(run)]) == 0
    state, weights = ckpt.load(run), load_file(str(run / "model.safetensors"))
    assert all(torch.equal(weights[k], v) for k, v in state["model"].items())
    assert RunDir(run).state() == "done" and snapshot(run).keys() == snapshot(stopped).keys()


def test_a_resume_never_shortens_a_recipe_s_lr_drops_away(tmp_path, capsys, monkeypatch):
    """A 30-epoch demo run (drops at 15, 22, 27) stopped in its first epoch: `--resume --epochs 3` is refused
    in one sentence (before: all three epochs ran at lr 0.1, every drop lost), and nothing is written."""
    from wrn.train.step import TrainStep

    original, calls = TrainStep.__call__, [0]

    def step(self, images, labels):
        calls[0] += 1
        if calls[0] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, images, labels)

    monkeypatch.setattr(TrainStep, "__call__", step)
    run = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "30", "--out", str(run)]) == 128 + signal.SIGTERM
    monkeypatch.undo()
    capsys.readouterr()
    before = snapshot(run)
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 2
    assert capsys.readouterr().err == (
        "wrn train: error: --epochs 3 would shorten this 30-epoch run, whose lr drops (at epochs 15, 22, 27) are "
        "the recipe's for 30 epochs, where a 3-epoch run drops at 2, 3; start a new run with --epochs 3, or "
        "resume with --epochs 30 or more\n"
    )
    assert snapshot(run) == before


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc to time the signal")
def test_a_second_sigterm_stops_a_start_up_that_does_not_end(tmp_path):
    """A start-up stuck in reading its data (a loader that never returns): the first SIGTERM is kept for the
    save that start-up never reaches, the second stops the process at once, in one sentence."""
    stuck = (
        "import sys, time; import wrn.train.run as run; "
        "run.build_loaders = lambda *a, **k: time.sleep(600); "
        "from wrn.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", stuck, "train", *TINY, "--epochs", "1", "--out", str(tmp_path / "run")],
        env=WRN_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not _catches_sigterm(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(1.0)  # into the loader
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert proc.poll() is None  # the first one waits for the save
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert (
        err.strip().splitlines()[-1]
        == "wrn train: SIGTERM received a second time: stopped at once, without saving"
    )


def test_resume_of_a_complete_run_draws_missing_curves(stopped, tmp_path):
    run = shutil.copytree(stopped, tmp_path / "done")
    (run / "curves.png").rename(run / ".curves.png.Ab3dE9xZ.tmp.png")  # a kill while it was being written
    (run / ".curves.png.Ab3dE9xZ.tmp.png").write_bytes(b"\x89PNG half")
    before = {k: v for k, v in snapshot(run).items() if not k.startswith(".curves")}
    assert main(["train", "--resume", str(run)]) == 0
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (run / ".curves.png.Ab3dE9xZ.tmp.png").exists()  # the kill's leftover is gone
    assert {k: v for k, v in snapshot(run).items() if k != "curves.png"} == before
