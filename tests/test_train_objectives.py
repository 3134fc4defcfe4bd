"""The objectives a training step minimises (wrn.train.objectives): the registry is the one source of their
names and options, the focal loss equals its formula, SAM wraps any objective, and a run trains with one
through the real command line."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml
from torch.func import functional_call

from conftest import wrn_here
from wrn.train.build import build_trainables
from wrn.train.compose import build_config
from wrn.train.config import TrainConfig
from wrn.train.objectives import OBJECTIVES, objective_class
from wrn.train.objectives.base import Context, Objective
from wrn.train.objectives.focal import FocalLoss
from wrn.train.resolve import resolve

CPU = torch.device("cpu")


def _cfg(**overrides) -> TrainConfig:
    base = {"run.device": "cpu", "run.channels_last": False, "optim.weight_decay": 0.0}
    return resolve(build_config("demo", overrides={**base, **overrides}))


def _focal_by_hand(logits: torch.Tensor, targets: torch.Tensor, gamma: float) -> float:
    """Lin et al.'s softmax focal loss, one example and one class at a time, in float64."""
    total = 0.0
    for row, target in zip(logits.double(), targets.double(), strict=True):
        p = torch.softmax(row, 0)
        total += -sum(
            float(t) * (1 - float(q)) ** gamma * float(torch.log(q)) for t, q in zip(target, p, strict=True)
        )
    return total / len(logits)


def test_the_registry_is_the_one_source_of_names_and_options(capsys):
    choices = TrainConfig.model_fields["objective"].annotation.model_fields["name"].annotation.__args__
    assert choices == tuple(OBJECTIVES)
    for name in OBJECTIVES:
        assert issubclass(objective_class(name), Objective)
    from wrn.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--objective OBJECTIVE" in shown and "--focal-gamma FOCAL_GAMMA" in shown
    assert all(f"{name}: {OBJECTIVES[name].summary}" in shown for name in OBJECTIVES)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_focal_loss_at_gamma_0_is_the_cross_entropy(smoothing):
    gen = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(16, 5, generator=gen), torch.randint(5, (16,), generator=gen)
    soft = torch.softmax(torch.randn(16, 5, generator=gen), 1)
    cfg = _cfg(
        **{"objective.name": "focal", "objective.focal.gamma": 0.0, "optim.label_smoothing": smoothing}
    )
    focal = FocalLoss(Context(cfg, 5, CPU))
    ce = torch.nn.CrossEntropyLoss(label_smoothing=smoothing)
    for targets in (labels, soft):
        assert torch.allclose(focal.criterion(logits, targets), ce(logits, targets), rtol=0, atol=1e-6)


@pytest.mark.parametrize("gamma", [0.5, 2.0, 5.0])
def test_focal_loss_equals_its_formula_for_hard_and_soft_targets(gamma):
    gen = torch.Generator().manual_seed(1)
    logits, labels = 3 * torch.randn(12, 4, generator=gen), torch.randint(4, (12,), generator=gen)
    soft = torch.softmax(torch.randn(12, 4, generator=gen), 1)
    focal = FocalLoss(Context(_cfg(**{"objective.name": "focal", "objective.focal.gamma": gamma}), 4, CPU))
    hard = torch.nn.functional.one_hot(labels, 4)
    assert focal.criterion(logits, labels).item() == pytest.approx(
        _focal_by_hand(logits, hard, gamma), rel=1e-5
    )
    assert focal.criterion(logits, soft).item() == pytest.approx(
        _focal_by_hand(logits, soft, gamma), rel=1e-5
    )


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.bn, self.fc2 = torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 3)
        self.config = {"num_classes": 3}

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


def test_sam_wraps_the_focal_objective_as_it_wraps_the_cross_entropy():
    """One SAM step with the focal loss: the gradient at w + rho g/|g|, g the focal loss's gradient at w,
    written out with autograd, then plain SGD (no momentum, no decay)."""
    gamma, rho, lr = 2.0, 0.1, 0.5
    overrides = {"objective.name": "focal", "objective.focal.gamma": gamma, "optim.sam_rho": rho}
    cfg = _cfg(**overrides, **{"optim.lr": lr, "optim.momentum": 0.0, "optim.nesterov": False})
    torch.manual_seed(0)
    model = _Net()
    reference = copy.deepcopy(model)
    x, y = torch.randn(8, 4), torch.randint(3, (8,))
    step = build_trainables(cfg, model, CPU).step
    step.optimizer.param_groups[0]["lr"] = lr
    step(x, y)

    params = {k: v.detach().clone() for k, v in reference.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in reference.named_buffers()}
    hard = torch.nn.functional.one_hot(y, 3).float()

    def grads(at):
        leaves = {k: v.clone().requires_grad_(True) for k, v in at.items()}
        logits = functional_call(reference, (leaves, {k: v.clone() for k, v in buffers.items()}), (x,))
        log_p = logits.log_softmax(1)
        loss = -(hard * (1 - log_p.exp()) ** gamma * log_p).sum(1).mean()
        return dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())), strict=True))

    g = grads(params)
    norm = torch.sqrt(sum((v**2).sum() for v in g.values()))
    second = grads({k: params[k] + rho * g[k] / norm for k in params})
    for name, value in model.named_parameters():
        want = params[name] - lr * second[name]
        assert torch.allclose(value.detach(), want, rtol=0, atol=1e-6), name


def test_focal_options_without_the_focal_objective_are_refused(capsys):
    proc = wrn_here(capsys, "train", "--preset", "demo", "--focal-gamma", "1", "--print-config")
    assert proc.returncode == 2
    assert proc.stderr == (
        "wrn train: error: objective.focal is set but the objective is cross-entropy; add --objective focal "
        "or leave its options out\n"
    )


def test_a_run_trains_with_the_focal_loss(capsys, tmp_path):
    run = tmp_path / "focal"
    args = ["train", "--preset", "demo", "--model", "wrn-10-1", "--epochs", "2", "--objective", "focal",
            "--focal-gamma", "2", "--no-progress", "--out", str(run)]  # fmt: skip
    proc = wrn_here(capsys, *args)
    assert proc.returncode == 0, proc.stderr
    saved = yaml.safe_load((run / "config.yaml").read_text())["objective"]
    assert saved == {"name": "focal", "focal": {"gamma": 2.0}}
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["test_acc"] >= 80.0, last  # ten classes: chance is 10%
