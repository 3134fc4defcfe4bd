"""DM-Improves-AT's recipe (Wang et al., ICML 2023; wzekai99/DM-Improves-AT at b390f25, which keeps
imrahulr/adversarial_robustness_pytorch's training code): each piece that wrn builds for the preset
``cifar10-wrn-28-10-dm-at`` compared with their code, written out below from their files (docs/robustness.md,
*Generated data*; docs/training.md, *DM-AT*)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import wrn
from wrn.models.imports import _dm_our_key

# ------------------------------------------------------------------------ their network, written out
# core/models/wideresnetwithswish.py, lines 12-13 and 25-168 (the forward's CUDA branch is the same arithmetic)

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


class _Block(nn.Module):
    def __init__(self, in_planes, out_planes, stride, activation_fn=nn.ReLU):
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(in_planes, momentum=0.01)
        self.relu_0 = activation_fn(inplace=True)
        self.conv_0 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes, momentum=0.01)
        self.relu_1 = activation_fn(inplace=True)
        self.conv_1 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.has_shortcut = in_planes != out_planes
        if self.has_shortcut:
            self.shortcut = nn.Conv2d(
                in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False
            )
        else:
            self.shortcut = None
        self._stride = stride

    def forward(self, x):
        if self.has_shortcut:
            x = self.relu_0(self.batchnorm_0(x))
        else:
            out = self.relu_0(self.batchnorm_0(x))
        v = x if self.has_shortcut else out
        if self._stride == 1:
            v = F.pad(v, (1, 1, 1, 1))
        elif self._stride == 2:
            v = F.pad(v, (0, 1, 0, 1))
        else:
            raise ValueError("Unsupported `stride`.")
        out = self.conv_0(v)
        out = self.relu_1(self.batchnorm_1(out))
        out = self.conv_1(out)
        out = torch.add(self.shortcut(x) if self.has_shortcut else x, out)
        return out


class _BlockGroup(nn.Module):
    def __init__(self, num_blocks, in_planes, out_planes, stride, activation_fn=nn.ReLU):
        super().__init__()
        block = []
        for i in range(num_blocks):
            block.append(_Block(i == 0 and in_planes or out_planes, out_planes, i == 0 and stride or 1,
                                activation_fn=activation_fn))  # fmt: skip
        self.block = nn.Sequential(*block)

    def forward(self, x):
        return self.block(x)


class TheirWideResNet(nn.Module):
    def __init__(self, num_classes=10, depth=28, width=10, activation_fn=nn.SiLU, mean=CIFAR10_MEAN,
                 std=CIFAR10_STD, padding=0, num_input_channels=3):  # fmt: skip
        super().__init__()
        self.mean = torch.tensor(mean).view(num_input_channels, 1, 1)
        self.std = torch.tensor(std).view(num_input_channels, 1, 1)
        self.padding = padding
        num_channels = [16, 16 * width, 32 * width, 64 * width]
        assert (depth - 4) % 6 == 0
        num_blocks = (depth - 4) // 6
        self.init_conv = nn.Conv2d(num_input_channels, num_channels[0], kernel_size=3, stride=1, padding=1,
                                   bias=False)  # fmt: skip
        self.layer = nn.Sequential(
            _BlockGroup(num_blocks, num_channels[0], num_channels[1], 1, activation_fn=activation_fn),
            _BlockGroup(num_blocks, num_channels[1], num_channels[2], 2, activation_fn=activation_fn),
            _BlockGroup(num_blocks, num_channels[2], num_channels[3], 2, activation_fn=activation_fn),
        )
        self.batchnorm = nn.BatchNorm2d(num_channels[3], momentum=0.01)
        self.relu = activation_fn(inplace=True)
        self.logits = nn.Linear(num_channels[3], num_classes)
        self.num_channels = num_channels[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def forward(self, x):
        if self.padding > 0:
            x = F.pad(x, (self.padding,) * 4)
        out = (x - self.mean) / self.std
        out = self.init_conv(out)
        out = self.layer(out)
        out = self.relu(self.batchnorm(out))
        out = F.avg_pool2d(out, 8)
        out = out.view(-1, self.num_channels)
        return self.logits(out)


def theirs_as_ours(net: nn.Module) -> dict[str, torch.Tensor]:
    return {_dm_our_key(k): v for k, v in net.state_dict().items()}


def _pair(depth=10, width=2, seed=0):
    torch.manual_seed(seed)
    theirs = TheirWideResNet(depth=depth, width=width)
    torch.manual_seed(seed)
    ours = wrn.create_model(f"wrn-{depth}-{width}-dm")
    return theirs, ours


def test_the_dm_network_is_theirs_from_its_initial_weights_to_its_bn_statistics():
    """wrn-D-K-dm drawn from one seed has their weights (xternalz's initialisation, their draws in their order);
    on pixels in [0, 1] it gives their logits in training and evaluation mode and their BN statistics after a
    training pass (momentum 0.01)."""
    theirs, ours = _pair()
    mine = ours.state_dict()
    for key, value in theirs_as_ours(theirs).items():
        assert torch.equal(mine[key], value), key  # bit for bit
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert ours.config["act"] == "silu" and ours.config["bn_momentum"] == 0.01 and ours.config["same_padding"]
    ours.load_state_dict(theirs_as_ours(theirs))  # (the same weights exactly, for what follows)
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for mode in (True, False):
        theirs.train(mode), ours.train(mode)
        assert torch.allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-5), mode
    for key, value in theirs_as_ours(theirs).items():
        if "running" in key:
            assert torch.allclose(ours.state_dict()[key], value, rtol=1e-6, atol=1e-7), key


@pytest.mark.parametrize(
    "dataset,normalization,inside",
    [
        ("cifar10", "pixels", ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))),
        ("cifar100", "pixels", ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))),
        ("svhn", "pixels", ((0.5,) * 3, (0.5,) * 3)),
        ("cifar10", "cifar10", None),  # the pipeline normalises: not twice
        ("digits", "pixels", None),  # one channel: their code has no constants for it
    ],
)
def test_trained_on_pixels_the_dm_network_takes_their_constants_for_the_data_set(
    dataset, normalization, inside
):
    """``wideresnetwithswish(name, dataset)`` (lines 191-197) picks the mean/std by data set; wrn train does the
    same where the network is given pixels, and never normalises twice."""
    from wrn.data.registry import dataset_info
    from wrn.train.build import build_model
    from wrn.train.compose import build_config

    cfg = build_config(None, None, {"model.name": "wrn-10-1-dm", "dataset.name": dataset,
                                    "dataset.normalization": normalization})  # fmt: skip
    info = dataset_info(dataset)
    model = build_model(cfg, info)
    got = model.config.get("input_mean"), model.config.get("input_std")
    want = (None, None) if inside is None else tuple(list(v) for v in inside)
    assert got == want


# ------------------------------------------------------------------------------------------- cosinew


def _their_cosinew(lr: float, epochs: int) -> list[tuple[float, float]]:
    """core/utils/train.py lines 92-94 (init_scheduler) with watrain.py lines 70-71 (SGD momentum 0.9,
    Nesterov) and 136-137 (one scheduler.step() after each epoch): the (lr, momentum) each epoch trains at."""
    net = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, weight_decay=5e-4, momentum=0.9, nesterov=True)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, pct_start=0.025, total_steps=int(epochs)
    )
    seen = []
    for _ in range(epochs):
        group = optimizer.param_groups[0]
        seen.append((group["lr"], group["momentum"]))
        optimizer.step()  # (torch wants an optimizer step before a scheduler step)
        scheduler.step()
    return seen


@pytest.mark.parametrize("epochs", [400, 100, 7, 2, 1])
def test_cosinew_gives_every_epoch_their_lr_and_momentum(epochs):
    """``--schedule cosinew``: each step of an epoch runs at the rate and momentum their OneCycleLR gives the
    epoch (to the last bit), whatever the run's --momentum."""
    from wrn.train import recipe
    from wrn.train.compose import build_config

    cfg = build_config(None, None, {"schedule.name": "cosinew", "schedule.epochs": epochs, "optim.lr": 0.2})
    schedule = recipe.Schedule(cfg.schedule, 0.2, steps_per_epoch=3)
    optimizer = recipe.make_optimizer(nn.Linear(2, 2), cfg.optim)
    ours = []
    for epoch in range(1, epochs + 1):
        for step in range(3):
            lr = schedule.apply(optimizer, epoch, step)
            assert lr == optimizer.param_groups[0]["lr"]
            ours.append((lr, optimizer.param_groups[0]["momentum"]))
    theirs = [pair for pair in _their_cosinew(0.2, epochs) for _ in range(3)]
    assert ours == theirs
    if epochs == 400:  # 0.2 / 25 at epoch 1, the peak at epoch 10, 0.2 / 25 / 1e4 at the last
        assert (ours[0][0], ours[27][0], ours[-1][0]) == pytest.approx((0.008, 0.2, 8e-7))
        assert (ours[0][1], ours[27][1], ours[-1][1]) == pytest.approx((0.95, 0.85, 0.95))


def test_cosinew_at_40_epochs_takes_the_peak_where_torch_divides_by_zero():
    from wrn.train import recipe

    with pytest.raises(ZeroDivisionError):
        _their_cosinew(0.2, 40)
    assert recipe.cosinew(0.2, 1, 40) == (0.2, 0.85)
    assert recipe.cosinew(0.2, 2, 40)[0] < 0.2


def test_cosinew_refuses_a_warm_up_of_its_own():
    from wrn.errors import ConfigError
    from wrn.train.compose import build_config

    with pytest.raises(ConfigError, match="cosinew schedule warms up by itself"):
        build_config(None, None, {"schedule.name": "cosinew", "schedule.warmup_epochs": 1})


# --------------------------------------------------------------------------------- their TRADES step


class SmoothCrossEntropyLoss(nn.Module):
    """core/utils/utils.py lines 10-30."""

    def __init__(self, smoothing=0.0, reduction="mean"):
        super().__init__()
        self.smoothing = smoothing
        self.confidence = 1.0 - smoothing
        self.reduction = reduction

    def forward(self, x, target):
        logprobs = torch.nn.functional.log_softmax(x, dim=-1)
        nll_loss = -logprobs.gather(dim=-1, index=target.unsqueeze(1))
        nll_loss = nll_loss.squeeze(1)
        smooth_loss = -logprobs.mean(dim=-1)
        loss = self.confidence * nll_loss + self.smoothing * smooth_loss
        return loss.mean() if self.reduction == "mean" else loss.sum()


def track_bn_stats(model, track_stats=True):
    """core/utils/utils.py lines 33-39."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = track_stats


def their_trades_loss(model, x_natural, y, optimizer, step_size, epsilon, perturb_steps, beta, label_smoothing,
                      generator):  # fmt: skip
    """gowal21uncovering/utils/trades.py lines 36-126, the linf-pgd branch without CutMix or consistency; their
    start ``torch.FloatTensor(x.shape).uniform_(-eps, eps)`` drawn from ``generator``."""
    criterion_ce = SmoothCrossEntropyLoss(reduction="mean", smoothing=label_smoothing)
    criterion_kl = nn.KLDivLoss(reduction="batchmean")
    model.train()
    track_bn_stats(model, False)
    x_adv = x_natural.detach() + torch.empty_like(x_natural).uniform_(-epsilon, epsilon, generator=generator)
    x_adv = torch.clamp(x_adv, 0.0, 1.0)
    p_natural = F.softmax(model(x_natural), dim=1)
    p_natural = p_natural.detach()
    for _ in range(perturb_steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = criterion_kl(F.log_softmax(model(x_adv), dim=1), p_natural)
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    track_bn_stats(model, True)
    x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
    optimizer.zero_grad()
    logits_natural = model(x_natural)
    logits_adv = model(x_adv)
    loss_natural = criterion_ce(logits_natural, y)
    loss_robust = criterion_kl(F.log_softmax(logits_adv, dim=1), F.softmax(logits_natural, dim=1))
    return loss_natural + beta * loss_robust


def _dm_cfg(**more):
    from wrn.train.compose import build_config
    from wrn.train.resolve import resolve

    overrides = {"model.name": "wrn-10-1-dm", "dataset.normalization": "pixels", "adv.method": "trades-gowal",
                 "adv.steps": 3, "adv.trades_beta": 5.0, "optim.label_smoothing": 0.1, "optim.lr": 0.2,
                 "optim.batch_size": 8, "run.device": "cpu", "run.channels_last": False, "run.seed": 3, **more}  # fmt: skip
    return resolve(build_config(None, None, overrides), cuda_available=False)


def _ours_and_theirs(cfg):
    """The same DeepMind WRN twice from one seed: ours with the run's step, theirs with the run's optimizer and
    a generator seeded as the run's attack."""
    import copy

    from wrn.seeds import stream_seed
    from wrn.train.build import build_trainables
    from wrn.train.recipe import make_optimizer

    torch.manual_seed(0)
    model = wrn.create_model("wrn-10-1-dm")
    theirs = copy.deepcopy(model)
    step = build_trainables(cfg, model, torch.device("cpu")).step
    optimizer = make_optimizer(theirs, cfg.optim)
    generator = torch.Generator().manual_seed(stream_seed(cfg.run.seed, "adversary", 0))
    return model, step, theirs, optimizer, generator


def _assert_same_state(model, theirs) -> None:
    a, b = model.state_dict(), theirs.state_dict()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), rtol=1e-4, atol=2e-6), key


