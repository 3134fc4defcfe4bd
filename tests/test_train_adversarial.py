"""Adversarial training (``--adv pgd|trades``): each step equal to a reference written out here from its code
(locuslab/robust_overfitting's train_cifar.py, yaodongyu/TRADES's trades.py), the options through the real
command line, and the scaled-down experiment: on the digits, PGD training keeps the robust accuracy that a
plain network loses."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import one_line_error, printed_config, wrn_here
from wrn.seeds import stream_seed
from wrn.train.build import build_trainables
from wrn.train.compose import build_config
from wrn.train.recipe import make_optimizer
from wrn.train.resolve import resolve

MEAN, STD = 77.85 / 255, 95.85 / 255  # the digits' normalisation (wrn.data.registry), on the [0, 1] scale


class _Net(torch.nn.Module):
    """Conv, BN (its running statistics see every pass in training mode), ReLU, linear: 1-channel 8x8."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 6, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(6)
        self.fc = torch.nn.Linear(6 * 16, 10)

    def forward(self, x):
        return self.fc(F.max_pool2d(F.relu(self.bn(self.conv(x))), 2).flatten(1))


def _cfg(**overrides):
    base = {"run.device": "cpu", "run.channels_last": False, "optim.weight_decay": 5e-4, "run.seed": 3}
    return resolve(build_config("demo", overrides={**base, **overrides}))


def _data(n_batches=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(16, 1, 8, 8, generator=gen), torch.randint(10, (16,), generator=gen))
        for _ in range(n_batches)
    ]


def _ours(cfg, data):
    torch.manual_seed(0)
    model = _Net()
    step = build_trainables(cfg, model, torch.device("cpu")).step
    model.train()
    for x, y in data:
        step((x - MEAN) / STD, y)  # the pipeline hands the step normalised images
    return model


def _normalize(z):
    return (z - MEAN) / STD


def _clamp(X, lower_limit, upper_limit):
    return torch.max(torch.min(X, upper_limit), lower_limit)


def _rice_step(model, opt, X, y, gen, epsilon, alpha, attack_iters):
    """train_cifar.py, --attack pgd, one restart, l_inf: attack_pgd in training mode, then the step."""
    model.train()
    max_delta = _rice_attack(model, X, y, gen, epsilon, alpha, attack_iters)
    robust_output = model(_normalize(torch.clamp(X + max_delta, min=0, max=1)))
    robust_loss = F.cross_entropy(robust_output, y)
    opt.zero_grad()
    robust_loss.backward()
    opt.step()


def _rice_attack(model, X, y, gen, epsilon, alpha, attack_iters):
    """train_cifar.py's attack_pgd (one restart, l_inf, no early stop), in the network's mode as it is."""
    max_loss = torch.zeros(y.shape[0])
    max_delta = torch.zeros_like(X)
    delta = torch.zeros_like(X)
    delta.uniform_(-epsilon, epsilon, generator=gen)
    delta = _clamp(delta, 0 - X, 1 - X)
    delta.requires_grad = True
    for _ in range(attack_iters):
        output = model(_normalize(X + delta))
        loss = F.cross_entropy(output, y)
        loss.backward()
        grad = delta.grad.detach()
        d = torch.clamp(delta + alpha * torch.sign(grad), min=-epsilon, max=epsilon)
        d = _clamp(d, 0 - X, 1 - X)
        delta.data = d
        delta.grad.zero_()
    all_loss = F.cross_entropy(model(_normalize(X + delta)), y, reduction="none")
    max_delta[all_loss >= max_loss] = delta.detach()[all_loss >= max_loss]
    return max_delta


