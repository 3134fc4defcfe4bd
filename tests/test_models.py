"""The model zoo: exact architectures, parameter counts, torchvision compatibility, dropout, training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

import wrn
from wrn.errors import ConfigError
from wrn.models import PreActResNet, WideResNet, count_parameters, create_model, list_models, model_info

# The paper's networks (docs/models.md): name -> (params at 10 classes, params at 100 classes). ImageNet: 1000 classes.
CIFAR_PARAMS = {
    "wrn-40-1": (563_930, 569_780),
    "wrn-40-2": (2_243_546, 2_255_156),
    "wrn-40-4": (8_949_210, 8_972_340),
    "wrn-40-8": (35_748_314, 35_794_484),
    "wrn-28-10": (36_479_194, 36_536_884),
    "wrn-28-12": (52_517_850, 52_587_060),
    "wrn-22-8": (17_158_106, 17_204_276),
    "wrn-22-10": (26_797_914, 26_855_604),
    "wrn-16-8": (10_961_370, 11_007_540),
    "wrn-16-10": (17_116_634, 17_174_324),
    "wrn-16-4": (2_748_890, 2_772_020),
    "wrn-52-1": (758_362, 764_212),
    "wrn-40-10": (55_841_754, 55_899_444),
    "wrn-28-2": (1_467_610, 1_479_220),
    "wrn-34-10": (46_160_474, 46_218_164),
    "wrn-40-2-b131": (1_429_082, 1_440_692),
    "wrn-40-2-b31": (1_211_354, 1_222_964),
    "wrn-40-2-b13": (1_297_370, 1_308_980),
    "wrn-40-2-b311": (1_343_066, 1_354_676),
    "wrn-22-2-b313": (1_145_498, 1_157_108),
    "wrn-40-2-l1": (2_243_546, 2_255_156),
    "wrn-40-2-l2": (2_243_546, 2_255_156),
    "wrn-40-2-l3": (2_243_546, 2_255_156),
    "wrn-40-2-l4": (2_243_546, 2_255_156),
    "preact-resnet-164": (1_703_258, 1_726_388),
    "preact-resnet-1001": (10_327_706, 10_350_836),
    "preact-resnet-110": (1_730_522, 1_736_372),
}
IMAGENET_PARAMS = {
    "resnet-50": 25_557_032,
    "resnet-101": 44_549_160,
    "resnet-152": 60_192_808,
    "wrn-50-2": 68_883_240,
    "wrn-101-2": 126_886_696,
    "imagenet-wrn-18-1.0": 11_689_512,
    "imagenet-wrn-18-1.5": 25_875_816,
    "imagenet-wrn-18-2.0": 45_618_216,
    "imagenet-wrn-18-3.0": 101_783_976,
    "imagenet-wrn-34-1.0": 21_797_672,
    "imagenet-wrn-34-1.5": 48_613_608,
    "imagenet-wrn-34-2.0": 86_036_008,
}
TORCHVISION_TWINS = {
    "resnet-18": "resnet18",
    "imagenet-wrn-18-1.0": "resnet18",
    "resnet-34": "resnet34",
    "imagenet-wrn-34-1.0": "resnet34",
    "resnet-50": "resnet50",
    "resnet-101": "resnet101",
    "resnet-152": "resnet152",
    "wrn-50-2": "wide_resnet50_2",
    "wrn-101-2": "wide_resnet101_2",
}
BLOCK_TYPES = ["b33", "b313", "b131", "b13", "b31", "b311"]


def meta_model(name: str, num_classes: int | None = None, **kw) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(name, num_classes=num_classes, **kw)


@pytest.mark.parametrize("name", list(CIFAR_PARAMS))
def test_cifar_parameter_counts_match_spec(name):
    p10, p100 = CIFAR_PARAMS[name]
    assert count_parameters(meta_model(name, 10)) == p10
    assert count_parameters(meta_model(name, 100)) == p100


@pytest.mark.parametrize("name", list(IMAGENET_PARAMS))
def test_imagenet_parameter_counts_match_spec(name):
    model = meta_model(name)
    assert model.config["num_classes"] == 1000
    assert count_parameters(model) == IMAGENET_PARAMS[name]
    # 10 and 100 classes change only the classifier: fc = (C_final + 1) * classes.
    c_final = model.fc.in_features
    for classes in (10, 100):
        expected = IMAGENET_PARAMS[name] - (c_final + 1) * 1000 + (c_final + 1) * classes
        assert count_parameters(meta_model(name, classes)) == expected


def test_every_spec_name_is_registered():
    names = set(list_models())
    assert set(CIFAR_PARAMS) <= names and set(IMAGENET_PARAMS) <= names


@pytest.mark.parametrize("name", list(TORCHVISION_TWINS))
def test_torchvision_state_dict_loads_strict_and_outputs_match(name):
    torch.manual_seed(0)
    tv = getattr(torchvision.models, TORCHVISION_TWINS[name])(num_classes=1000).eval()
    for m in tv.modules():  # non-trivial BN statistics, so a wrong BN mapping would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    ours = create_model(name).eval()
    assert list(ours.state_dict()) == list(tv.state_dict())
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - tv(x)).abs().max().item() <= 1e-5


# ---------------------------------------------------------------- an independent reference forward (docs/models.md)


def reference_wrn_forward(model: WideResNet, x: torch.Tensor, train: bool) -> torch.Tensor:
    """The paper's block (docs/models.md) written out with functional ops, reading the weights by their documented keys."""
    sd = dict(model.named_parameters()) | dict(model.named_buffers())
    cfg = model.config

    def bn(h, key):
        return F.batch_norm(
            h,
            sd[f"{key}.running_mean"].clone(),
            sd[f"{key}.running_var"].clone(),
            sd[f"{key}.weight"],
            sd[f"{key}.bias"],
            train,
            0.1,
            1e-5,
        )

    h = F.conv2d(x, sd["conv1.weight"], padding=1)
    for g in range(3):
        for i in range(cfg["blocks_per_group"]):
            key = f"layer{g + 1}.{i}"
            stride = 2 if g > 0 and i == 0 else 1
            o1 = F.relu(bn(h, f"{key}.bn1"))
            k1 = cfg["kernels"][0]
            out = F.conv2d(o1, sd[f"{key}.conv1.weight"], stride=stride, padding=k1 // 2)
            for j, k in enumerate(cfg["kernels"][1:], start=2):
                out = F.relu(bn(out, f"{key}.bn{j}"))
                out = F.conv2d(out, sd[f"{key}.conv{j}.weight"], padding=k // 2)
            short = f"{key}.shortcut.weight"
            h = out + (F.conv2d(o1, sd[short], stride=stride) if short in sd else h)
    h = F.relu(bn(h, "bn"))
    return F.linear(h.mean(dim=(2, 3)), sd["fc.weight"], sd["fc.bias"])


@pytest.mark.parametrize("suffix", BLOCK_TYPES + ["l1", "l3"])
@pytest.mark.parametrize("train", [False, True])
def test_wrn_matches_reference_forward_for_every_block_type(suffix, train):
    torch.manual_seed(1)
    depth = 10 if suffix.startswith("b") else 16 if suffix == "l1" else 22
    model = create_model(f"wrn-{depth}-2-{suffix}")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    model.train(train)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = reference_wrn_forward(model, x, train)
        got = model(x)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)


def test_block_structure_stride_projection_and_stem():
    model = create_model("wrn-16-4")
    assert model.conv1.out_channels == 16 and model.conv1.bias is None  # the stem stays 16 wide
    b = model.layer2[0]
    assert b.conv1.stride == (2, 2) and b.conv2.stride == (1, 1)  # stride on the first conv
    assert b.shortcut is not None and b.shortcut.bias is None and b.shortcut.kernel_size == (1, 1)
    assert (
        model.layer1[1].shortcut is None and model.layer2[1].shortcut is None
    )  # identity where shapes agree
    assert model.layer1[0].shortcut is not None  # 16 -> 64 channels
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert all(
        m.momentum == 0.1 and m.eps == 1e-5 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )
    b131 = create_model("wrn-10-1-b131").layer3[0]
    assert [b131.conv1.stride, b131.conv2.stride, b131.conv3.stride] == [(2, 2), (1, 1), (1, 1)]
    assert [b131.conv1.kernel_size, b131.conv2.kernel_size] == [(1, 1), (3, 3)]


def test_table3_convention_keeps_depth_and_varies_blocks():
    for convs, n in [(1, 12), (2, 6), (3, 4), (4, 3)]:
        model = meta_model(f"wrn-40-2-l{convs}")
        assert model.config["blocks_per_group"] == n and model.config["kernels"] == [3] * convs
        assert len(model.layer1) == n
    assert meta_model("wrn-40-2-b131").config["blocks_per_group"] == 6  # first convention: N = (d-4)/6


def test_preact_resnet_110_is_the_k1_wrn_block():
    a, b = create_model("preact-resnet-110"), WideResNet(depth=112, width=1)
    assert [v.shape for v in a.state_dict().values()] == [v.shape for v in b.state_dict().values()]
    bottleneck = create_model("preact-resnet-164")
    assert bottleneck.layer1[0].conv3.out_channels == 64
    assert isinstance(bottleneck, PreActResNet)


@pytest.mark.parametrize("name", ["preact-resnet-164", "preact-resnet-1001"])
def test_thin_bottleneck_strides_on_its_first_1x1_conv(name):
    """The authors' resnet-pre-act.lua halves the resolution in the first 1x1 conv
    (and the projection), not in the 3x3. Parameter counts cannot tell; the shapes each conv sees can."""
    model = create_model(name).eval()
    seen = {}
    hooks = [
        m.register_forward_hook(
            lambda mod, inp, out, key=key: seen.__setitem__(key, (inp[0].shape, out.shape))
        )
        for key, m in model.named_modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    for layer, side_in in (("layer2", 32), ("layer3", 16)):
        half = side_in // 2
        (c1_in, c1_out), (c2_in, c2_out) = seen[f"{layer}.0.conv1"], seen[f"{layer}.0.conv2"]
        assert c1_in[-1] == side_in and c1_out[-1] == half  # the 1x1 reduce halves the resolution
        assert c2_in[-1] == half and c2_out[-1] == half  # the 3x3 keeps it
        assert seen[f"{layer}.0.shortcut"][1][-1] == half
        assert seen[f"{layer}.1.conv1"][1][-1] == half  # later blocks never stride
    strided = sorted(k for k, (i, o) in seen.items() if i[-1] != o[-1])
    assert strided == ["layer2.0.conv1", "layer2.0.shortcut", "layer3.0.conv1", "layer3.0.shortcut"]


# ------------------------------------------------------------------------------------------------- dropout


def test_dropout_sits_before_every_conv_but_the_first_and_only_in_train_mode():
    torch.manual_seed(0)
    p = 0.5
    model = create_model("wrn-10-2-b333", dropout=p)
    block = model.layer2[0]
    seen = {}
    block.bn1.register_forward_hook(lambda m, i, o: seen.__setitem__("bn1", o.detach().clone()))
    block.bn2.register_forward_hook(lambda m, i, o: seen.__setitem__("bn2", o.detach().clone()))
    block.conv1.register_forward_pre_hook(lambda m, i: seen.__setitem__("conv1_in", i[0].detach().clone()))
    block.conv2.register_forward_pre_hook(lambda m, i: seen.__setitem__("conv2_in", i[0].detach().clone()))
    x = torch.randn(8, 3, 32, 32)

    model.train()
    model(x)
    assert torch.equal(seen["conv1_in"], F.relu(seen["bn1"]))  # no dropout before the first conv
    act, dropped = F.relu(seen["bn2"]), seen["conv2_in"]
    alive = act > 0
    kept = alive & (dropped != 0)
    frac_dropped = 1 - kept.sum().item() / alive.sum().item()
    assert abs(frac_dropped - p) < 0.05  # element-wise, at rate p
    assert torch.allclose(dropped[kept], act[kept] / (1 - p))  # inverted dropout after BN-ReLU
    # channel dropout would zero whole feature maps; element-wise leaves almost every map partly alive
    per_map_alive = kept.flatten(2).any(dim=2)
    assert per_map_alive.float().mean() > 0.95

    model.eval()
    with torch.no_grad():
        y1, y2 = model(x), model(x)
        twin = create_model("wrn-10-2-b333", dropout=0.0).eval()
        twin.load_state_dict(model.state_dict())
        assert torch.equal(y1, y2)  # deterministic in eval mode
        assert torch.allclose(y1, twin(x), atol=1e-6)  # and equal to no dropout at all


def test_train_mode_dropout_is_stochastic():
    model = create_model("wrn-10-1", dropout=0.3).train()
    x = torch.randn(4, 3, 32, 32)
    assert not torch.equal(model(x), model(x))


# ----------------------------------------------------------------------------------------- inputs and init


@pytest.mark.parametrize("size", [8, 28, 40])
def test_any_input_size_and_grayscale(size):
    model = create_model("wrn-10-1", num_classes=7, in_channels=1).eval()
    assert model(torch.randn(3, 1, size, size)).shape == (3, 7)


def test_global_pooling_equals_the_original_8x8_pool_at_32x32():
    model = create_model("wrn-10-1").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape[-2:] == (8, 8)
        expected = model.fc(F.avg_pool2d(feats, 8).flatten(1))
        assert torch.allclose(model(x), expected, atol=1e-6)


def test_paper_initialisation_and_pytorch_option():
    torch.manual_seed(0)
    model = create_model("wrn-16-8")
    conv = model.layer3[1].conv2
    fan_in = conv.in_channels * 9
    assert abs(conv.weight.std().item() - math.sqrt(2 / fan_in)) / math.sqrt(2 / fan_in) < 0.02
    gammas = torch.cat([m.weight for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert gammas.min() >= 0 and gammas.max() <= 1 and abs(gammas.mean().item() - 0.5) < 0.02
    assert torch.all(model.fc.bias == 0) and model.fc.weight.abs().max() <= 1 / math.sqrt(512)
    plain = create_model("wrn-16-8", init="pytorch")
    assert torch.all(plain.layer1[0].bn1.weight == 1)


# ----------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("suffix", BLOCK_TYPES + ["l1", "l4"])
def test_a_wrn_of_every_block_type_learns_a_fixed_batch(suffix):
    torch.manual_seed(0)
    depth = 16 if suffix.startswith("l") else 10
    model = create_model(f"wrn-{depth}-1-{suffix}", dropout=0.0)
    x, y = torch.randn(32, 3, 16, 16), torch.randint(0, 10, (32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.4 * losses[0], losses


def test_channels_last_matches_eager():
    torch.manual_seed(0)
    model = create_model("wrn-10-2").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert torch.allclose(cl, ref, atol=1e-5, rtol=1e-4)


def test_torch_compile_matches_eager():
    torch.manual_seed(0)
    model = create_model("wrn-10-1").eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
        out = torch.compile(model)(x)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "name, words",
    [
        ("wrn-27-10", "6n+4"),
        ("wrn-50-4", "6n+4"),
        ("wrn-40-2-l5", "multiple of 3*5"),
        ("wrn-28-0", "positive"),
        ("wrn-40-2-b323", "odd"),
        ("wrn-28-1O", "did you mean"),
        ("resnet-51", "did you mean 'resnet-50'"),
    ],
)
def test_bad_names_say_what_is_wrong(name, words):
    with pytest.raises(ConfigError, match=words.replace("+", r"\+").replace("*", r"\*").replace("(", r"\(")):
        create_model(name)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"dropout": -0.1}, r"dropout must be in \[0, 1\)"),
        ({"depth": 16}, "set by the model name"),
        ({"widht": 2}, "has no option 'widht'"),
        ({"init": "xavier"}, "init must be one of"),
    ],
)
def test_bad_overrides_say_what_is_wrong(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        create_model("wrn-16-4", **kwargs)


def test_bad_constructor_values():
    with pytest.raises(ConfigError, match="positive integer"):
        WideResNet(depth=16, width=0)
    with pytest.raises(ConfigError, match="odd"):
        WideResNet(depth=16, width=1, kernels=(3, 2))
    with pytest.raises(ConfigError, match="num_classes"):  # 0 is allowed: no classifier
        create_model("wrn-16-4", num_classes=-1)


def test_model_config_rebuilds_the_model():
    model = create_model("wrn-22-2-b313", num_classes=100, dropout=0.3, in_channels=1)
    again = wrn.build_model(model.config)
    assert again.config == model.config
    assert [v.shape for v in again.state_dict().values()] == [v.shape for v in model.state_dict().values()]
    assert model_info("wrn-28-10")["input_size"] == 32 and model_info("wrn-50-2")["input_size"] == 224


def test_the_model_table_of_the_docs_is_what_wrn_models_prints(capsys):
    """docs/models.md's table is `wrn models --format markdown` (parameters and multiply-adds from the code)."""
    from pathlib import Path

    from wrn.cli import main

    assert main(["models", "--format", "markdown"]) == 0
    table = capsys.readouterr().out.strip()
    docs = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    assert table in docs, "regenerate the table in docs/models.md with `wrn models --format markdown`"
