"""The optimisation recipes of today, each an option that is off by default: SAM (Foret et al. 2021, as
google-research/sam computes it), linear lr warm-up, gradient-norm clipping, weight decay off BN and biases,
timm's EMA warm-up, and which weights each epoch evaluates. Each against a computation written out here."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch.func import functional_call
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import wrn.cli
from conftest import metrics, wrn_here
from wrn.errors import ConfigError
from wrn.train import checkpoint as ckpt
from wrn.train.build import build_trainables
from wrn.train.compose import build_config
from wrn.train.config import validate
from wrn.train.ema import WeightEMA
from wrn.train.resolve import resolve
from wrn.train.run import train
from wrn.train.step import TrainStep

CPU = torch.device("cpu")


class _Net(torch.nn.Module):
    """Linear, BN, ReLU, dropout, linear: 2-d weights, 1-d biases and BN parameters, BN buffers."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 6)
        self.bn = torch.nn.BatchNorm1d(6)
        self.drop = torch.nn.Dropout(dropout)
        self.fc2 = torch.nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x.flatten(1))))))


def _cfg(**overrides):
    base = {"run.device": "cpu", "run.channels_last": False, "optim.weight_decay": 0.01}
    return resolve(build_config("demo", overrides={**base, **overrides}))


def _batches(n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 4, generator=gen), torch.randint(3, (8,), generator=gen)) for _ in range(n)]


def _decays(cfg, params) -> dict[str, float]:
    wd = cfg.optim.weight_decay
    return {k: wd if cfg.optim.decay_norm_and_bias or v.ndim > 1 else 0.0 for k, v in params.items()}


def _norm(tensors) -> torch.Tensor:
    return torch.sqrt(sum((t.double() ** 2).sum() for t in tensors)).float()


def _loss_grads(net, at, buffers, x, y, decays):
    """The gradient of google-research/sam's loss: the cross-entropy plus 0.5 * wd * ||w||^2 (over the
    decayed parameters)."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in at.items()}
    out = functional_call(net, (leaves, buffers), (x,))
    loss = torch.nn.functional.cross_entropy(out, y)
    loss = loss + 0.5 * sum(decays[k] * (v**2).sum() for k, v in leaves.items())
    return dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())), strict=True))


def _sam_gradient(net, params, buffers, x, y, decays, rho, seed):
    """Their get_sam_gradient: e = rho * g / ||g|| with g the gradient at w, then the gradient at w + e, with
    one dropout mask for both; returns it and the first pass's BN statistics."""
    torch.manual_seed(seed)
    first = {k: v.clone() for k, v in buffers.items()}
    g = _loss_grads(net, params, first, x, y, decays)  # (the BN statistics of `first` move, in place)
    norm = _norm(g.values())
    at = {k: params[k] + rho * g[k] / norm for k in params}
    torch.manual_seed(seed)
    return _loss_grads(net, at, {k: v.clone() for k, v in first.items()}, x, y, decays), first


def _sgd_nesterov(params, momentum, grad, lr, mom):
    """torch.optim.SGD with Nesterov momentum and dampening 0, the weight decay already in ``grad``."""
    for k in params:
        momentum[k] = grad[k].clone() if k not in momentum else mom * momentum[k] + grad[k]
        params[k] = params[k] - lr * (grad[k] + mom * momentum[k])


def _reference_steps(model, cfg, batches, seeds, *, rho: float, clip: float = 0.0):
    """SAM as google-research/sam's train_step (flax_training.py) computes it, then SGD with Nesterov momentum.

    The BN statistics kept are the first pass's. rho = 0 is plain SGD. Clipping (torch's clip_grad_norm_) acts
    on the gradient without the weight-decay term taken at w.
    """
    net = copy.deepcopy(model).train()
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in net.named_buffers()}
    decays = _decays(cfg, params)
    momentum: dict[str, torch.Tensor] = {}
    for (x, y), seed in zip(batches, seeds, strict=True):
        g2, buffers = _sam_gradient(net, params, buffers, x, y, decays, rho, seed)
        if clip:
            loss_grad = {k: g2[k] - decays[k] * params[k] for k in g2}
            total = _norm(loss_grad.values())
            coef = min(1.0, clip / (float(total) + 1e-6))
            g2 = {k: loss_grad[k] * coef + decays[k] * params[k] for k in g2}
        _sgd_nesterov(params, momentum, g2, cfg.optim.lr, cfg.optim.momentum)
    return params, buffers