def _batches(n=2, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(size, 3, 32, 32, generator=g), torch.randint(10, (size,), generator=g)) for _ in range(n)
    ]


def test_the_trades_gowal_step_is_their_trades_loss():
    """``--adv trades-gowal``: two steps of ours and two of their trades_loss (then their backward and SGD step,
    watrain.py lines 124-127) from the same weights and random starts give the same weights and BN running
    statistics; the attack's passes leave BN's statistics and batch count as they are."""
    cfg = _dm_cfg()
    assert (cfg.adv.eps, cfg.adv.steps, cfg.adv.step_size) == (8 / 255, 3, 2 / 255)  # parser.py's, but steps
    model, step, theirs, optimizer, generator = _ours_and_theirs(cfg)
    for x, y in _batches():
        model.train()
        step(x, y)  # (pixels: the normalisation is inside the network)
        loss = their_trades_loss(theirs, x, y, optimizer, 2 / 255, 8 / 255, 3, 5.0, 0.1, generator)
        loss.backward()
        optimizer.step()
    _assert_same_state(model, theirs)
    assert (
        int(model.state_dict()["bn.num_batches_tracked"]) == 4
    )  # two training passes a step, none of the attack's


def test_trades_gowal_keeps_its_beta_and_refuses_awp():
    from wrn.errors import ConfigError

    assert _dm_cfg().adv.trades_beta == 5.0
    with pytest.raises(ConfigError, match="none of them trains --adv trades-gowal"):
        _dm_cfg(**{"adv.awp": 0.005})


