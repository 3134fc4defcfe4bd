"""Adversarial weight perturbation (``--awp``): two steps of ours equal to csdongxian/AWP's loops written out
here from their files (``AT_AWP/utils_awp.py`` with ``AT_AWP/train_cifar10.py``; ``trades_AWP/utils_awp.py``
with ``trades_AWP/train_trades_cifar.py``), its warm-up, and the options through the real command line."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from conftest import one_line_error, wrn_here
from test_train_adversarial import _assert_same_state, _cfg, _data, _Net, _normalize, _ours, _rice_attack
from wrn.seeds import stream_seed
from wrn.train.build import build_trainables
from wrn.train.recipe import make_optimizer

EPS = 1e-20


# utils_awp.py (the same in AT_AWP/ and trades_AWP/), as written there


def diff_in_weights(model, proxy):
    diff_dict = OrderedDict()
    model_state_dict = model.state_dict()
    proxy_state_dict = proxy.state_dict()
    for (old_k, old_w), (new_k, new_w) in zip(model_state_dict.items(), proxy_state_dict.items()):  # noqa: B007, B905
        if len(old_w.size()) <= 1:
            continue
        if "weight" in old_k:
            diff_w = new_w - old_w
            diff_dict[old_k] = old_w.norm() / (diff_w.norm() + EPS) * diff_w
    return diff_dict


def add_into_weights(model, diff, coeff=1.0):
    names_in_diff = diff.keys()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in names_in_diff:
                param.add_(coeff * diff[name])


def calc_awp_at(model, proxy, proxy_optim, inputs_adv, targets):
    """AT_AWP/utils_awp.py, AdvWeightPerturb.calc_awp."""
    proxy.load_state_dict(model.state_dict())
    proxy.train()
    loss = -F.cross_entropy(proxy(inputs_adv), targets)
    proxy_optim.zero_grad()
    loss.backward()
    proxy_optim.step()
    return diff_in_weights(model, proxy)


def calc_awp_trades(model, proxy, proxy_optim, inputs_adv, inputs_clean, targets, beta):
    """trades_AWP/utils_awp.py, TradesAWP.calc_awp."""
    proxy.load_state_dict(model.state_dict())
    proxy.train()
    loss_natural = F.cross_entropy(proxy(inputs_clean), targets)
    loss_robust = F.kl_div(
        F.log_softmax(proxy(inputs_adv), dim=1), F.softmax(proxy(inputs_clean), dim=1), reduction="batchmean"
    )
    loss = -1.0 * (loss_natural + beta * loss_robust)
    proxy_optim.zero_grad()
    loss.backward()
    proxy_optim.step()
    return diff_in_weights(model, proxy)


def _at_awp_step(model, proxy, opt, proxy_opt, X, y, gen, epsilon, alpha, attack_iters, gamma):
    """train_cifar10.py's step, --attack pgd, one restart, l_inf, AWP on: attack_pgd (the network in training
    mode), then calc_awp on X_adv, perturb, the robust loss, step, restore. (The clean pass after it, for the
    log, is left out, as for --adv pgd: docs/robustness.md.)"""
    model.train()
    max_delta = _rice_attack(model, X, y, gen, epsilon, alpha, attack_iters)
    X_adv = _normalize(torch.clamp(X + max_delta, min=0, max=1))
    model.train()
    awp = calc_awp_at(model, proxy, proxy_opt, X_adv, y)
    add_into_weights(model, awp, coeff=1.0 * gamma)
    robust_output = model(X_adv)
    robust_loss = F.cross_entropy(robust_output, y)
    opt.zero_grad()
    robust_loss.backward()
    opt.step()
    add_into_weights(model, awp, coeff=-1.0 * gamma)


def _trades_awp_step(model, proxy, optimizer, proxy_optim, x_natural, target, gen, step_size, epsilon,
                     perturb_steps, beta, gamma):  # fmt: skip
    """train_trades_cifar.py's perturb_input (l_inf) and train(); the networks normalise inside."""
    net = lambda z: model(_normalize(z))  # noqa: E731
    model.eval()
    x_adv = x_natural.detach() + 0.001 * torch.randn(x_natural.shape, generator=gen).detach()
    for _ in range(perturb_steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = F.kl_div(
                F.log_softmax(net(x_adv), dim=1), F.softmax(net(x_natural), dim=1), reduction="sum"
            )
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    awp = calc_awp_trades(model, proxy, proxy_optim, _normalize(x_adv), _normalize(x_natural), target, beta)
    add_into_weights(model, awp, coeff=1.0 * gamma)
    optimizer.zero_grad()
    logits_adv = net(x_adv)
    loss_robust = F.kl_div(
        F.log_softmax(logits_adv, dim=1), F.softmax(net(x_natural), dim=1), reduction="batchmean"
    )
    logits = net(x_natural)
    loss_natural = F.cross_entropy(logits, target)
    loss = loss_natural + beta * loss_robust
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    add_into_weights(model, awp, coeff=-1.0 * gamma)


def _theirs(cfg, proxy_lr):
    torch.manual_seed(0)
    model, proxy = _Net(), _Net()
    opt = make_optimizer(model, cfg.optim)
    proxy_opt = torch.optim.SGD(proxy.parameters(), lr=proxy_lr)
    gen = torch.Generator().manual_seed(stream_seed(cfg.run.seed, "adversary", 0))
    return model, proxy, opt, proxy_opt, gen


def test_pgd_awp_step_is_their_at_awp():
    adv = {"adv.method": "pgd", "adv.eps": "32/255", "adv.step_size": "8/255", "adv.steps": 4}
    cfg = _cfg(**adv, **{"adv.awp": 0.01})
    assert cfg.adv.awp_warmup == 0  # train_cifar10.py's --awp-warmup 0, filled in by resolve
    data = _data()
    ours = _ours(cfg, data)
    theirs, proxy, opt, proxy_opt, gen = _theirs(cfg, 0.01)  # train_cifar10.py: SGD(proxy, lr=0.01)
    for x, y in data:
        _at_awp_step(theirs, proxy, opt, proxy_opt, x, y, gen, 32 / 255, 8 / 255, 4, 0.01)
    _assert_same_state(ours, theirs)  # weights and BN running statistics
    without = _ours(_cfg(**adv), data)
    assert not torch.allclose(
        without.fc.weight, ours.fc.weight, atol=1e-4
    )  # the perturbation changed the step


def test_trades_awp_step_is_their_trades_awp():
    adv = {"adv.method": "trades", "adv.steps": 3, "adv.trades_beta": 6.0}
    cfg = _cfg(**adv, **{"adv.awp": 0.005, "adv.awp_warmup": 0})
    data = _data(seed=1)
    ours = _ours(cfg, data)
    theirs, proxy, opt, proxy_opt, gen = _theirs(cfg, cfg.optim.lr)  # SGD(proxy, lr=args.lr)
    for x, y in data:
        _trades_awp_step(theirs, proxy, opt, proxy_opt, x, y, gen, 0.007, 0.031, 3, 6.0, 0.005)
    _assert_same_state(ours, theirs)
    without = _ours(_cfg(**adv), data)
    assert not torch.allclose(without.fc.weight, ours.fc.weight, atol=1e-4)


def test_awp_waits_out_its_warm_up_and_keeps_no_state():
    """Within ``--awp-warmup`` epochs the step is the adversarial step without AWP (TRADES' passes in
    TRADES-AWP's order, which changes BN's running statistics only); after it, AWP's."""
    adv = {"adv.method": "pgd", "adv.steps": 2}
    data = _data()
    cfg = _cfg(**adv, **{"adv.awp": 0.01, "adv.awp_warmup": 1})
    torch.manual_seed(0)
    model = _Net()
    step = build_trainables(cfg, model, torch.device("cpu")).step
    step.epoch = 1  # the loop's epoch, counted from 1: still warming up
    for x, y in data:
        step(_normalize(x), y)
    without = _ours(_cfg(**adv), data)
    for key, value in without.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    step.epoch = 2
    before = model.fc.weight.detach().clone()
    step(*[(_normalize(x), y) for x, y in data][0])
    assert not torch.equal(model.fc.weight, before)
    assert step.awp.proxy_optim.state_dict()["state"] == {}  # nothing for the checkpoint to keep


@pytest.mark.parametrize(
    "extra, want",
    [
        (["--adv", "pgd", "--awp", "0.01"], {"awp": 0.01, "awp_warmup": 0}),
        (["--adv", "trades", "--awp", "0.005"], {"awp": 0.005, "awp_warmup": 9}),
        (["--adv", "trades", "--awp", "0.005", "--awp-warmup", "0"], {"awp": 0.005, "awp_warmup": 0}),
        (
            ["--adv", "pgd", "--set", "adv.awp=0.02", "--set", "adv.awp_warmup=3"],
            {"awp": 0.02, "awp_warmup": 3},
        ),
        (["--adv", "pgd"], {"awp": 0.0, "awp_warmup": None}),
    ],
)
def test_awp_options_through_the_command_line(capsys, extra, want):
    import yaml

    proc = wrn_here(capsys, "train", "--preset", "demo", *extra, "--print-config")
    assert proc.returncode == 0, proc.stderr
    adv = yaml.safe_load(proc.stdout)["adv"]
    assert {k: adv[k] for k in want} == want


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--adv", "pgd", "--awp", "-0.01"], "greater than or equal to 0"),
        (["--adv", "pgd", "--awp", "much"], "adv.awp"),
        (["--adv", "pgd", "--awp", "0.01", "--awp-warmup", "-1"], "greater than or equal to 0"),
        (
            ["--awp", "0.01"],
            "--awp perturbs the weights against the loss of adversarial training, which is off",
        ),
        (["--adv", "pgd", "--awp-warmup", "3"], "--awp-warmup delays AWP, which is off"),
        (["--adv", "pgd", "--awp", "0.01", "--sam", "0.05"], "--awp and --sam both perturb the weights"),
        (["--adv", "pgd", "--awp", "0.01", "--replica-batch", "16"], "leave --replica-batch out with --awp"),
        (["--adv", "pgd", "--awp", "0.01", "--amp", "fp16"], "--awp does not run under --amp fp16"),
    ],
)
def test_bad_awp_values_get_one_sentence(capsys, extra, words):
    line = one_line_error(capsys, "train", "--preset", "demo", *extra, "--print-config")
    assert words in line


def test_a_warm_up_past_the_run_is_a_warning(capsys):
    proc = wrn_here(capsys, "train", "--preset", "demo", "--epochs", "5", "--adv", "trades", "--awp", "0.005",
                    "--print-config")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "AWP turns on after 9 epochs of warm-up but the run has 5" in proc.stderr
