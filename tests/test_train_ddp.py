"""Several processes: a 2-process gloo ``torchrun`` on CPU, one run directory, identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

DRIVER = textwrap.dedent(
    """
    import os, sys, torch
    from wrn.train import build_config, train

    out, dump = sys.argv[1], sys.argv[2]
    cfg = build_config("demo", overrides={
        "model.name": "wrn-10-1", "model.dropout": 0.2, "schedule.epochs": 1, "optim.batch_size": 64,
        "run.device": "cpu", "run.progress": False, "run.checkpoint_every_steps": 4,
    })
    result = train(cfg, out)
    torch.save(result.model.state_dict(), os.path.join(dump, f"rank{os.environ['RANK']}.pt"))
    """
)


def test_two_process_gloo_run_and_resume(tmp_path):
    out, dump = tmp_path / "run", tmp_path / "dump"
    dump.mkdir()
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = subprocess.run(
        [*TORCHRUN, str(script), str(out), str(dump)], env=ENV, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run directory:") == 1  # only rank 0 speaks

    rank0 = torch.load(dump / "rank0.pt", weights_only=True)
    rank1 = torch.load(dump / "rank1.pt", weights_only=True)
    saved = load_file(str(out / "model.safetensors"))
    assert rank0.keys() == rank1.keys() == saved.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
        assert torch.equal(rank0[key], saved[key]), key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["driver.py", "dump", "run"]

    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    assert not any(k.startswith("module.") for k in state["model"])
    # 1437 digits split over 2 ranks, 32 images per rank and step.
    assert state["schedule"]["steps_per_epoch"] == 1437 // 2 // 32

    # The real command line under torchrun continues the run for one more epoch.
    proc = subprocess.run(
        [*TORCHRUN, "-m", "wrn", "train", "--resume", str(out), "--epochs", "2", "--no-progress"],
        env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[-1]["test_acc"] > 20.0
    assert Path(out / "curves.png").is_file()