def _trades_step(model, opt, x_natural, y, gen, step_size, epsilon, perturb_steps, beta):
    """trades.py's trades_loss (l_inf) and train_trades_cifar10.py's step; the model normalises inside."""
    net = lambda z: model(_normalize(z))  # noqa: E731
    criterion_kl = torch.nn.KLDivLoss(reduction="sum")
    model.eval()
    batch_size = len(x_natural)
    x_adv = x_natural.detach() + 0.001 * torch.randn(x_natural.shape, generator=gen).detach()
    for _ in range(perturb_steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = criterion_kl(F.log_softmax(net(x_adv), dim=1), F.softmax(net(x_natural), dim=1))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
    opt.zero_grad()
    logits = net(x_natural)
    loss_natural = F.cross_entropy(logits, y)
    loss_robust = (1.0 / batch_size) * criterion_kl(
        F.log_softmax(net(x_adv), dim=1), F.softmax(net(x_natural), dim=1)
    )
    loss = loss_natural + beta * loss_robust
    loss.backward()
    opt.step()


def _theirs(cfg, data, step):
    """The same network (same seed) trained by ``step(net, opt, x, y, gen)``, a reference step on pixels, with
    the run's optimizer and a generator seeded as the run's attack."""
    torch.manual_seed(0)
    theirs = _Net()
    opt = make_optimizer(theirs, cfg.optim)
    gen = torch.Generator().manual_seed(stream_seed(cfg.run.seed, "adversary", 0))
    for x, y in data:
        step(theirs, opt, x, y, gen)
    return theirs


def _assert_same_state(ours, theirs):
    a, b = ours.state_dict(), theirs.state_dict()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=2e-5, rtol=1e-4), key


def test_pgd_training_step_is_robust_overfittings():
    cfg = _cfg(**{"adv.method": "pgd", "adv.eps": "32/255", "adv.step_size": "8/255", "adv.steps": 4})
    data = _data()
    ours = _ours(cfg, data)
    theirs = _theirs(
        cfg, data, lambda net, opt, x, y, gen: _rice_step(net, opt, x, y, gen, 32 / 255, 8 / 255, 4)
    )
    _assert_same_state(ours, theirs)  # weights and BN running statistics (every pass in training mode)
    plain = _ours(_cfg(), data)
    assert not torch.allclose(plain.fc.weight, ours.fc.weight, atol=1e-3)  # the attack changed the step


def test_trades_step_is_their_trades_loss():
    cfg = _cfg(**{"adv.method": "trades", "adv.steps": 3, "adv.trades_beta": 6.0})
    assert (cfg.adv.eps, cfg.adv.step_size) == (0.031, 0.007)  # their defaults, filled in by resolve
    data = _data(seed=1)
    ours = _ours(cfg, data)
    theirs = _theirs(
        cfg, data, lambda net, opt, x, y, gen: _trades_step(net, opt, x, y, gen, 0.007, 0.031, 3, 6.0)
    )
    _assert_same_state(ours, theirs)


def test_adversarial_options_through_the_command_line_and_a_config_file(tmp_path, capsys):
    args = [
        "train",
        "--preset",
        "demo",
        "--adv",
        "pgd",
        "--adv-eps",
        "8/255",
        "--adv-steps",
        "7",
        "--print-config",
    ]
    proc = wrn_here(capsys, *args)
    assert proc.returncode == 0, proc.stderr
    import yaml

    adv = yaml.safe_load(proc.stdout)["adv"]
    assert adv == {"method": "pgd", "eps": pytest.approx(8 / 255), "steps": 7, "step_size": pytest.approx(2 / 255),
                   "trades_beta": 6.0, "awp": 0.0, "awp_warmup": None, "holdout": 0, "holdout_rule": "rice"}  # fmt: skip
    config = tmp_path / "c.yaml"
    config.write_text("preset: demo\nadv:\n  method: trades\n  eps: 8/255\n  trades_beta: 1\n")
    proc = wrn_here(capsys, "train", "--config", str(config), "--set", "adv.steps=5", "--print-config")
    assert proc.returncode == 0, proc.stderr
    adv = yaml.safe_load(proc.stdout)["adv"]
    assert adv == {
        "method": "trades",
        "eps": pytest.approx(8 / 255),
        "steps": 5,
        "step_size": 0.007,
        "trades_beta": 1.0,
        "awp": 0.0,
        "awp_warmup": None,
        "holdout": 0,
        "holdout_rule": "rice",
    }


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--adv-eps", "-1"], "greater than 0"),
        (["--adv", "pgd", "--adv-eps", "-1"], "greater than 0"),
        (["--adv", "pgd", "--adv-eps", "two"], "adv.eps"),
        (["--adv", "pgd", "--adv-steps", "0"], "greater than or equal to 1"),
        (["--adv", "fgsm"], "adv.method"),
        (["--adv-steps", "3"], "--adv-steps set the attack of adversarial training, which is off"),
        (["--adv", "pgd", "--trades-beta", "3"], "--trades-beta weights TRADES' KL term"),
        (["--adv", "trades", "--mixup", "1"], "leave --mixup / --cutmix out with --adv"),
        (["--adv", "pgd", "--normalization", "zca"], "ZCA whitening is not one"),
    ],
)
def test_bad_adversarial_values_get_one_sentence(capsys, extra, words):
    line = one_line_error(capsys, "train", "--preset", "demo", *extra, "--print-config")
    assert words in line