def _ours(model, cfg, batches, seeds):
    step = build_trainables(cfg, model, CPU).step
    for (x, y), seed in zip(batches, seeds, strict=True):
        torch.manual_seed(seed)
        step(x, y)
    return step


def _assert_close(ours: dict, reference: dict, atol: float = 2e-6):
    assert ours.keys() >= reference.keys()
    for k, v in reference.items():
        assert torch.allclose(ours[k].float(), v.float(), rtol=0, atol=atol), (k, (ours[k] - v).abs().max())


@pytest.mark.parametrize(
    "overrides",
    [{}, {"optim.decay_norm_and_bias": False}, {"optim.grad_clip": 0.3}],
    ids=["decay-all", "no-decay-on-1d", "clipped"],
)
def test_sam_steps_equal_the_update_written_out_by_hand(overrides):
    rho = 0.05
    cfg = _cfg(**{"optim.sam_rho": rho, **overrides})
    torch.manual_seed(0)
    model = _Net(dropout=0.5)
    start = copy.deepcopy(model)
    batches, seeds = _batches(3), [11, 12, 13]
    clip = cfg.optim.grad_clip
    want, want_buffers = _reference_steps(start, cfg, batches, seeds, rho=rho, clip=clip)
    step = _ours(model, cfg, batches, seeds)
    assert step.sam is not None and step.sam.rho == rho
    _assert_close(dict(model.named_parameters()), want)
    _assert_close(dict(model.named_buffers()), want_buffers)  # the first pass's BN statistics
    assert int(model.bn.num_batches_tracked) == 3  # one BN update per step, not two
    plain, _ = _reference_steps(start, cfg, batches, seeds, rho=0.0, clip=clip)
    gap = max((plain[k] - want[k]).abs().max().item() for k in want)
    assert gap > 1e-4  # SAM's step is not the plain one


def test_sam_makes_one_optimizer_step_and_leaves_no_perturbation_behind():
    cfg = _cfg(**{"optim.sam_rho": 0.5, "optim.lr": 1e-12})  # a step that barely moves the weights
    torch.manual_seed(0)
    model = _Net()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    steps = []
    handle = register_optimizer_step_post_hook(lambda opt, a, kw: steps.append(1))
    try:
        _ours(model, cfg, _batches(2), [0, 1])
    finally:
        handle.remove()
    assert len(steps) == 2
    for k, v in model.named_parameters():  # w + e was undone: e is rho / ||g|| * g, far above lr * g
        assert torch.allclose(v, before[k], rtol=0, atol=1e-9), k


def test_sam_under_fp16_is_refused_in_one_sentence(capsys):
    """By the config itself, so that --print-config refuses it as wrn train does."""
    data = {
        "preset": None,
        **_cfg(**{"optim.sam_rho": 0.05}).to_dict(),
        "run": {"device": "cpu", "amp": "fp16"},
    }
    with pytest.raises(ConfigError, match="--sam does not run under --amp fp16") as info:
        validate(data)
    assert "\n" not in str(info.value)
    proc = wrn_here(capsys, "train", "--preset", "demo", "--sam", "0.05", "--amp", "fp16", "--print-config")
    assert proc.returncode == 2 and proc.stderr == f"wrn train: error: {info.value}\n"


@pytest.mark.parametrize("clip", [0.05, 1e3])
def test_grad_clip_equals_the_hand_computation(clip):
    cfg = _cfg(**{"optim.grad_clip": clip})
    torch.manual_seed(0)
    model = _Net()
    start = copy.deepcopy(model)
    (x, y), = _batches(1)  # fmt: skip
    wd, lr, mom = cfg.optim.weight_decay, cfg.optim.lr, cfg.optim.momentum
    loss = torch.nn.functional.cross_entropy(start(x), y)
    names = [k for k, _ in start.named_parameters()]
    g = torch.autograd.grad(loss, list(start.parameters()))
    total = _norm(g)
    coef = min(1.0, clip / (float(total) + 1e-6))
    want = {}
    for k, p, gk in zip(names, start.parameters(), g, strict=True):
        d = gk * coef + wd * p.detach()
        want[k] = p.detach() - lr * (d + mom * d)  # Nesterov, first step: the buffer is d
    _ours(model, cfg, [(x, y)], [0])
    _assert_close(dict(model.named_parameters()), want)
    assert (total > clip) == (clip < 1)  # the small bound clipped, the large one did not


