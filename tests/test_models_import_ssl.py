"""The semi-supervised WRNs: FixMatch's (kekmodel/FixMatch-pytorch) and USB's (microsoft/Semi-supervised-learning).

The reference networks below are written from those projects' published ``wideresnet.py`` / ``wrn.py``: the
xternalz key names, leaky ReLU 0.1, BN momentum 0.001, and ``activate_before_residual`` on group 1 only, so
that the first blocks of groups 2 and 3 feed their raw input to ``conv1`` and the shortcut. USB adds a bias to
the stem conv, BN eps 1e-3 in the head and names the classifier ``classifier``. The files are saved as the
projects' training code saves them.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import wrn.cli
from conftest import calibrate_bn_, rel_diff
from wrn.errors import CheckpointError
from wrn.models import count_parameters, create_model, load_model, load_xternalz
from wrn.models.imports import load_fixmatch, load_usb

# the two BNs that FixMatch's network computes but never uses, so that they never train
UNUSED_BN = ("block2.layer.0.bn1", "block3.layer.0.bn1")


class SsBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, before_residual: bool) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in, momentum=0.001)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out, momentum=0.001)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.convShortcut = None if c_in == c_out else nn.Conv2d(c_in, c_out, 1, stride, bias=False)
        self.before_residual = before_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.leaky_relu(self.bn1(x), 0.1)  # computed in every block, used where the flag or identity says
        if self.convShortcut is None:
            return x + self.conv2(F.leaky_relu(self.bn2(self.conv1(act)), 0.1))
        inp = act if self.before_residual else x
        return self.convShortcut(inp) + self.conv2(F.leaky_relu(self.bn2(self.conv1(inp)), 0.1))


class SsGroup(nn.Module):
    def __init__(self, n: int, c_in: int, c_out: int, stride: int, before_residual: bool) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                SsBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1, before_residual)
                for i in range(n)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class SsWRN(nn.Module):
    """FixMatch's WRN-depth-k; ``usb=True``: USB's (stem bias, head eps 1e-3, ``classifier``, dict output)."""

    def __init__(self, depth: int, k: int, classes: int, usb: bool = False) -> None:
        super().__init__()
        n, self.usb = (depth - 4) // 6, usb
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=usb)
        self.block1 = SsGroup(n, 16, 16 * k, 1, True)
        self.block2 = SsGroup(n, 16 * k, 32 * k, 2, False)
        self.block3 = SsGroup(n, 32 * k, 64 * k, 2, False)
        self.bn1 = nn.BatchNorm2d(64 * k, momentum=0.001, eps=1e-3 if usb else 1e-5)
        head = nn.Linear(64 * k, classes)
        if usb:
            self.classifier = head
        else:
            self.fc = head

    def forward(self, x: torch.Tensor):
        h = self.block3(self.block2(self.block1(self.conv1(x))))
        feat = F.adaptive_avg_pool2d(F.leaky_relu(self.bn1(h), 0.1), 1).flatten(1)
        return {"logits": self.classifier(feat), "feat": feat} if self.usb else self.fc(feat)


def trained(depth: int, k: int, classes: int, seed: int, usb: bool = False) -> SsWRN:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    ref = SsWRN(depth, k, classes, usb)
    if usb:
        with torch.no_grad():
            ref.conv1.bias.uniform_(-0.1, 0.1, generator=gen)
    return calibrate_bn_(ref, gen, skip=UNUSED_BN)


def averaged(ref: SsWRN, seed: int) -> SsWRN:
    """An EMA copy: every trained tensor moved a little (the untouched BNs stay as they are, as in an EMA)."""
    gen = torch.Generator().manual_seed(seed)
    ema = copy.deepcopy(ref)
    with torch.no_grad():
        for name, p in ema.named_parameters():
            if not name.startswith(UNUSED_BN):
                p.add_(torch.randn(p.shape, generator=gen) * 0.02 * p.abs().mean())
    return ema.eval()


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
    return out["logits"] if isinstance(out, dict) else out


def fixmatch_checkpoint(model: SsWRN, ema: SsWRN | None) -> dict:
    """What kekmodel's train.py saves: model, EMA (None without --use-ema), accuracies, optimizer, scheduler."""
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    return {
        "epoch": 12,
        "state_dict": model.state_dict(),
        "ema_state_dict": ema.state_dict() if ema is not None else None,
        "acc": 91.5,
        "best_acc": 92.0,
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
    }


