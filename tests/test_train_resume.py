"""Resume that loses nothing: kill -9 at any moment, SIGINT/SIGTERM, torn checkpoint writes, NaN losses."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
import torch
from safetensors.torch import load_file

from conftest import WRN_ENV as ENV
from conftest import assert_same_weights, kill_9_at_step, metrics
from conftest import start_wrn as wrn_cli
from wrn.atomic import remove_stale_temporaries
from wrn.errors import Interrupted, NonFiniteLoss
from wrn.train import checkpoint as ckpt
from wrn.train.compose import build_config
from wrn.train.run import resume, train
from wrn.train.step import TrainStep

# A small CPU run that exercises every piece of state: dropout (torch RNG), crop augmentation (the loader's
# generator), momentum buffers and their reset at the drops of epochs 2 and 3, BN statistics.
RUN_ARGS = [
    "train", "--preset", "demo", "--model", "wrn-10-1", "--epochs", "3", "--batch-size", "16",
    "--dropout", "0.3", "--augment", "crop", "--milestones", "2,3", "--checkpoint-every", "1steps",
    "--no-progress",
]  # fmt: skip


# every option of robust training at once: TRADES, AWP from the start, early stopping, generated data (AUX: a
# small .npz in their format, written by the test), the rotation of the CIFAR-100 recipes
ROBUST = ["--adv", "trades", "--adv-steps", "2", "--awp", "0.005", "--awp-warmup", "0", "--adv-holdout", "100",
          "--aux-data", "AUX", "--aux-fraction", "0.5", "--rotate", "15"]  # fmt: skip


# FixMatch on a labelled split with its strong views made in a worker process, and the average of the weights
# with copied BN statistics: epochs of 89 steps as the plain run's, 89 unlabelled batches of 16 a pass
SEMI = ["--labels", "100", "--epoch-steps", "89", "--ssl", "fixmatch", "--mu", "1", "--threshold", "0.5",
        "--ema", "0.99", "--ema-buffers", "copy", "--strong-on", "workers", "--workers", "1"]  # fmt: skip


@pytest.mark.parametrize("extra", [[], ROBUST, SEMI], ids=["plain", "robust", "semi-supervised"])
def test_kill_9_three_times_then_resume_gives_bitwise_identical_weights(tmp_path, extra):
    """Also with robust training (TRADES with AWP from the start, early stopping, generated data, rotation): the
    attack's random starts come from a generator saved in the checkpoint, the best epoch so far too, the
    generated images' draws from the loader's; AWP's proxy keeps nothing from step to step. And with
    FixMatch: the labelled stream's and the unlabelled loader's positions (the strong views drawn per batch
    from their seeds, in a worker), the average of the weights, the last epochs' accuracies of its median."""
    if "AUX" in extra:
        from test_data_aux import generated_file

        extra = [str(generated_file(tmp_path / "generated.npz")) if a == "AUX" else a for a in extra]
    slow = os.environ.get("WRN_SLOW") == "1"
    # by default 2 epochs, the drop at 2, and one kill around it; WRN_SLOW=1: 3 epochs, drops at 2 and 3, 3 kills
    run_args = [*RUN_ARGS, *extra] if slow else [*RUN_ARGS, *extra, "--epochs", "2", "--milestones", "2"]
    epochs = 3 if slow else 2
    straight = tmp_path / "straight"
    proc = wrn_cli(*run_args, "--out", str(straight))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err

    killed = tmp_path / "killed"
    rng = random.Random(1234)
    # 3 epochs x 89 steps; one kill early in epoch 1, one around the first drop, one in epoch 3 (WRN_SLOW=1);
    # by default the one around the first drop
    targets = [rng.randint(5, 60), rng.randint(85, 150), rng.randint(180, 230)]
    targets = targets if slow else targets[1:2]
    args = [*run_args, "--out", str(killed)]
    for target in targets:
        kill_9_at_step(killed, target, *args, pause=rng.uniform(0, 0.03))  # in a step, or a checkpoint write
        state = ckpt.load(killed)  # a kill never leaves a torn checkpoint
        assert state["global_step"] >= target
        args = ["train", "--resume", str(killed), "--no-progress"]
    proc = wrn_cli(*args)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "continuing" in out

    assert_same_weights(straight, killed)
    if "--adv-holdout" in extra:  # the best epoch's weights too
        assert_same_weights(straight / "best", killed / "best")
    assert metrics(straight, timings=False) == metrics(killed, timings=False)
    assert [r["epoch"] for r in metrics(killed, timings=False)] == list(range(1, epochs + 1))
    assert not list(killed.glob(".checkpoint.pt.*.tmp"))
    final = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert (final["epoch"], final["step"]) == (epochs, 0)


WRITER = textwrap.dedent(
    """
    import os, sys, torch
    from wrn.train.checkpoint import atomic_save
    path = sys.argv[1]
    big = torch.randn(4_000_000)
    i = torch.load(path, weights_only=True)["counter"] if os.path.exists(path) else 0
    while True:
        i += 1
        atomic_save({"counter": i, "payload": big + i}, path)
        print(i, flush=True)
    """
)


