"""the de facto WideResNet checkpoints, the activation / BN-momentum variants and the robustness sizes.

The reference network below is the paper's (docs/models.md) B(3,3) WRN written out again, under the key names of the widely
copied PyTorch port (``conv1``, ``block{1,2,3}.layer.{i}.{bn1,conv1,bn2,conv2,convShortcut}``, ``bn1``, ``fc``),
with its 8x8 average pool. Its state dicts are what such checkpoints hold.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import wrn
from conftest import run_wrn as run_cli
from wrn.errors import CheckpointError, ConfigError
from wrn.models import count_parameters, create_model, load_model, load_xternalz, save_model

# ------------------------------------------------------------------------ the reference, in the port's key names


class RefBlock(nn.Module):
    """The paper's block (docs/models.md): o1 = ReLU(BN(x)); conv3x3(o1, stride) -> BN-ReLU -> dropout -> conv3x3; plus a 1x1
    projection of o1 where the channel count changes, else x."""

    def __init__(self, c_in: int, c_out: int, stride: int, drop: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.convShortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if c_in != c_out else None
        self.drop = drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1 = F.relu(self.bn1(x))
        h = F.relu(self.bn2(self.conv1(o1)))
        h = self.conv2(F.dropout(h, self.drop, self.training))
        return (x if self.convShortcut is None else self.convShortcut(o1)) + h


class RefGroup(nn.Module):
    def __init__(self, n: int, c_in: int, c_out: int, stride: int, drop: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[RefBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1, drop) for i in range(n)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class RefWRN(nn.Module):
    """WRN-depth-k: 16-wide stem conv, three groups of (depth-4)/6 blocks at 16k, 32k, 64k, BN-ReLU, 8x8 average
    pool, fc. ``trades=True`` adds the unused ``sub_block1`` that the TRADES copy carries."""

    def __init__(self, depth: int, k: int, classes: int, drop: float = 0.0, trades: bool = False) -> None:
        super().__init__()
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.block1 = RefGroup(n, 16, 16 * k, 1, drop)
        if trades:
            self.sub_block1 = RefGroup(n, 16, 16 * k, 1, drop)
        self.block2 = RefGroup(n, 16 * k, 32 * k, 2, drop)
        self.block3 = RefGroup(n, 32 * k, 64 * k, 2, drop)
        self.bn1 = nn.BatchNorm2d(64 * k)
        self.fc = nn.Linear(64 * k, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block3(self.block2(self.block1(self.conv1(x))))
        h = F.avg_pool2d(F.relu(self.bn1(h)), 8)
        return self.fc(h.flatten(1))


def trained_like(ref: RefWRN, gen: torch.Generator) -> RefWRN:
    """Random BN affine parameters, then running statistics that are the statistics of a batch (as after
    training), so that eval-mode activations keep a sane scale even in WRN-34-10."""
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_((torch.rand(m.num_features, generator=gen) - 0.5) * 0.4)
                m.reset_running_stats()
                m.momentum = None  # cumulative average: after one batch, exactly its statistics
        ref.train()
        ref(torch.randn(4, 3, 32, 32, generator=gen))
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1
    return ref.eval()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# ------------------------------------------------------------------------------------------- load_xternalz

CASES = [(16, 1, 1000), (28, 10, 10), (34, 10, 10), (40, 2, 100)]  # WRN-16-1: no projection in block1


@pytest.mark.parametrize("depth, k, classes", CASES, ids=[f"wrn-{d}-{k}-c{c}" for d, k, c in CASES])
def test_xternalz_state_dict_gives_the_same_outputs_in_eval_and_train_mode(depth, k, classes):
    gen = torch.Generator().manual_seed(depth * 100 + k)
    torch.manual_seed(depth)
    ref = trained_like(RefWRN(depth, k, classes), gen)
    sd = ref.state_dict()
    if depth == 16:
        assert "block1.layer.0.convShortcut.weight" not in sd and "block2.layer.0.convShortcut.weight" in sd
    ours = load_xternalz(sd)
    assert ours.config["name"] == f"wrn-{depth}-{k}" and ours.config["num_classes"] == classes
    assert not ours.training and count_parameters(ours) == sum(p.numel() for p in ref.parameters())

    x = torch.randn(2, 3, 32, 32, generator=gen)
    with torch.no_grad():
        expected = ref(x)
        assert expected.abs().max() > 0.1  # a real signal, not a vanishing one
        assert max_diff(ours(x), expected) <= 1e-5

        ref.train()  # no dropout: batch statistics on both sides, running statistics updated alike
        ours.train()
        assert max_diff(ours(x), ref(x)) <= 1e-5
    for theirs, mine in (("bn1", "bn"), ("block3.layer.0.bn2", "layer3.0.bn2")):
        for stat in ("running_mean", "running_var"):
            assert max_diff(ours.state_dict()[f"{mine}.{stat}"], ref.state_dict()[f"{theirs}.{stat}"]) <= 1e-6


def test_xternalz_file_with_module_prefix_wrapper_and_trades_sub_block(tmp_path):
    gen = torch.Generator().manual_seed(5)
    ref = trained_like(RefWRN(16, 2, 10, trades=True), gen)
    sd = ref.state_dict()
    n_unused = sum(1 for k in sd if k.startswith("sub_block1."))
    assert n_unused == 2 * 12 + 1  # two blocks of 2 BNs (5 tensors each) + 2 convs, + block 0's projection
    x = torch.randn(2, 3, 32, 32, generator=gen)
    with torch.no_grad():
        expected = ref(x)
    for i, wrap in enumerate(
        [
            lambda d: d,
            lambda d: {"state_dict": {f"module.{k}": v for k, v in d.items()}, "epoch": 76},
            lambda d: {"model": d, "optimizer": {"state": {}, "param_groups": [{"lr": 0.01}]}},
        ]
    ):
        path = tmp_path / f"ckpt{i}.pt"
        torch.save(wrap(sd), path)
        with pytest.warns(UserWarning, match=rf"dropped {n_unused} tensors of sub_block1\.\*") as rec:
            model = load_xternalz(path)
        assert len(rec) == 1 and "\n" not in str(rec[0].message)
        with torch.no_grad():
            assert max_diff(model(x), expected) <= 1e-5


def test_xternalz_without_num_batches_tracked_and_in_half_precision():
    """Files of PyTorch < 0.4.1 have no num_batches_tracked; some ports save float16."""
    gen = torch.Generator().manual_seed(2)
    ref = trained_like(RefWRN(10, 1, 10), gen)
    sd = {k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    x = torch.randn(2, 3, 32, 32, generator=gen)
    with torch.no_grad():
        assert max_diff(load_xternalz(sd)(x), ref(x)) <= 1e-5
        half = load_xternalz({k: v.half() for k, v in sd.items()})
        assert half.fc.weight.dtype == torch.float32
        assert max_diff(half(x), ref(x)) < 0.05


def test_cli_converts_xternalz_and_load_model_reads_it(tmp_path):
    gen = torch.Generator().manual_seed(7)
    ref = trained_like(RefWRN(10, 2, 100, trades=True), gen)
    src = tmp_path / "model_best.pth.tar"
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}, "best_prec1": 80.1}, src
    )
    proc = run_cli("convert", "xternalz", str(src), str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert f"{src} -> {tmp_path / 'out'}: wrn-10-2, 100 classes" in proc.stdout
    notes = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(notes) == 1 and notes[0].startswith("note: dropped 13 tensors of sub_block1.*")
    model = load_model(tmp_path / "out")
    x = torch.randn(3, 3, 32, 32, generator=gen)
    with torch.no_grad():
        assert max_diff(model(x), ref(x)) <= 1e-5
    doc = json.loads((tmp_path / "out" / "model.json").read_text())
    assert doc["metadata"]["format"] == "xternalz" and doc["config"]["name"] == "wrn-10-2"


def test_xternalz_refuses_code_foreign_formats_and_wrong_keys(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "x": Evil()}, evil)
    with pytest.raises(CheckpointError, match="pickled Python objects .* never unpickles"):
        load_xternalz(evil)
    assert not marker.exists()

    with pytest.raises(CheckpointError, match=r"holds a dict with keys 'epoch', 'optimizer', 'net'"):
        load_xternalz({"epoch": 3, "optimizer": {}, "net": [1, 2]})
    official = {"conv0": torch.zeros(16, 3, 3, 3), "group0.block0.conv0": torch.zeros(16, 16, 3, 3)}
    with pytest.raises(CheckpointError, match=r"authors' CIFAR code .*use `wrn convert official`"):
        load_xternalz(official)
    tv = {k: v for k, v in create_model("resnet-18").state_dict().items()}
    with pytest.raises(CheckpointError, match="ImageNet ResNet in torchvision's format"):
        load_xternalz(tv)
    with pytest.raises(CheckpointError, match=r"holds keys 'features\.0\.weight', 'classifier\.weight'"):
        load_xternalz({"features.0.weight": torch.zeros(1), "classifier.weight": torch.zeros(1)})

    sd = trained_like(RefWRN(10, 1, 10), torch.Generator().manual_seed(0)).state_dict()
    missing = {k: v for k, v in sd.items() if k != "block2.layer.0.convShortcut.weight"}
    with pytest.raises(CheckpointError, match=r"missing keys 'block2\.layer\.0\.convShortcut\.weight'\."):
        load_xternalz(missing)
    extra = {**sd, "fc2.weight": torch.zeros(3), "block1.layer.0.se.weight": torch.zeros(3)}
    with pytest.raises(
        CheckpointError, match=r"unexpected keys 'fc2\.weight', 'block1\.layer\.0\.se\.weight'\."
    ):
        load_xternalz(extra)
    uneven = {
        **sd,
        **{k.replace("layer.0", "layer.1"): v for k, v in sd.items() if k.startswith("block3.layer.0")},
    }
    with pytest.raises(CheckpointError, match=r"same number of blocks .*block3: \[0, 1\]"):
        load_xternalz(uneven)
    wrong = {**sd, "block2.layer.0.conv2.weight": torch.zeros(32, 32, 1, 1)}
    with pytest.raises(
        CheckpointError,
        match=r"mismatched shapes .*block2\.layer\.0\.conv2\.weight \(32, 32, 1, 1\) vs \(32, 32, 3, 3\)",
    ):
        load_xternalz(wrong)

    proc = run_cli("convert", "xternalz", str(evil), str(tmp_path / "o"))
    assert proc.returncode == 2 and "never unpickles" in proc.stderr and "Traceback" not in proc.stderr
    assert "weights_only=False" not in proc.stderr  # never torch's advice to load it anyway
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("convert", "xternalz", str(tmp_path / "missing.pt"), str(tmp_path / "o"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr


# ------------------------------------------------------------------------------------------ parameter counts


def closed_form_wrn_params(depth: int, k: int, classes: int) -> int:
    """The paper's block (docs/models.md) counted by hand: stem, per block BN(c_in) + conv3x3 + BN + conv3x3 (+ 1x1 projection
    where the channel count changes), head BN + Linear."""
    n, total, c_in = (depth - 4) // 6, 3 * 16 * 9, 16
    for w in (16 * k, 32 * k, 64 * k):
        for _ in range(n):
            total += 2 * c_in + 9 * c_in * w + 2 * w + 9 * w * w + (c_in * w if c_in != w else 0)
            c_in = w
    return total + 2 * c_in + c_in * classes + classes


@pytest.mark.parametrize(
    "name, classes, expected",
    [
        ("wrn-34-10", 10, 46_160_474),  # "46.16 M" in the robustness literature
        ("wrn-34-10", 100, 46_218_164),
        ("wrn-70-16", 10, 266_796_506),  # "266.8 M"
        ("wrn-70-16", 100, 266_888_756),
    ],
)
def test_robustness_sizes(name, classes, expected):
    depth, k = (int(p) for p in name.split("-")[1:])
    assert closed_form_wrn_params(depth, k, classes) == expected
    for act in ("relu", "silu"):
        with torch.device("meta"):
            model = create_model(name, num_classes=classes, act=act, bn_momentum=0.001)
        assert count_parameters(model) == expected
    with torch.device("meta"):
        pooled = create_model(name, num_classes=0)
    assert count_parameters(pooled) == expected - (64 * k + 1) * classes


# ------------------------------------------------------------------------------- act and bn_momentum variants


def functional_wrn(model: nn.Module, x: torch.Tensor, act, momentum: float, train: bool) -> torch.Tensor:
    """The paper's block (docs/models.md) with the activation ``act`` and BN momentum ``momentum``, read by our documented keys;
    in train mode it updates copies of the running statistics, returned in ``model._ref_stats``."""
    sd = dict(model.named_parameters()) | dict(model.named_buffers())
    stats = {}

    def bn(h, key):
        mean, var = sd[f"{key}.running_mean"].clone(), sd[f"{key}.running_var"].clone()
        out = F.batch_norm(h, mean, var, sd[f"{key}.weight"], sd[f"{key}.bias"], train, momentum, 1e-5)
        stats[key] = (mean, var)
        return out

    h = F.conv2d(x, sd["conv1.weight"], padding=1)
    for g in range(3):
        for i in range(model.config["blocks_per_group"]):
            key, stride = f"layer{g + 1}.{i}", 2 if g > 0 and i == 0 else 1
            o1 = act(bn(h, f"{key}.bn1"))
            out = F.conv2d(o1, sd[f"{key}.conv1.weight"], stride=stride, padding=1)
            out = F.conv2d(act(bn(out, f"{key}.bn2")), sd[f"{key}.conv2.weight"], padding=1)
            short = f"{key}.shortcut.weight"
            h = out + (F.conv2d(o1, sd[short], stride=stride) if short in sd else h)
    h = act(bn(h, "bn"))
    model._ref_stats = stats
    return F.linear(h.mean(dim=(2, 3)), sd["fc.weight"], sd["fc.bias"])


ACTS = {"relu": F.relu, "leaky_relu": lambda h: F.leaky_relu(h, 0.1), "silu": F.silu}


@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("train", [False, True])
def test_act_and_bn_momentum_compute_the_documented_network(act, train):
    torch.manual_seed(3)
    momentum = 0.001 if act == "leaky_relu" else 0.1
    model = create_model("wrn-16-2", act=act, bn_momentum=momentum)
    default = create_model("wrn-16-2")
    assert list(model.state_dict()) == list(default.state_dict())  # keys unchanged by the variants
    assert (
        count_parameters(model) == count_parameters(default) == closed_form_wrn_params(16, 2, 10) == 691_674
    )
    kinds = {type(m) for m in model.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.SiLU))}
    assert kinds == {type(wrn.models.layers.make_act(act))}
    assert {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {momentum}
    if act == "leaky_relu":
        assert {m.negative_slope for m in model.modules() if isinstance(m, nn.LeakyReLU)} == {0.1}
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.3, 0.3)
    model.train(train)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = functional_wrn(model, x, ACTS[act], momentum, train)
        got = model(x)
    assert max_diff(got, expected) <= 1e-5
    if train:  # the running statistics moved by exactly `momentum` of the batch's
        for key, (mean, var) in model._ref_stats.items():
            bn = model.get_submodule(key)
            assert torch.allclose(bn.running_mean, mean, atol=1e-6) and torch.allclose(
                bn.running_var, var, atol=1e-6
            )


def test_defaults_stay_the_papers_and_old_configs_still_load(tmp_path):
    model = create_model("wrn-16-2")
    assert model.config["act"] == "relu" and model.config["bn_momentum"] == 0.1
    assert all(type(m) is nn.ReLU for m in model.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.SiLU)))
    save_model(model, tmp_path / "old")
    doc = json.loads((tmp_path / "old" / "model.json").read_text())
    for key in ("act", "bn_momentum"):  # a model.json written before the variants existed
        del doc["config"][key]
    (tmp_path / "old" / "model.json").write_text(json.dumps(doc))
    old = load_model(tmp_path / "old")
    assert old.config == model.config
    pre = create_model("preact-resnet-164", act="silu")
    assert wrn.build_model(pre.config).config["act"] == "silu"


@pytest.mark.parametrize("name", ["wrn-10-2", "preact-resnet-110", "resnet-18"])
def test_variants_round_trip_through_save_load_and_build(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, act="leaky_relu", bn_momentum=0.01).eval()
    assert wrn.build_model(model.config).config == model.config
    save_model(model, tmp_path)
    again = load_model(tmp_path)
    assert again.config == model.config
    assert {m.momentum for m in again.modules() if isinstance(m, nn.BatchNorm2d)} == {0.01}
    assert all(not isinstance(m, (nn.ReLU, nn.SiLU)) for m in again.modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


def test_imagenet_variants_keep_torchvision_keys():
    model = create_model("resnet-18", act="silu")
    assert list(model.state_dict()) == list(create_model("resnet-18").state_dict())
    assert sum(isinstance(m, nn.SiLU) for m in model.modules()) == 9  # the stem's + one per basic block
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"act": "gelu"}, "act must be one of relu, leaky_relu, silu"),
        ({"bn_momentum": 0.0}, r"bn_momentum must be in \(0, 1\]"),
        ({"bn_momentum": 0.999}, None),  # allowed (a very fast average), just not FixMatch's convention
        ({"num_classes": -1}, "num_classes is -1; it must be between 0 and 1,000,000"),
    ],
)
def test_bad_variant_values(kwargs, words):
    if words is None:
        assert create_model("wrn-10-1", **kwargs).config["bn_momentum"] == 0.999
        return
    with pytest.raises(ConfigError, match=words):
        create_model("wrn-10-1", **kwargs)


def test_wrn_train_takes_act_and_bn_momentum(tmp_path):
    """The CLI passes model.act and model.bn_momentum to the model it trains and saves."""
    run = tmp_path / "run"
    proc = run_cli(
        "train",
        "--preset",
        "demo",
        "--epochs",
        "1",
        "--model",
        "wrn-10-2",
        "--set",
        "model.act=silu",
        "--set",
        "model.bn_momentum=0.001",
        "--out",
        str(run),
    )
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["act"] == "silu" and config["model"]["bn_momentum"] == 0.001
    model = load_model(run)
    assert model.config["act"] == "silu" and model.config["bn_momentum"] == 0.001
    assert sum(isinstance(m, nn.SiLU) for m in model.modules()) == 4  # one per block (3) and the head's
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {0.001}
    bad = run_cli("train", "--preset", "demo", "--set", "model.act=tanh", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "model.act = 'tanh'" in bad.stderr and "Traceback" not in bad.stderr


def test_lazy_top_level_name():
    assert wrn.load_xternalz is load_xternalz and "load_xternalz" in wrn.__all__