# the one-line notes are checked through the CLI; the library calls here leave them as warnings
pytestmark = pytest.mark.filterwarnings("ignore::wrn.models.xternalz.ConversionWarning")

X = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("depth, k, classes", [(10, 2, 10), (16, 2, 100)])
def test_fixmatch_checkpoint_imports_exactly_with_the_ema_by_default(depth, k, classes, tmp_path, capsys):
    ref = trained(depth, k, classes, seed=depth)
    ema = averaged(ref, seed=1)
    src = tmp_path / "model_best.pth.tar"
    torch.save(fixmatch_checkpoint(ref, ema), src)

    assert wrn.cli.main(["convert", "fixmatch", str(src), str(tmp_path / "ema")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "read the averaged (EMA) weights 'ema_state_dict'" in err[0]
    model = load_model(tmp_path / "ema")
    assert rel_diff(logits(model, X), logits(ema, X)) <= 1e-5
    assert rel_diff(logits(model, X), logits(ref, X)) > 1e-3  # the EMA really is another set of weights

    assert wrn.cli.main(["convert", "fixmatch", str(src), str(tmp_path / "raw"), "--weights", "model"]) == 0
    assert rel_diff(logits(load_model(tmp_path / "raw"), X), logits(ref, X)) <= 1e-5
    config = json.loads((tmp_path / "raw" / "model.json").read_text())["config"]
    assert config["act"] == "leaky_relu" and config["bn_momentum"] == 0.001 and config["preact_first"] == [1]
    assert count_parameters(model) == sum(p.numel() for p in ref.parameters())


def test_fixmatch_without_ema_and_a_bare_state_dict(tmp_path, capsys):
    ref = trained(10, 2, 10, seed=3)
    src = tmp_path / "checkpoint.pth.tar"
    torch.save(fixmatch_checkpoint(ref, None), src)  # trained without --use-ema: 'ema_state_dict' is None
    assert rel_diff(logits(load_fixmatch(src), X), logits(ref, X)) <= 1e-5
    assert capsys.readouterr().err == ""  # one set of weights: nothing to say
    with pytest.raises(CheckpointError, match=r"holds no 'ema_state_dict' weights .*choose --weights model"):
        load_fixmatch(src, weights="ema")
    assert rel_diff(logits(load_fixmatch(ref.state_dict()), X), logits(ref, X)) <= 1e-5


def test_a_fixmatch_file_is_never_converted_silently_as_the_xternalz_network(tmp_path, capsys):
    ref = trained(10, 2, 10, seed=4)
    ema = averaged(ref, seed=2)
    # what the xternalz reading of these weights computes: another function (the defect this guards against)
    wrong = create_model("wrn-10-2", act="leaky_relu", bn_momentum=0.001).eval()
    wrong.load_state_dict(load_fixmatch(ref.state_dict()).state_dict())
    assert rel_diff(logits(wrong, X), logits(ref, X)) > 0.05

    src = tmp_path / "model_best.pth.tar"
    torch.save(fixmatch_checkpoint(ref, ema), src)
    assert wrn.cli.main(["convert", "xternalz", str(src), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "FixMatch's training code" in err[0] and "`wrn convert fixmatch`" in err[0]
    assert not (tmp_path / "o").exists()

    # the bare state dict has only xternalz's keys: its never-trained BNs tell it apart
    for state in (
        ref.state_dict(),
        ema.state_dict(),
        {f"module.{k}": v for k, v in ref.state_dict().items()},
    ):
        with pytest.raises(
            CheckpointError,
            match=r"is not a xternalz checkpoint: it looks like FixMatch's WRN.*`wrn convert fixmatch`",
        ):
            load_xternalz(state)
    # an untrained network shows nothing either way: refused, naming the formats to choose from
    fresh = SsWRN(10, 2, 10).state_dict()
    with pytest.raises(CheckpointError, match=r"cannot be told apart .*use `wrn convert fixmatch`"):
        load_xternalz(fresh)
    # and the format asked for by name reads it
    assert tuple(load_fixmatch(fresh).config["preact_first"]) == (1,)


def test_usb_checkpoint_imports_exactly_with_the_ema_by_default(tmp_path, capsys):
    ref = trained(16, 2, 10, seed=5, usb=True)
    ema = averaged(ref, seed=3)
    opt = torch.optim.SGD(ref.parameters(), lr=0.03, momentum=0.9, nesterov=True)
    src = tmp_path / "latest_model.pth"
    torch.save(  # USB's get_save_dict; the trained model runs under DistributedDataParallel ('module.')
        {
            "model": {f"module.{k}": v for k, v in ref.state_dict().items()},
            "ema_model": ema.state_dict(),
            "optimizer": opt.state_dict(),
            "loss_scaler": torch.amp.GradScaler("cpu", enabled=False).state_dict(),
            "it": 1024,
            "epoch": 2,
            "best_it": 512,
            "best_eval_acc": 0.93,
        },
        src,
    )
    assert wrn.cli.main(["convert", "usb", str(src), str(tmp_path / "m")]) == 0
    assert "read the averaged (EMA) weights 'ema_model'" in capsys.readouterr().err
    model = load_model(tmp_path / "m")
    assert rel_diff(logits(model, X), logits(ema, X)) <= 1e-5
    assert model.config["stem_bias"] is True and model.config["head_bn_eps"] == 1e-3
    assert count_parameters(model) == sum(p.numel() for p in ref.parameters())
    assert rel_diff(logits(load_usb(src, weights="model"), X), logits(ref, X)) <= 1e-5

    for fmt, words in (
        ("xternalz", "USB checkpoint"),
        ("fixmatch", "USB checkpoint"),
    ):
        assert wrn.cli.main(["convert", fmt, str(src), str(tmp_path / fmt)]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "`wrn convert usb`" in err and "\n" not in err
    with pytest.raises(CheckpointError, match=r"looks like a USB WideResNet .*use `wrn convert usb`"):
        load_xternalz(ema.state_dict())


def test_fixmatch_named_models_are_that_network():
    for name, k, params in (("wrn-28-2-fixmatch", 2, 1_467_610), ("wrn-28-8-fixmatch", 8, 23_354_842)):
        ours = create_model(name)
        assert count_parameters(ours) == params == sum(p.numel() for p in SsWRN(28, k, 10).parameters())
        paper = create_model(f"wrn-28-{k}").config
        fixmatch = {"act": "leaky_relu", "bn_momentum": 0.001, "preact_first": [1]}
        assert ours.config == {**paper, "name": name, **fixmatch}
    ref = trained(28, 2, 10, seed=6)
    ours = create_model("wrn-28-2-fixmatch").eval()
    ours.load_state_dict(load_fixmatch(ref.state_dict()).state_dict())
    assert rel_diff(logits(ours, X), logits(ref, X)) <= 1e-5
    assert count_parameters(create_model("wrn-28-2")) == 1_467_610  # the paper's wrn-28-2 stays as it was


def test_docs_fixmatch_table_is_what_the_models_count():
    from pathlib import Path

    from wrn.models.table import shipped_rows

    text = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    rows = shipped_rows()
    for name in ("wrn-28-2-fixmatch", "wrn-28-8-fixmatch"):
        lines = [line for line in text.splitlines() if line.startswith(f"| {name} |")]
        cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
        # its row in the FixMatch table (name, parameters, multiply-adds) and in the model table
        assert [f"{rows[name]['params']:,}", f"{rows[name]['macs'] / 1e9:.3f} G"] in [c[1:3] for c in cells]
        assert [f"{rows[name]['params']:,}", f"{rows[name]['macs'] / 1e9:.3f}"] in [c[3:5] for c in cells]
    at_100 = count_parameters(create_model("wrn-28-8-fixmatch", num_classes=100))
    assert f"({at_100:,} parameters at 100 classes)" in text