def _eval(capsys, run, eps, attack="pgd", *extra):
    args = ["eval", str(run), "--attack", attack, "--eps", eps, "--json", "--no-progress", *extra]
    proc = wrn_here(capsys, *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_pgd_training_on_the_digits_keeps_the_robust_accuracy_a_plain_network_loses(tmp_path, capsys):
    """The scaled-down experiment of docs/robustness.md, end to end through the command line: on the digits a
    plain network loses nearly all its accuracy to PGD at eps 48/255 (3 of the digits' 17 grey levels), a
    PGD-trained one keeps most of it. By default a short version (WRN-10-2, 10 epochs, 5 attack steps, PGD-10
    on 200 images); WRN_SLOW=1: the documented one (WRN-16-2, the demo's 30 epochs, 10 steps; PGD-20 and
    AutoAttack on the 360 test images)."""
    import os

    slow = os.environ.get("WRN_SLOW") == "1"
    common = ["train", "--preset", "demo", "--no-progress"]
    common += (
        ["--model", "wrn-16-2"] if slow else ["--model", "wrn-10-2", "--epochs", "10", "--milestones", "5,8"]
    )
    adv = ["--adv", "pgd", "--adv-eps", "48/255", "--adv-step-size", "12/255"] + (
        [] if slow else ["--adv-steps", "5"]
    )
    plain, robust = tmp_path / "plain", tmp_path / "robust"
    for out, extra in ((plain, []), (robust, adv)):
        proc = wrn_here(capsys, *common, *extra, "--out", str(out))
        assert proc.returncode == 0, proc.stderr
    attack = [] if slow else ["--steps", "10", "--n", "200"]
    p, r = _eval(capsys, plain, "48/255", "pgd", *attack), _eval(capsys, robust, "48/255", "pgd", *attack)
    assert p["clean_acc"] > 90 and r["clean_acc"] > 90  # (measured: 99.5 and 98.0; slow: 98.6 and 99.2)
    assert p["robust_acc"] < 15 and r["robust_acc"] > 45  # (measured: 1.5 and 62.5; slow: 1.9 and 83.9)
    if slow:
        pa, ra = _eval(capsys, plain, "48/255", "autoattack"), _eval(capsys, robust, "48/255", "autoattack")
        assert pa["robust_acc"] <= p["robust_acc"] and pa["robust_acc"] < 5
        assert ra["robust_acc"] <= r["robust_acc"] and ra["robust_acc"] > 55


def test_xternalz_init_is_the_trades_networks():
    """``--init xternalz`` is the loop of TRADES' models/wideresnet.py (75-82) over the same modules, draw for
    draw: the same seed gives the same weights."""
    import math

    import wrn

    torch.manual_seed(5)
    theirs = wrn.create_model("wrn-16-2", init="pytorch")
    for m in theirs.modules():
        if isinstance(m, torch.nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.data.normal_(0, math.sqrt(2.0 / n))
        elif isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.fill_(1)
            m.bias.data.zero_()
        elif isinstance(m, torch.nn.Linear):
            m.bias.data.zero_()
    torch.manual_seed(5)
    ours = wrn.create_model("wrn-16-2", init="xternalz")
    assert ours.config["init"] == "xternalz"
    for (key, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_trades_preset_is_their_command_line(capsys):
    """The preset's attack and optimisation, as train_trades_cifar10.py's defaults (docs/training.md has every
    row; tests/test_docs_presets.py checks them all)."""

    cfg = printed_config(capsys, "cifar10-wrn-34-10-trades")
    want = {
        "method": "trades",
        "eps": 0.031,
        "steps": 10,
        "step_size": 0.007,
        "trades_beta": 6.0,
        "holdout": 0,
        "awp": 0.0,
        "awp_warmup": None,
    }
    assert {k: cfg["adv"][k] for k in want} == want
    assert (cfg["schedule"]["epochs"], cfg["schedule"]["milestones"], cfg["optim"]["weight_decay"]) == (
        76,
        [75],
        2e-4,
    )


def test_the_held_out_images_are_robust_overfittings_validation_split():
    """generate_validation.py: np.random.seed(0); P = np.random.permutation(50000); val = P[:1000]."""
    import numpy as np

    from wrn.data.loaders import holdout_indices

    np.random.seed(0)
    P = np.random.permutation(50000)
    kept, held = holdout_indices(50000, 1000)
    assert held.tolist() == P[:1000].tolist()
    assert kept.tolist() == sorted(P[1000:].tolist())


def test_early_stopping_keeps_the_best_epoch_beside_the_last(tmp_path, capsys):
    """--adv-holdout: the held-out images leave training, are attacked after each epoch, and RUN/best/ holds
    the weights of the best epoch (ties: the earlier), which model.json names; attacking those weights again
    with the same starts gives the recorded robust accuracy."""
    import wrn
    from wrn.data import make_loaders
    from wrn.train.distributed import DistInfo
    from wrn.train.holdout import HoldoutSelection
    from wrn.train.rundir import RunDir

    out = tmp_path / "run"
    proc = wrn_here(capsys, "train", "--preset", "demo", "--model", "wrn-10-1", "--epochs", "3", "--milestones", "2",
                    "--adv", "pgd", "--adv-eps", "32/255", "--adv-steps", "3", "--adv-step-size", "8/255",
                    "--adv-holdout", "200", "--out", str(out), "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    accs = [r["holdout_robust_acc"] for r in records]
    best = accs.index(max(accs)) + 1
    meta = json.loads((out / "model.json").read_text())["metadata"]
    assert meta["best"]["epoch"] == best and meta["best"]["holdout_robust_acc"] == max(accs)
    assert (
        records[-1]["holdout_best_epoch"] == best
        and f"best epoch on the 200 held-out images: {best}" in proc.stdout
    )
    saved = json.loads((out / "best" / "model.json").read_text())["metadata"]
    assert saved["epochs"] == best and saved["test_error"] == records[best - 1]["test_error"]
    # 1437 digits - 200 held out = 1237 images: 19 steps of 64
    assert json.loads((out / "model.json").read_text())["metadata"]["epochs"] == 3
    cfg = RunDir(out).read_config()
    _, _, _, held = make_loaders("digits", None, batch_size=64, eval_batch_size=cfg.optim.eval_batch_size,
                                 holdout=200)  # fmt: skip
    again = HoldoutSelection(held, cfg, torch.device("cpu"), DistInfo())
    found = again.evaluate(wrn.load_model(out / "best"), best)
    assert found["holdout_robust_acc"] == records[best - 1]["holdout_robust_acc"]


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--adv-holdout", "100"], "--adv-holdout set the attack of adversarial training, which is off"),
        (["--adv", "pgd", "--adv-holdout", "-1"], "greater than or equal to 0"),
    ],
)
def test_bad_holdout_values_get_one_sentence(capsys, extra, words):
    assert words in one_line_error(capsys, "train", "--preset", "demo", *extra, "--print-config")


def test_holding_out_more_than_the_training_set_is_one_sentence(tmp_path, capsys):
    line = one_line_error(capsys, "train", "--preset", "demo", "--adv", "pgd", "--adv-holdout", "5000", "--out",
                          str(tmp_path / "r"))  # fmt: skip
    assert "cannot hold out 5000 of the 1437 training images of digits" in line
    assert not (tmp_path / "r").exists()