def test_decay_norm_and_bias_off_gives_two_groups_and_the_step_by_hand():
    torch.manual_seed(0)
    model = _Net()
    on = build_trainables(_cfg(), copy.deepcopy(model), CPU).optimizer
    assert len(on.param_groups) == 1 and on.param_groups[0]["weight_decay"] == 0.01
    assert len(on.param_groups[0]["params"]) == len(list(model.parameters()))
    cfg = _cfg(**{"optim.decay_norm_and_bias": False})
    start = copy.deepcopy(model)
    optimizer = build_trainables(cfg, model, CPU).optimizer
    weights, flat = optimizer.param_groups
    assert [p.ndim for p in weights["params"]] == [2, 2] and weights["weight_decay"] == 0.01
    assert sorted(p.numel() for p in flat["params"]) == [3, 6, 6, 6] and flat["weight_decay"] == 0.0
    (x, y), = _batches(1)  # fmt: skip
    loss = torch.nn.functional.cross_entropy(start(x), y)
    g = torch.autograd.grad(loss, list(start.parameters()))
    want = {}
    for (k, p), gk in zip(start.named_parameters(), g, strict=True):
        d = gk + (0.01 * p.detach() if p.ndim > 1 else 0.0)
        want[k] = p.detach() - cfg.optim.lr * (1 + cfg.optim.momentum) * d
    _ours(model, cfg, [(x, y)], [0])
    _assert_close(dict(model.named_parameters()), want)


