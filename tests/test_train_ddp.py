"""Several processes: a 2-process gloo ``torchrun`` on CPU, one run directory, identical weights."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file

from conftest import metrics

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

DRIVER = textwrap.dedent(
    """
    import os, signal, sys, torch
    from wrn.errors import Interrupted
    from wrn.train import build_config, train

    out, dump, stop_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cfg = build_config("demo", overrides={
        "model.name": "wrn-10-1", "model.dropout": 0.2, "schedule.epochs": 2, "schedule.milestones": [2],
        "optim.batch_size": 64, "run.device": "cpu", "run.progress": False, "run.checkpoint_every_steps": 4,
    })
    if stop_at and os.environ["RANK"] == "1":  # SIGTERM reaches one rank only, mid-epoch
        from wrn.train.step import TrainStep

        original, calls = TrainStep.__call__, [0]

        def step(self, images, labels):
            calls[0] += 1
            if calls[0] == stop_at:
                os.kill(os.getpid(), signal.SIGTERM)
            return original(self, images, labels)

        TrainStep.__call__ = step
    try:
        result = train(cfg, out, verbose=True)
    except Interrupted as exc:
        print("interrupted:", exc)
        sys.exit(0)
    torch.save(result.model.state_dict(), os.path.join(dump, f"rank{os.environ['RANK']}.pt"))
    """
)


def torchrun(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [*TORCHRUN, *args], env=ENV, capture_output=True, text=True, timeout=900
    )  # loaded CI: up to 296 s seen
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_two_process_gloo_run_and_a_mid_epoch_resume_end_bitwise_equal(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    straight, dump = tmp_path / "straight", tmp_path / "dump"
    dump.mkdir()
    proc = torchrun(str(script), str(straight), str(dump), "0")
    assert proc.stdout.count("run directory:") == 1  # only rank 0 speaks

    rank0 = torch.load(dump / "rank0.pt", weights_only=True)
    rank1 = torch.load(dump / "rank1.pt", weights_only=True)
    saved = load_file(str(straight / "model.safetensors"))
    assert rank0.keys() == rank1.keys() == saved.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
        assert torch.equal(rank0[key], saved[key]), key
    # rank 0 alone wrote the run (and took its lock, beside it)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["driver.py", "dump", "straight"]
    state = torch.load(straight / "checkpoint.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    assert not any(k.startswith("module.") for k in state["model"])
    # 1437 digits split over 2 ranks, 32 images per rank and step.
    assert state["schedule"]["steps_per_epoch"] == 1437 // 2 // 32 == 22

    # Rank 1 alone gets SIGTERM at its 25th step (epoch 2); the ranks agree to stop at the next sync point,
    # save one checkpoint and exit. The real command line under torchrun then finishes the run.
    stopped = tmp_path / "stopped"
    proc = torchrun(str(script), str(stopped), str(dump), "25")
    assert "SIGTERM received: checkpoint saved at epoch 2, step 8" in proc.stdout
    assert not (stopped / "model.safetensors").exists() and len(metrics(stopped, timings=False)) == 1
    torchrun("-m", "wrn", "train", "--resume", str(stopped), "--no-progress")
    final = load_file(str(stopped / "model.safetensors"))
    assert final.keys() == saved.keys()
    for key in saved:
        assert torch.equal(final[key], saved[key]), key
    assert metrics(stopped, timings=False) == metrics(straight, timings=False) and [
        r["epoch"] for r in metrics(stopped, timings=False)
    ] == [1, 2]
    assert (stopped / "curves.png").is_file()


def test_adversarial_training_under_two_processes(tmp_path):
    """The attack inside the step under DDP (its passes prepare no gradient reduction): the real command
    line under torchrun trains, and each process's attack draws its starts from a stream of its own, kept in
    the checkpoint."""
    out = tmp_path / "adv"
    torchrun("-m", "wrn", "train", "--preset", "demo", "--model", "wrn-10-1", "--epochs", "1", "--batch-size", "64",
             "--adv", "pgd", "--adv-steps", "2", "--adv-eps", "32/255", "--out", str(out), "--no-progress")  # fmt: skip
    (record,) = metrics(out, timings=False)
    assert record["epoch"] == 1 and record["test_error"] < 60
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["config"]["adv"]["method"] == "pgd" and len(state["ranks"]) == 2
    starts = [rank["objective"]["generator"] for rank in state["ranks"]]
    assert not torch.equal(starts[0], starts[1])


AWP_DRIVER = textwrap.dedent(
    """
    import os, sys, torch
    from wrn.train import build_config, train

    out, dump = sys.argv[1], sys.argv[2]
    cfg = build_config("demo", overrides={
        "model.name": "wrn-10-1", "schedule.epochs": 1, "optim.batch_size": 64, "run.device": "cpu",
        "run.progress": False, "adv.method": "pgd", "adv.steps": 1, "adv.awp": 0.01,
    })
    result = train(cfg, out, verbose=False)
    torch.save(result.model.state_dict(), os.path.join(dump, f"rank{os.environ['RANK']}.pt"))
    """
)


def test_awp_under_two_processes_keeps_the_weights_identical(tmp_path):
    """AWP's perturbation is added before the step and subtracted after it; its proxy's gradient is averaged
    over the processes, so that every process moves its weights by the same amount and they end equal, bit
    for bit."""
    script = tmp_path / "driver.py"
    script.write_text(AWP_DRIVER)
    dump = tmp_path / "dump"
    dump.mkdir()
    torchrun(str(script), str(tmp_path / "awp"), str(dump))
    rank0 = torch.load(dump / "rank0.pt", weights_only=True)
    rank1 = torch.load(dump / "rank1.pt", weights_only=True)
    for key in rank0:
        if "running" not in key and "num_batches" not in key:  # (BN statistics are each rank's own)
            assert torch.equal(rank0[key], rank1[key]), key


def test_fixmatch_under_two_processes(tmp_path):
    """FixMatch under DDP: each process takes its share of the labelled batch and mu times it of unlabelled
    images, each from its shard of its loader, and keeps its unlabelled loader's position in the checkpoint."""
    out = tmp_path / "fixmatch"
    torchrun("-m", "wrn", "train", "--preset", "demo", "--model", "wrn-10-1", "--epochs", "1", "--batch-size", "32",
             "--labels", "40", "--epoch-steps", "6", "--ssl", "fixmatch", "--mu", "2", "--threshold", "0.5",
             "--workers", "0", "--out", str(out), "--no-progress")  # fmt: skip
    (record,) = metrics(out, timings=False)
    assert record["epoch"] == 1 and "median20_test_error" in record
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    unlabelled = [rank["objective"]["unlabelled"] for rank in state["ranks"]]
    assert [(u["position"], u["batch_size"], u["world_size"]) for u in unlabelled] == [(6, 32, 2)] * 2
    assert [rank["loader"]["position"] for rank in state["ranks"]] == [0, 0]  # (the labelled epoch ended)
