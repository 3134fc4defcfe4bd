"""The optimizer and the schedule match the spec step by step (section 4; mistake 7 of section 8)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from wrn.train import recipe
from wrn.train.config import OptimSection, ScheduleSection

PAPER = ScheduleSection()  # 200 epochs, x0.2 at 60, 120, 160, momentum reset


def test_paper_schedule_is_one_indexed():
    lrs = {e: recipe.lr_at(PAPER, 0.1, e) for e in range(1, 201)}
    assert all(lrs[e] == 0.1 for e in range(1, 60))
    assert all(lrs[e] == pytest.approx(0.02) for e in range(60, 120))
    assert all(lrs[e] == pytest.approx(0.004) for e in range(120, 160))
    assert all(lrs[e] == pytest.approx(0.0008) for e in range(160, 201))
    assert [e for e in range(1, 201) if recipe.is_drop_epoch(PAPER, e)] == [60, 120, 160]


def test_svhn_and_imagenet_schedules():
    svhn = ScheduleSection(epochs=160, milestones=[80, 120], gamma=0.1)
    assert [recipe.lr_at(svhn, 0.01, e) for e in (79, 80, 119, 120, 160)] == pytest.approx(
        [0.01, 0.001, 0.001, 0.0001, 0.0001]
    )
    # fb.resnet.torch: lr * 0.1 ^ floor((epoch - 1) / 30) for 1-indexed epochs.
    imagenet = ScheduleSection(epochs=90, milestones=[31, 61], gamma=0.1)
    for e in range(1, 91):
        assert recipe.lr_at(imagenet, 0.1, e) == pytest.approx(0.1 * 0.1 ** math.floor((e - 1) / 30))


def test_cosine_anneals_per_step_to_zero():
    cos = ScheduleSection(name="cosine", epochs=4)
    lrs = [recipe.lr_at(cos, 0.1, e, s, 10) for e in range(1, 5) for s in range(10)]
    assert lrs[0] == 0.1
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[20] == pytest.approx(0.05)
    assert lrs[-1] == pytest.approx(0.05 * (1 + math.cos(math.pi * 39 / 40)))


def test_optimizer_is_nesterov_sgd_with_weight_decay_on_every_parameter():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    opt = recipe.make_optimizer(model, OptimSection())
    (group,) = opt.param_groups
    assert (group["lr"], group["momentum"], group["dampening"], group["nesterov"]) == (0.1, 0.9, 0.0, True)
    assert group["weight_decay"] == 5e-4
    assert len(group["params"]) == len(list(model.parameters()))  # BN and biases decay too


def test_nesterov_step_matches_the_formula():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = recipe.make_optimizer(torch.nn.ParameterList([p]), OptimSection(lr=0.1, weight_decay=0.01))
    grads = [torch.tensor([0.5, 0.25]), torch.tensor([-1.0, 2.0])]
    w, buf = p.detach().clone(), torch.zeros(2)
    for g in grads:
        p.grad = g.clone()
        opt.step()
        d = g + 0.01 * w
        buf = 0.9 * buf + d
        w = w - 0.1 * (d + 0.9 * buf)
    torch.testing.assert_close(p.detach(), w)


def _tiny_problem(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    data = [(torch.randn(5, 4), torch.randint(0, 3, (5,))) for _ in range(3)]
    return model, data


def _step(model, opt, x, y):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


@pytest.mark.parametrize("reset", [True, False])
def test_momentum_reset_equals_recreating_the_optimizer_at_each_drop(reset):
    sched = ScheduleSection(epochs=5, milestones=[2, 4], gamma=0.2, reset_momentum=reset)
    optim = OptimSection()
    model, data = _tiny_problem()
    reference = copy.deepcopy(model)

    opt = recipe.make_optimizer(model, optim)
    lrs, buffers_at_start = [], []
    for epoch in range(1, 6):
        lrs.append(recipe.Schedule(sched, optim.lr, len(data)).apply(opt, epoch, 0))
        buffers_at_start.append(len(opt.state))
        for x, y in data:
            _step(model, opt, x, y)

    # The authors' code: a new optimizer (momentum buffers from zero) at each drop, the lr set explicitly.
    ref_opt = None
    lr = optim.lr
    for epoch in range(1, 6):
        if epoch in (2, 4):
            lr *= 0.2
        if ref_opt is None or (reset and epoch in (2, 4)):
            ref_opt = torch.optim.SGD(
                reference.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4, dampening=0
            )
        for g in ref_opt.param_groups:
            g["lr"] = lr
        for x, y in data:
            _step(reference, ref_opt, x, y)

    assert lrs == pytest.approx([0.1, 0.02, 0.02, 0.004, 0.004])
    n_params = len(list(model.parameters()))
    expected = [0, 0, n_params, 0, n_params] if reset else [0, n_params, n_params, n_params, n_params]
    assert buffers_at_start == expected
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)


def test_reset_changes_the_trajectory():
    """The reset is not a no-op: without it the weights after a drop differ."""
    finals = []
    for reset in (True, False):
        sched = ScheduleSection(epochs=3, milestones=[2], reset_momentum=reset)
        model, data = _tiny_problem()
        opt = recipe.make_optimizer(model, OptimSection())
        for epoch in range(1, 4):
            recipe.Schedule(sched, 0.1, len(data)).apply(opt, epoch, 0)
            for x, y in data:
                _step(model, opt, x, y)
        finals.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert not torch.equal(finals[0], finals[1])


def test_training_loop_applies_the_schedule_per_epoch_and_resets_momentum(tmp_path, monkeypatch):
    import json

    from wrn.train import build_config, train

    resets = []
    original = recipe.reset_momentum

    def spy(optimizer):
        resets.append(len(optimizer.state))  # buffers that existed when cleared
        original(optimizer)

    monkeypatch.setattr(recipe, "reset_momentum", spy)
    cfg = build_config(
        "demo",
        overrides={
            "model.name": "wrn-10-1",
            "schedule.epochs": 3,
            "schedule.milestones": [2, 3],
            "optim.batch_size": 256,
            "run.progress": False,
        },
    )
    result = train(cfg, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records] == pytest.approx([0.1, 0.02, 0.004])
    n_params = len(list(result.model.parameters()))
    assert resets == [n_params, n_params]  # cleared at the start of epochs 2 and 3, after real momentum