def test_ema_warmup_follows_timm_model_ema_v3_step_by_step():
    torch.manual_seed(0)
    model = _Net()
    decay = 0.8  # reached by the warm-up at the 12th update: 1 - 12 ** (-2/3) > 0.8
    ema = WeightEMA(model, decay, warmup=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    step = TrainStep(model, optimizer, torch.nn.CrossEntropyLoss(), device=CPU, ema=ema)
    expected, used = None, []
    for k, (x, y) in enumerate(_batches(12)):
        step(x, y)
        now = {n: v.detach().clone() for n, v in model.state_dict().items()}
        d = min(decay, 1 - (1 + k) ** (-2 / 3))  # timm: get_decay(step=k + 1), warmup_gamma 1, power 2/3
        used.append(d)
        if expected is None:
            expected = now  # decay 0: a copy
        else:
            for n, v in now.items():
                if v.is_floating_point():
                    expected[n] = d * expected[n].double() + (1 - d) * v.double()
                else:
                    expected[n] = (expected[n] * d + v * (1 - d)).to(v.dtype)
    _assert_close(ema.module.state_dict(), {n: v.float() for n, v in expected.items()}, atol=1e-6)
    assert used[0] == 0 and used[1] < 0.4 and used[-1] == decay  # warmed up within the 12 updates
    assert int(ema.averaged.n_averaged) == 12


def test_ema_does_not_update_on_a_step_the_fp16_scaler_skipped():
    torch.manual_seed(0)
    model = _Net()
    ema = WeightEMA(model, 0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    try:
        step = TrainStep(model, optimizer, torch.nn.CrossEntropyLoss(), device=CPU, amp="fp16", ema=ema)
        (x, y), (x2, y2) = _batches(2)
        step(x, y)
    except RuntimeError as exc:  # a torch without fp16 autocast on the CPU
        pytest.skip(f"fp16 autocast is not available on this CPU: {exc}")
    after_first = {k: v.detach().clone() for k, v in ema.module.state_dict().items()}
    weights = {k: v.detach().clone() for k, v in model.named_parameters()}
    scale = step.scaler.get_scale()
    step(torch.full_like(x, float("nan")), y)  # an inf/NaN gradient: the scaler skips the step
    assert step.scaler.get_scale() < scale
    assert all(torch.equal(v, weights[k]) for k, v in model.named_parameters())
    # (the NaN batch did reach the plain model's BN statistics; the average took none of it)
    assert all(torch.equal(v, after_first[k]) for k, v in ema.module.state_dict().items())
    assert int(ema.averaged.n_averaged) == 1
    step(x2, y2)  # a good step: the average moves again, by the second update's formula
    for k, v in ema.module.named_parameters():
        now = model.get_parameter(k).detach()
        assert torch.allclose(v, 0.5 * after_first[k] + 0.5 * now, rtol=0, atol=1e-6), k
    assert int(ema.averaged.n_averaged) == 2


# ------------------------------------------------------------------------------------------------ real runs


def _digits(**overrides):
    base = {"model.name": "wrn-10-1", "optim.batch_size": 256, "schedule.epochs": 3, "run.progress": False}
    return build_config("demo", overrides={**base, **overrides})


def _lr_of_every_step(cfg, out):
    seen = []

    def hook(optimizer, args, kwargs):
        seen.append([g["lr"] for g in optimizer.param_groups])

    handle = register_optimizer_step_pre_hook(hook)
    try:
        train(cfg, out)
    finally:
        handle.remove()
    return seen, ckpt.load(out)["schedule"]["steps_per_epoch"]


def test_warmup_then_cosine_gives_the_formula_at_every_step(tmp_path):
    cfg = _digits(**{"schedule.name": "cosine", "schedule.warmup_epochs": 1.5, "optim.lr": 0.2})
    seen, per_epoch = _lr_of_every_step(cfg, tmp_path / "run")
    total = 3 * per_epoch
    warm = round(1.5 * per_epoch)
    assert len(seen) == total and 0 < warm < total
    for t, lrs in enumerate(seen):
        want = (
            0.2 * (t + 1) / warm if t < warm else 0.1 * (1 + math.cos(math.pi * (t - warm) / (total - warm)))
        )
        assert lrs == [pytest.approx(want, rel=1e-12, abs=1e-15)], t
    assert seen[warm] == [pytest.approx(0.2)]  # the peak, right after the warm-up


def test_warmup_then_multistep_gives_the_formula_at_every_step(tmp_path):
    cfg = _digits(
        **{"schedule.warmup_epochs": 1, "schedule.milestones": [3], "optim.decay_norm_and_bias": False}
    )
    seen, per_epoch = _lr_of_every_step(cfg, tmp_path / "run")
    assert len(seen) == 3 * per_epoch
    for t, lrs in enumerate(seen):
        want = 0.1 * (t + 1) / per_epoch if t < per_epoch else (0.1 if t < 2 * per_epoch else 0.1 * 0.2)
        assert lrs == [pytest.approx(want, rel=1e-12)] * 2, t  # both groups


@pytest.mark.parametrize("which", ["both", "ema", "model"])
def test_eval_models_evaluates_and_records_what_was_asked(which, tmp_path):
    cfg = _digits(**{"schedule.epochs": 1, "optim.ema_decay": 0.9, "run.eval_models": which})
    train(cfg, tmp_path / "run")
    (record,) = metrics(tmp_path / "run")
    assert record["evaluated"] == {"both": ["model", "ema"], "ema": ["ema"], "model": ["model"]}[which]
    assert ("test_error" in record) == (which != "ema")
    assert ("ema_test_error" in record) == (which != "model")
    meta = json.loads((tmp_path / "run" / "model.json").read_text())["metadata"]
    assert meta["weights"] == "ema"
    assert meta["test_error"] == (None if which == "model" else record["ema_test_error"])


def test_without_ema_the_record_is_as_before(tmp_path):
    train(_digits(**{"schedule.epochs": 1}), tmp_path / "run")
    (record,) = metrics(tmp_path / "run")
    assert "evaluated" not in record and "ema_test_error" not in record and "test_error" in record


@pytest.mark.parametrize(
    "args,says",
    [
        (["--eval-models", "ema"], "--eval-models ema needs an average"),
        (["--ema-warmup"], "--ema-warmup warms up an average of the weights, which is off"),
        (["--sam", "-0.1"], "sam"),
        (["--grad-clip", "-1"], "grad"),
        (["--warmup-epochs", "2", "--epochs", "2"], "warm-up"),
    ],
)
def test_a_bad_value_is_one_sentence_and_exit_2(args, says, tmp_path, capsys):
    code = wrn.cli.main(["train", "--preset", "demo", *args, "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert says in err.lower() or says in err
    assert not (tmp_path / "run").exists()


def test_digits_with_sam_and_warmup_cosine_trains_and_the_header_says_so(tmp_path, capsys):
    args = [
        "train", "--preset", "demo", "--model", "wrn-10-1", "--batch-size", "128", "--epochs", "5",
        "--schedule", "cosine", "--warmup-epochs", "1", "--sam", "0.05", "--grad-clip", "5",
        "--no-decay-norm-and-bias", "--ema", "0.9", "--ema-warmup", "--no-progress", "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    assert wrn.cli.main(args) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[1]
    for words in ("linear warm-up over 1 epoch,", "cosine to 0", "SAM rho 0.05", "grad norm clipped to 5",
                  "no weight decay on BN and biases", "EMA 0.9 with warm-up"):  # fmt: skip
        assert words in header, (words, header)
    last = metrics(tmp_path / "run")[-1]
    assert last["test_acc"] >= 90.0 and last["ema_test_acc"] >= 90.0, last


def test_bench_train_times_the_sam_step(tmp_path, capsys):
    record = tmp_path / "bench.json"
    args = ["bench", "train", "--model", "wrn-10-1", "--device", "cpu", "--batch-size", "8", "--steps", "2",
            "--warmup", "1", "--num-samples", "32", "--sam", "0.05", "--grad-clip", "5", "--vs-plain",
            "--rounds", "2", "--json", str(record)]  # fmt: skip
    assert wrn.cli.main(args) == 0
    out = capsys.readouterr().out
    assert "SAM rho 0.05 (two passes per step)" in out and "optim.grad_clip=5" in out
    assert "ours / plain (the same step without the options, interleaved):" in out
    result = json.loads(record.read_text())
    assert result["settings"]["sam_rho"] == 0.05
    assert result["options"] == {"optim.sam_rho": 0.05, "optim.grad_clip": 5}
    assert len(result["ours"]["step_ms"]) == len(result["plain"]["step_ms"]) == 2
    assert result["cost_vs_plain"] == pytest.approx(result["ours"]["ms"] / result["plain"]["ms"])


SAM_DDP_DRIVER = """
import sys, torch
sys.path.insert(0, sys.argv[2])
from test_train_optim_modern import _Net, _batches, _cfg
from wrn.train import distributed as D
from wrn.train.build import build_trainables

info = D.setup("cpu")
torch.manual_seed(0)
model = _Net()
step = build_trainables(_cfg(**{"optim.sam_rho": 0.05}), model, torch.device("cpu"), info).step
for x, y in _batches(2):
    half = len(x) // 2
    step(x[info.rank * half:(info.rank + 1) * half], y[info.rank * half:(info.rank + 1) * half])
torch.save(dict(model.named_parameters()), f"{sys.argv[1]}/rank{info.rank}.pt")
del step  # (its DDP wrapper goes before the group)
D.finish(info)
"""


def _ddp_reference(cfg, *, per_process: bool):
    """Two processes, each with half of every batch: their own ascent (per_process) or one from the mean
    gradient; the step with the mean of the two second gradients (DDP's all-reduce)."""
    torch.manual_seed(0)
    net = _Net().train()
    params = {k: v.detach().clone() for k, v in net.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in net.named_buffers()}
    decays, rho, momentum = _decays(cfg, params), cfg.optim.sam_rho, {}
    for x, y in _batches(2):
        halves = [(x[:4], y[:4]), (x[4:], y[4:])]
        if per_process:
            g2s = [_sam_gradient(net, params, buffers, hx, hy, decays, rho, 0)[0] for hx, hy in halves]
        else:
            gs = [_loss_grads(net, params, dict(buffers), hx, hy, decays) for hx, hy in halves]
            g = {k: (gs[0][k] + gs[1][k]) / 2 for k in params}
            at = {k: params[k] + rho * g[k] / _norm(g.values()) for k in params}
            g2s = [_loss_grads(net, at, dict(buffers), hx, hy, decays) for hx, hy in halves]
        _sgd_nesterov(params, momentum, {k: (g2s[0][k] + g2s[1][k]) / 2 for k in params}, cfg.optim.lr,
                      cfg.optim.momentum)  # fmt: skip
    return params


def test_sam_under_ddp_normalises_each_process_ascent_and_averages_the_second_gradient(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "driver.py"
    script.write_text(SAM_DDP_DRIVER)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*torchrun, str(script), str(tmp_path), str(Path(__file__).parent)], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    cfg = _cfg(**{"optim.sam_rho": 0.05})
    _assert_close(rank0, _ddp_reference(cfg, per_process=True))
    synced = _ddp_reference(cfg, per_process=False)
    assert max((synced[k] - rank0[k]).abs().max().item() for k in synced) > 1e-5  # not one shared ascent