# ------------------------------------------------------------------ their weight average and BN momentum


def ema_update(wa_model, model, global_step, decay_rate=0.995, warmup_steps=0, dynamic_decay=True):
    """gowal21uncovering/utils/watrain.py lines 244-258."""
    factor = int(global_step >= warmup_steps)
    if dynamic_decay:
        delta = global_step - warmup_steps
        decay = min(decay_rate, (1.0 + delta) / (10.0 + delta)) if 10.0 + delta != 0 else decay_rate
    else:
        decay = decay_rate
    decay *= factor
    for p_swa, p_model in zip(wa_model.parameters(), model.parameters(), strict=True):
        p_swa.data *= decay
        p_swa.data += p_model.data * (1 - decay)


def test_the_gowal_warm_up_is_their_ema_update():
    """``--ema 0.995 --ema-warmup --ema-warmup-rule gowal --ema-buffers copy``: after each step g (from 1, as
    their train() counts it, lines 86-92 and 131-133) the average is their wa_model: a copy of the weights while
    g < W, then min(0.995, (1 + d) / (10 + d)); the BN statistics are the model's (their update_bn)."""
    import copy

    from wrn.train.ema import WeightEMA

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3))
    ema = WeightEMA(model, 0.995, warmup=True, buffers="copy", rule="gowal")
    ema.start = 0.025 * 10 * 50  # their warmup_steps = 0.025 x epochs x update_steps: 12.5
    wa_model = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    for step in range(1, 41):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g))
            model[1].running_mean.add_(1.0)
        ema.update()
        ema_update(wa_model, model, step, decay_rate=0.995, warmup_steps=ema.start)
        for a, b in zip(ema.module.parameters(), wa_model.parameters(), strict=True):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), step
        if step < 12.5:
            assert all(
                torch.equal(a, b) for a, b in zip(ema.module.parameters(), model.parameters(), strict=True)
            )
        assert torch.equal(ema.module[1].running_mean, model[1].running_mean)