def test_kill_during_checkpoint_write_leaves_the_previous_checkpoint_usable(tmp_path):
    path = tmp_path / "checkpoint.pt"
    rng = random.Random(0)
    last = 0
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], env=ENV, stdout=subprocess.PIPE, text=True
        )
        proc.stdout.readline()  # at least one checkpoint is complete
        time.sleep(rng.uniform(0.0, 0.2))  # most of a writer's time is spent inside a write
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        state = torch.load(path, weights_only=True)  # never torn
        assert state["counter"] > last
        assert state["payload"].shape == (4_000_000,)
        last = state["counter"]
    remove_stale_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    ckpt.atomic_save({"n": 1}, path)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        ckpt.atomic_save({"n": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"n": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def _small_cfg(**overrides):
    base = {
        "model.name": "wrn-10-1",
        "schedule.epochs": 2,
        "schedule.milestones": [2],
        "optim.batch_size": 64,
        "model.dropout": 0.2,
        "run.progress": False,
    }
    return build_config("demo", overrides={**base, **overrides})


def test_sigterm_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    straight = train(_small_cfg(), tmp_path / "straight")

    from wrn.train.step import TrainStep

    original = TrainStep.__call__
    calls = {"n": 0}

    def step_then_signal(self, images, labels):
        out = original(self, images, labels)
        calls["n"] += 1
        if calls["n"] == 30:  # in epoch 2 (22 steps per epoch)
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(TrainStep, "__call__", step_then_signal)
    with pytest.raises(Interrupted, match="SIGTERM received: checkpoint saved at epoch 2, step 8") as info:
        train(_small_cfg(), tmp_path / "stopped")
    assert info.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    monkeypatch.undo()
    state = ckpt.load(tmp_path / "stopped")
    assert (state["epoch"], state["step"]) == (1, 8)
    assert len(metrics(tmp_path / "stopped", timings=False)) == 1

    resumed = resume(tmp_path / "stopped")
    for (ka, a), (kb, b) in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        assert ka == kb and torch.equal(a, b), ka
    assert metrics(tmp_path / "straight", timings=False) == metrics(tmp_path / "stopped", timings=False)


def test_checkpoint_is_plain_and_loads_with_weights_only(tmp_path):
    train(_small_cfg(**{"schedule.epochs": 1}), tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in state["model"])
    assert isinstance(state["config"], dict) and state["config"]["model"]["name"] == "wrn-10-1"
    assert state["optimizer"]["param_groups"][0]["nesterov"] is True
    assert set(state["ranks"][0]) == {"rng", "loader", "sums", "objective"}
    assert (state["epoch"], state["step"], state["world_size"]) == (1, 0, 1)


def test_resume_of_a_finished_run_can_extend_it(tmp_path):
    train(_small_cfg(**{"schedule.epochs": 1}), tmp_path / "run")
    result = resume(tmp_path / "run", epochs=2)
    assert [r["epoch"] for r in metrics(tmp_path / "run", timings=False)] == [1, 2]
    assert result.last["epoch"] == 2


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    class PoisonedLoss(torch.nn.CrossEntropyLoss):
        calls = 0

        def forward(self, logits, labels):
            PoisonedLoss.calls += 1
            loss = super().forward(logits, labels)
            return loss * float("nan") if PoisonedLoss.calls > 25 else loss

    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", PoisonedLoss)
    with pytest.raises(NonFiniteLoss, match="NaN or infinite.*last good checkpoint .* is kept"):
        train(_small_cfg(**{"run.checkpoint_every_steps": 2}), tmp_path / "run")
    state = ckpt.load(tmp_path / "run")
    # Epoch 1 (22 steps) ended well; steps 23-24 were checkpointed; step 26 turned NaN.
    assert (state["epoch"], state["step"]) <= (1, 4)
    assert (state["epoch"], state["step"]) >= (1, 2)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_bf16_autocast_and_channels_last_on_cpu(tmp_path, monkeypatch):
    from wrn.train import run

    seen = set()
    build = run.build_model

    def build_and_watch(cfg, info):
        model = build(cfg, info)
        model.layer2.register_forward_hook(
            lambda m, i, o: seen.add(
                (m.training, o.dtype, o.is_contiguous(memory_format=torch.channels_last))
            )
        )
        return model

    monkeypatch.setattr(run, "build_model", build_and_watch)
    cfg = _small_cfg(**{"schedule.epochs": 1, "run.amp": "bf16", "run.channels_last": True})
    from wrn.train import precision

    timed = []  # the probe times the run's own model on a batch of its inputs (here: bf16 made 2x slower)
    monkeypatch.setattr(precision, "cpu_bf16_times", lambda m, x: timed.append((m, x)) or (0.2, 0.1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(cfg, tmp_path / "run")
    said = [str(w.message) for w in caught if str(w.message).startswith("--amp bf16 took")]
    ((model, example),) = timed
    assert model.config["name"] == "wrn-10-1" and example.shape[1:] == (1, 8, 8)
    assert example.is_contiguous(memory_format=torch.channels_last)
    assert said == [
        "--amp bf16 took 200 ms per step of this model against 100 ms in fp32 on this CPU (2.0x; "
        + ("this CPU has no native bf16 (AVX512-BF16 or AMX), so PyTorch emulates it" if precision.cpu_has_native_bf16()
           is False else "PyTorch's CPU bf16 kernels are slower than fp32 here")
        + "); use --amp off for speed"
    ]  # fmt: skip
    # training ran in bf16, the test pass in fp32 (the paper's measure), both channels_last
    assert seen == {(True, torch.bfloat16, True), (False, torch.float32, True)}
    assert (result.last["train_precision"], result.last["test_precision"]) == ("bf16", "fp32")
    assert result.last["test_acc"] > 50.0 and torch.isfinite(torch.tensor(result.last["train_loss"]))
    seen.clear()
    train(_small_cfg(**{"schedule.epochs": 1, "run.amp": "bf16", "run.eval_amp": "bf16"}), tmp_path / "both")
    assert {dtype for _, dtype, _ in seen} == {torch.bfloat16}  # asked for: the test pass in bf16 too
    weights = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())


def test_eval_of_an_unfinished_run_uses_its_checkpoint(tmp_path):
    from wrn.train import evaluate_dir

    run = tmp_path / "run"
    result = train(_small_cfg(**{"schedule.epochs": 1}), run)
    from_model = evaluate_dir(run)
    (run / "model.safetensors").unlink()
    (run / "model.json").unlink()
    from_checkpoint = evaluate_dir(run)
    assert from_model["acc"] == pytest.approx(result.last["test_acc"])
    assert from_checkpoint["acc"] == pytest.approx(from_model["acc"])
    assert from_checkpoint["source"].startswith("checkpoint")


def test_torch_compile_run_trains_like_eager_and_saves_plain_keys(tmp_path):
    overrides = {"schedule.epochs": 2, "model.dropout": 0.0}
    eager = train(_small_cfg(**overrides), tmp_path / "eager")
    compiled = train(_small_cfg(**overrides, **{"run.compile": True}), tmp_path / "compiled")
    state = torch.load(tmp_path / "compiled" / "checkpoint.pt", weights_only=True)
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in state["model"])
    assert sorted(load_file(str(tmp_path / "compiled" / "model.safetensors"))) == sorted(
        eager.model.state_dict()
    )
    # Same seed, same batches: the compiled run follows the eager one up to float rounding.
    assert compiled.last["train_loss"] == pytest.approx(eager.last["train_loss"], rel=0.05)
    assert compiled.last["test_acc"] > 80.0 and abs(compiled.last["test_acc"] - eager.last["test_acc"]) < 3.0


def test_image_folder_run_resumes_mid_epoch_and_its_eval_agrees(tmp_path, monkeypatch):
    """The DataLoader path end to end: a folder run (2 workers) stopped mid-epoch and resumed equals a
    straight one, thanks to per-sample augmentation seeds; and `wrn eval` uses the test transform the run
    was evaluated with (resize 256/224 + centre crop)."""
    from test_data_loaders import write_folder
    from wrn.train import evaluate_dir

    write_folder(
        tmp_path / "imagenet", sizes=(80, 96), classes=("n01", "n02"), per_class=6
    )  # > 64 px: DataLoader path
    overrides = {
        "model.name": "wrn-10-1",
        "dataset.name": "imagenet",
        "dataset.root": str(tmp_path / "imagenet"),
        "dataset.image_size": 32,
        "dataset.augment": "imagenet",
        "dataset.normalization": "imagenet",
        "dataset.workers": 2,
        "optim.batch_size": 4,
        "schedule.epochs": 2,
        "schedule.milestones": [2],
        "run.progress": False,
    }
    straight = train(build_config("demo", overrides=overrides), tmp_path / "straight")
    assert type(straight_loader_kind(overrides)).__name__ == "FolderLoader"

    original = TrainStep.__call__
    calls = {"n": 0}

    def step_then_signal(self, images, labels):
        out = original(self, images, labels)
        calls["n"] += 1
        if calls["n"] == 4:  # epoch 2, step 1 (3 steps per epoch)
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(TrainStep, "__call__", step_then_signal)
    with pytest.raises(Interrupted, match="checkpoint saved at epoch 2, step 1"):
        train(build_config("demo", overrides=overrides), tmp_path / "stopped")
    monkeypatch.undo()
    resumed = resume(tmp_path / "stopped")
    assert_same_weights(tmp_path / "straight", tmp_path / "stopped")
    assert resumed.last["test_loss"] == straight.last["test_loss"]
    result = evaluate_dir(tmp_path / "straight")
    assert result["loss"] == pytest.approx(straight.last["test_loss"], rel=1e-5)


def straight_loader_kind(overrides):
    from wrn.data import make_loaders

    return make_loaders("imagenet", overrides["dataset.root"], batch_size=4, image_size=32, workers=0)[0]
