"""The training loop reads nothing back from the device per step: on CUDA the GPU is never stalled.

On the CPU a test counts the calls that would force a host sync on a GPU (``.item()``, ``.tolist()``,
``float(t)``, ``bool(t)``, ``.cpu()``, ...) between consecutive steps; on CUDA a test runs every per-step
piece of the loop under ``torch.cuda.set_sync_debug_mode("error")``, where any sync raises.
"""

from __future__ import annotations

import pytest
import torch

from wrn.errors import NonFiniteLoss
from wrn.train import build_config, train
from wrn.train.step import TrainStep

SYNC_CALLS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")
LOG_EVERY = 5


def _cfg(**overrides):
    base = {
        "model.name": "wrn-10-1",
        "schedule.epochs": 1,
        "optim.batch_size": 32,
        "run.checkpoint_every_minutes": None,
        "run.log_every_steps": LOG_EVERY,
    }
    return build_config("demo", overrides={**base, **overrides})


def test_one_read_back_every_log_every_steps_and_none_in_between(tmp_path, monkeypatch):
    count = [0]
    for name in SYNC_CALLS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            count[0] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    at_step: list[int] = []  # the count when each step starts
    original_step = TrainStep.__call__

    def step(self, images, labels):
        at_step.append(count[0])
        return original_step(self, images, labels)

    monkeypatch.setattr(TrainStep, "__call__", step)
    result = train(_cfg(), tmp_path / "run")

    steps = len(at_step)
    assert steps == 44  # 1,437 digits // 32
    # Between the start of step i and of step i+1: the step, the meter's sums, the stop/checkpoint decision
    # and the next batch. Only every LOG_EVERY-th step reads back, exactly once.
    per_step = [b - a for a, b in zip(at_step, at_step[1:], strict=False)]
    expected = [1 if (i + 1) % LOG_EVERY == 0 else 0 for i in range(steps - 1)]
    assert per_step == expected
    assert result.last["epoch"] == 1


def test_per_step_scalars_reach_tensorboard_every_log_every_steps(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(_cfg(), tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard" / "steps"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["step/images_per_s", "step/loss", "step/lr"]
    loss = events.Scalars("step/loss")
    assert [e.step for e in loss] == list(range(LOG_EVERY, 44, LOG_EVERY))
    assert all(0 < e.value < 10 for e in loss) and loss[-1].value < loss[0].value  # it learns
    assert all(e.value == pytest.approx(0.1) for e in events.Scalars("step/lr"))
    assert all(e.value > 0 for e in events.Scalars("step/images_per_s"))


def test_a_nan_between_read_backs_still_stops_the_run_before_a_checkpoint(tmp_path, monkeypatch):
    from wrn.train import checkpoint as ckpt

    original_step = TrainStep.__call__
    calls = [0]

    def step(self, images, labels):
        calls[0] += 1
        if calls[0] == 8:  # step 8 (between the read-backs after steps 5 and 10) turns NaN
            images = images * float("nan")
        return original_step(self, images, labels)

    monkeypatch.setattr(TrainStep, "__call__", step)
    with pytest.raises(NonFiniteLoss, match="epoch 1, step 9"):
        train(_cfg(**{"run.checkpoint_every_steps": 9}), tmp_path / "run")
    # the checkpoint due after step 9 looked at the device flag first: not written; the first one stays
    assert ckpt.load(tmp_path / "run")["global_step"] == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_no_host_sync_per_step_on_cuda(tmp_path, monkeypatch):
    from wrn.data.device_loader import DeviceLoader

    def strict(fn):
        def wrapped(*args, **kwargs):
            torch.cuda.set_sync_debug_mode("error")
            try:
                return fn(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode("default")

        return wrapped

    from wrn.train.meter import EpochMeter
    from wrn.train.policy import CheckpointPolicy
    from wrn.train.recipe import Schedule

    # every per-step piece of train_one_epoch; the read-back every LOG_EVERY steps syncs, by design
    monkeypatch.setattr(TrainStep, "__call__", strict(TrainStep.__call__))
    monkeypatch.setattr(EpochMeter, "update", strict(EpochMeter.update))
    monkeypatch.setattr(CheckpointPolicy, "decide", strict(CheckpointPolicy.decide))
    monkeypatch.setattr(Schedule, "apply", strict(Schedule.apply))
    monkeypatch.setattr(DeviceLoader, "_batch", strict(DeviceLoader._batch))
    for amp in ("bf16", "fp16"):
        result = train(_cfg(**{"run.device": "cuda", "run.amp": amp}), tmp_path / amp)
        assert result.last["train_precision"] == amp and result.last["test_acc"] > 50