def test_the_average_waits_for_the_lr_warm_up_as_theirs():
    """Their W = 0.025 x epochs x update_steps (watrain.py lines 50-51): 980 steps at 400 epochs of 98."""
    from wrn.train import recipe
    from wrn.train.compose import build_config

    cfg = build_config(None, None, {"schedule.name": "cosinew", "schedule.epochs": 400})
    assert recipe.Schedule(cfg.schedule, 0.2, 98).warmup_length() == 0.025 * 400 * 98 == 980
    cfg = build_config(None, None, {"schedule.warmup_epochs": 2, "schedule.epochs": 10})
    assert recipe.Schedule(cfg.schedule, 0.1, 7).warmup_length() == 14


def test_the_rule_needs_the_warm_up():
    from wrn.errors import ConfigError
    from wrn.train.compose import build_config

    with pytest.raises(ConfigError, match="--ema-warmup-rule gowal is the rule of a warm-up"):
        build_config(None, None, {"optim.ema_decay": 0.995, "optim.ema_warmup_rule": "gowal"})


def set_bn_momentum(model, momentum=1):
    """core/utils/utils.py lines 42-48."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum


def test_the_first_step_at_bn_momentum_one_is_theirs():
    """``--bn-momentum-first 1.0``: the loop's first step runs every BN at momentum 1 and the next ones at the
    network's 0.01, as their train() sets it at global steps 0 and 1 (watrain.py lines 86-91)."""
    from wrn.models.layers import bn_set

    cfg = _dm_cfg(**{"model.bn_momentum_first": 1.0})
    model, step, theirs, optimizer, generator = _ours_and_theirs(cfg)
    for global_step, (x, y) in enumerate(_batches(3)):
        model.train()
        with bn_set(model, "momentum", cfg.model.bn_momentum_first if global_step == 0 else None):
            step(x, y)
        set_bn_momentum(theirs, 1.0 if global_step == 0 else 0.01)
        their_trades_loss(theirs, x, y, optimizer, 2 / 255, 8 / 255, 3, 5.0, 0.1, generator).backward()
        optimizer.step()
        assert all(m.momentum == 0.01 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    _assert_same_state(model, theirs)


def group_weight(model):
    """gowal21uncovering/utils/watrain.py lines 58-68."""
    group_decay = []
    group_no_decay = []
    for n, p in model.named_parameters():
        if "batchnorm" in n:
            group_no_decay.append(p)
        else:
            group_decay.append(p)
    assert len(list(model.parameters())) == len(group_decay) + len(group_no_decay)
    return [dict(params=group_decay), dict(params=group_no_decay, weight_decay=0.0)]


def test_decay_bias_exempts_bn_only_as_their_group_weight():
    """``--no-decay-norm-and-bias --decay-bias``: their two groups, in their order, the classifier's bias
    decayed (without --decay-bias it is not)."""
    from wrn.train.recipe import make_optimizer

    torch.manual_seed(0)
    theirs = TheirWideResNet(depth=10, width=1)
    ours = wrn.create_model("wrn-10-1-dm")
    ours.load_state_dict(theirs_as_ours(theirs))
    by_value = {id(p): k for k, p in ours.named_parameters()}
    optimizer = make_optimizer(
        ours, _dm_cfg(**{"optim.decay_norm_and_bias": False, "optim.decay_bias": True}).optim
    )
    names = [[by_value[id(p)] for p in g["params"]] for g in optimizer.param_groups]
    theirs_named = {id(p): _dm_our_key(k) for k, p in theirs.named_parameters()}
    want = [[theirs_named[id(p)] for p in g["params"]] for g in group_weight(theirs)]
    assert names == want and "fc.bias" in names[0]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [5e-4, 0.0]
    plain = make_optimizer(ours, _dm_cfg(**{"optim.decay_norm_and_bias": False}).optim)
    assert "fc.bias" in [by_value[id(p)] for p in plain.param_groups[1]["params"]]


# ------------------------------------------------------------------------------ their best-epoch selection


def cw_loss(output, target, confidence=0):
    """core/attacks/utils.py lines 201-215 (on the CPU)."""
    num_classes = output.shape[-1]
    target_onehot = torch.zeros(target.size() + (num_classes,))
    target_onehot.scatter_(1, target.unsqueeze(1), 1.0)
    real = (target_onehot * output).sum(1)
    other = ((1.0 - target_onehot) * output - target_onehot * 10000.0).max(1)[0]
    loss = -torch.clamp(real - other + confidence, min=0.0)
    return torch.sum(loss)


def their_pgd(x, y, predict, nb_iter, eps, eps_iter, generator):
    """core/attacks/pgd.py PGDAttack.perturb (rand_init uniform: utils.py rand_init_delta) and
    perturb_iterative (lines 17-70, ord inf), with their CW loss; the start drawn from ``generator``."""
    delta = torch.zeros_like(x)
    delta.uniform_(-eps, eps, generator=generator)
    delta = torch.clamp(x + delta, 0.0, 1.0) - x
    delta.requires_grad_()
    for _ in range(nb_iter):
        loss = cw_loss(predict(x + delta), y)
        loss.backward()
        grad_sign = delta.grad.data.sign()
        delta.data = delta.data + eps_iter * grad_sign
        delta.data = torch.clamp(delta.data, -eps, eps)
        delta.data = torch.clamp(x.data + delta.data, 0.0, 1.0) - x.data
        delta.grad.data.zero_()
    return torch.clamp(x + delta, 0.0, 1.0).detach()


def test_the_dm_holdout_is_their_validation_split():
    """cifar10s.py lines 106-108 (the validation Subset: images 0..1023) and semisup.py 40-42 (trained on
    data[1024:])."""
    from wrn.data.loaders import holdout_indices

    kept, held = holdout_indices(50000, 1024, rule="dm")
    assert held.tolist() == list(range(1024)) and kept.tolist() == list(range(1024, 50000))


def test_the_dm_holdout_judges_as_their_eval_attack_and_keeps_the_later_of_equal_epochs():
    """--adv-holdout-rule dm: the held-out images attacked as their WATrainer.eval(adversarial=True) attacks them
    (eval mode, PGD of 4 x 10 steps of 2/255 in 8/255 on the CW loss, watrain.py lines 40-41 and 177-194), and
    their ``eval_adv_acc >= old_score`` (train-wa.py line 125)."""
    from wrn.attacks import margin_loss, pgd
    from wrn.seeds import stream_seed
    from wrn.train.distributed import DistInfo
    from wrn.train.holdout import HoldoutSelection

    torch.manual_seed(0)
    model = wrn.create_model("wrn-10-1-dm").eval()
    with torch.no_grad():  # labelled as the network sees them: the attack has something to take
        batches = [(x, model(x).argmax(1)) for x, _ in _batches(2, 8, seed=4)]
    x, y = batches[0]
    ours = pgd(model, x, y, eps=8 / 255, step_size=2 / 255, steps=12, loss_fn=margin_loss,
               generator=torch.Generator().manual_seed(5))  # fmt: skip
    theirs = their_pgd(x, y, model, 12, 8 / 255, 2 / 255, torch.Generator().manual_seed(5))
    assert torch.allclose(ours, theirs, atol=1e-6)

    cfg = _dm_cfg(**{"adv.holdout": 16, "adv.holdout_rule": "dm", "adv.steps": 10, "adv.eps": "1/255",
                     "adv.step_size": "0.25/255"})  # fmt: skip
    selection = HoldoutSelection(batches, cfg, torch.device("cpu"), DistInfo())
    assert selection.steps == 40
    found = selection.evaluate(model, epoch=3)
    g = torch.Generator().manual_seed(stream_seed(cfg.run.seed, "holdout", 3, 0))
    correct = clean = 0
    with torch.no_grad():
        for xb, yb in batches:
            with torch.enable_grad():
                adv = their_pgd(xb, yb, model, 40, 1 / 255, 0.25 / 255, g)
            correct += int((model(adv).argmax(1) == yb).sum())
            clean += int((model(xb).argmax(1) == yb).sum())
    assert (found["holdout_acc"], found["holdout_robust_acc"]) == (100 * clean / 16, 100 * correct / 16)
    assert found["holdout_acc"] == 100 and 0 < found["holdout_robust_acc"] < 100
    assert selection.improved({"holdout_robust_acc": 50.0}, 1)
    assert selection.improved({"holdout_robust_acc": 50.0}, 2) and selection.best_epoch == 2  # >=
    assert not selection.improved({"holdout_robust_acc": 49.0}, 3)
    rice = HoldoutSelection(
        batches, _dm_cfg(**{"adv.holdout": 16, "adv.steps": 10}), torch.device("cpu"), DistInfo()
    )
    assert rice.steps == 10 and rice.improved({"holdout_robust_acc": 50.0}, 1)
    assert not rice.improved({"holdout_robust_acc": 50.0}, 2) and rice.best_epoch == 1  # >


# ------------------------------------------------------------------------------------------- the preset

# Their README's command (README.md lines 58-69) with parser.py's and train-wa.py's defaults, as --print-config
# shows it (docs/training.md, "DM-AT", gives each with its line; tests/test_docs_presets.py checks that table).
README = {
    "model": {"name": "wrn-28-10-dm", "act": "silu", "bn_momentum": 0.01, "bn_momentum_first": 1.0,
              "init": "xternalz", "dropout": 0.0},
    "dataset": {"name": "cifar10", "augment": "flip-crop", "crop_padding": "zeros", "normalization": "pixels",
                "aux_data": "edm_data/cifar10/1m.npz", "aux_fraction": 0.7},
    "optim": {"batch_size": 512, "lr": 0.2, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
              "decay_norm_and_bias": False, "decay_bias": True, "label_smoothing": 0.1, "ema_decay": 0.995,
              "ema_warmup": True, "ema_warmup_rule": "gowal", "ema_buffers": "copy", "grad_clip": 0.0},
    "schedule": {"name": "cosinew", "epochs": 400, "warmup_epochs": 0.0},
    "adv": {"method": "trades-gowal", "eps": 8 / 255, "steps": 10, "step_size": 2 / 255, "trades_beta": 5.0,
            "holdout": 1024, "holdout_rule": "dm", "awp": 0.0},
    "run": {"eval_models": "ema"},
}  # fmt: skip


def test_the_preset_is_their_readme_command(capsys):

    from conftest import printed_config

    printed = printed_config(capsys, "cifar10-wrn-28-10-dm-at")
    for section, values in README.items():
        assert {k: printed[section][k] for k in values} == pytest.approx(values), section
    assert "20M" in printed["description"] and "92.44" in printed["description"]


def test_the_preset_without_their_file_is_one_sentence(capsys, tmp_path, monkeypatch):
    from conftest import one_line_error

    monkeypatch.chdir(tmp_path)  # (no edm_data/ here)
    line = one_line_error(capsys, "train", "--preset", "cifar10-wrn-28-10-dm-at", "--dataset", "digits",
                          "--out", str(tmp_path / "run"))  # fmt: skip
    assert "--aux-data edm_data/cifar10/1m.npz does not exist" in line and "P2333/DM-Improves-AT" in line
    assert not (tmp_path / "run").exists()


def test_the_preset_trains_scaled_down_on_the_digits(capsys, tmp_path, monkeypatch):
    """The whole recipe end to end on the digits with generated digits (WRN-10-1, 2 epochs): an epoch counts the
    100 held-out images too, the average is evaluated and saved, the best epoch's average kept in RUN/best."""
    import json

    import yaml

    from conftest import metrics, wrn_here
    from test_data_aux import generated_file

    monkeypatch.chdir(tmp_path)
    generated_file(tmp_path / "gen.npz", n=600)
    proc = wrn_here(capsys, "train", "--preset", "cifar10-wrn-28-10-dm-at", "--dataset", "digits", "--epochs", "2",
                    "--model", "wrn-10-1-dm", "--batch-size", "64", "--adv-holdout", "100", "--adv-steps", "3",
                    "--aux-data", "gen.npz", "--device", "cpu", "--no-progress", "--out", "run")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "cosinew" in proc.stdout and "trades-gowal" in proc.stdout and "23 steps" in proc.stdout
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["dataset"]["normalization"] == "digits" and cfg["model"]["bn_momentum_first"] == 1.0
    records = metrics(tmp_path / "run")
    assert len(records) == 2 and "ema_test_acc" in records[0] and "test_acc" not in records[0]
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert (
        meta["metadata"]["best"]["holdout"] == 100
        and "DM-Improves-AT" in meta["metadata"]["best"]["selected_by"]
    )
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()


def test_the_preset_killed_and_resumed_ends_bit_for_bit_as_one_never_stopped(tmp_path):
    """kill -9 mid-run, then --resume: the same weights, average, best epoch and records as a run never stopped
    (the attack's starts, the loader's draws, cosinew's momentum, the average's count and the best epoch so far
    are all in the checkpoint)."""
    import random

    from conftest import assert_resume_is_bitwise
    from test_data_aux import generated_file

    gen = generated_file(tmp_path / "gen.npz", n=600)
    args = ["train", "--preset", "cifar10-wrn-28-10-dm-at", "--dataset", "digits", "--epochs", "2", "--model",
            "wrn-10-1-dm", "--batch-size", "128", "--adv-holdout", "100", "--adv-steps", "2", "--aux-data",
            str(gen), "--checkpoint-every", "1steps", "--no-progress", "--device", "cpu"]  # fmt: skip
    target = random.Random(3).randint(4, 18)  # of 2 x 12 steps
    assert_resume_is_bitwise(tmp_path, args, target, best=True)
