"""feature maps with timm's conventions, forward_features / forward_head, num_classes=0, and a detection
backbone that torchvision's FasterRCNN trains on."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

import wrn
from conftest import randomize_bn_
from wrn.errors import ConfigError
from wrn.models import FeatureNet, ImageNetResNet, count_parameters, create_model, load_model, save_model
from wrn.models.detection import backbone, freeze_batch_norm

# name -> (input side, channels of every map, reduction of every map)
FAMILIES = {
    "wrn-16-2": (32, [16, 32, 64, 128], [1, 1, 2, 4]),
    "wrn-10-1-b131": (32, [16, 16, 32, 64], [1, 1, 2, 4]),
    "preact-resnet-164": (32, [16, 64, 128, 256], [1, 1, 2, 4]),
    "resnet-18": (64, [64, 64, 128, 256, 512], [2, 4, 8, 16, 32]),
    "resnet-50": (64, [64, 256, 512, 1024, 2048], [2, 4, 8, 16, 32]),
}


def group_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What every direct child of the full model returns, recorded by hooks during a normal forward."""
    seen = {}
    hooks = [
        child.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.detach().clone()))
        for name, child in model.named_children()
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("name", list(FAMILIES))
def test_features_only_gives_the_stem_and_every_group(name):
    torch.manual_seed(0)
    side, channels, reductions = FAMILIES[name]
    model = randomize_bn_(create_model(name)).eval()
    feats = FeatureNet(model).eval()
    assert feats.feature_info.channels() == channels and feats.feature_info.reduction() == reductions
    assert model.feature_info == [
        {"num_chs": c, "reduction": r, "module": d["module"]}
        for c, r, d in zip(channels, reductions, model.feature_info, strict=True)
    ]
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        maps = feats(x)
    assert isinstance(maps, list) and len(maps) == len(channels)
    for m, c, r in zip(maps, channels, reductions, strict=True):
        assert m.shape == (2, c, side // r, side // r)
    seen = group_outputs(model, x)
    with torch.no_grad():
        assert torch.equal(maps[-1], model.forward_features(x))
    if model.config["arch"] == "ImageNetResNet":
        expected = [seen["relu"]] + [seen[f"layer{g}"] for g in range(1, 5)]
        # the stem map is the output of conv-BN-ReLU, before the max-pool
        with torch.no_grad():
            assert torch.equal(maps[0], F.relu(model.bn1(model.conv1(x))))
    else:
        # the last map is group 3 after the head's BN-ReLU, the map the classifier pools
        expected = [seen["conv1"], seen["layer1"], seen["layer2"], F.relu(model.bn(seen["layer3"]))]
    for got, want in zip(maps, expected, strict=True):
        assert torch.allclose(got, want, atol=1e-6)


def test_create_model_features_only_out_indices_and_timm_accessors():
    torch.manual_seed(0)
    feats = create_model("wrn-16-4", features_only=True, out_indices=(1, -1))
    info = feats.feature_info
    assert info.out_indices == (1, 3) and info.channels() == [64, 256] and info.reduction() == [1, 4]
    assert info.module_name() == ["layer1", "act"] and len(info) == 4
    assert info.get_dicts() == [
        {"num_chs": 64, "reduction": 1, "module": "layer1", "index": 1},
        {"num_chs": 256, "reduction": 4, "module": "act", "index": 3},
    ]
    assert info.channels(0) == 16 and info.reduction([0, 2]) == [1, 2] and info[2]["num_chs"] == 128
    assert info.get_dicts(keys=["num_chs"], idx=0) == {"num_chs": 16}
    maps = feats(torch.randn(1, 3, 40, 40))
    assert [tuple(m.shape) for m in maps] == [(1, 64, 40, 40), (1, 256, 10, 10)]
    # timm: an int n means the last n maps; the classifier and unneeded groups are gone
    last2 = create_model("resnet-50", features_only=True, out_indices=2)
    assert last2.feature_info.out_indices == (3, 4) and last2.feature_info.reduction() == [16, 32]
    early = create_model("resnet-50", features_only=True, out_indices=(0, 1))
    assert [n for n, _ in early.named_children()] == ["conv1", "bn1", "relu", "maxpool", "layer1"]
    assert "fc.weight" not in feats.state_dict()


def test_feature_net_keys_are_the_models_and_it_saves_loads_and_builds(tmp_path):
    torch.manual_seed(0)
    model = randomize_bn_(create_model("wrn-10-2", num_classes=100, act="silu")).eval()
    feats = create_model("wrn-10-2", features_only=True, out_indices=(2, 3), act="silu")
    missing, unexpected = feats.load_state_dict(model.state_dict(), strict=False)
    assert missing == [] and unexpected == ["fc.weight", "fc.bias"]
    assert feats.config["features_only"] and feats.config["out_indices"] == [2, 3]
    save_model(feats, tmp_path)
    again = load_model(tmp_path)
    assert isinstance(again, FeatureNet) and again.config == feats.config
    assert again.feature_info.channels() == [64, 128]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(again(x), feats.eval()(x), strict=True):
            assert torch.equal(a, b)
    assert isinstance(wrn.build_model(feats.config), FeatureNet)


@pytest.mark.parametrize("name", ["wrn-10-2", "preact-resnet-110", "resnet-18"])
def test_forward_head_pre_logits_and_num_classes_zero(name, tmp_path):
    torch.manual_seed(0)
    model = randomize_bn_(create_model(name)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert torch.equal(model.forward_head(feats), model(x))
        pooled = model.forward_head(feats, pre_logits=True)
        assert pooled.shape == (2, model.num_features)
        assert torch.allclose(pooled, feats.mean(dim=(2, 3)), atol=1e-6)
        assert torch.allclose(model.fc(pooled), model(x), atol=1e-6)

    bare = create_model(name, num_classes=0).eval()
    assert isinstance(bare.fc, nn.Identity) and bare.config["num_classes"] == 0
    missing, unexpected = bare.load_state_dict(model.state_dict(), strict=False)
    assert missing == [] and unexpected == ["fc.weight", "fc.bias"]
    assert count_parameters(bare) == count_parameters(model) - model.fc.weight.numel() - model.fc.bias.numel()
    with torch.no_grad():
        assert torch.equal(bare(x), pooled)
    save_model(bare, tmp_path)
    again = load_model(tmp_path)
    assert again.config == bare.config and isinstance(again.fc, nn.Identity)
    assert wrn.build_model(bare.config).config == bare.config
    with torch.no_grad():
        assert torch.equal(again(x), pooled)


def test_reset_classifier():
    model = create_model("wrn-10-1")
    model.reset_classifier(5)
    assert model.fc.out_features == 5 and model.config["num_classes"] == 5
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity) and model.config["num_classes"] == 0
    net = create_model("resnet-18")
    net.reset_classifier(3)
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 3)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"features_only": True, "out_indices": (0, 4)}, r"4 feature maps .* out_indices \[4\] do not exist"),
        ({"features_only": True, "out_indices": (1, -3)}, "the same map twice"),
        ({"features_only": True, "out_indices": 5}, "last 5 of 4 maps"),
        ({"out_indices": (1, 2)}, "only applies with features_only=True"),
    ],
)
def test_bad_out_indices(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        create_model("wrn-10-1", **kwargs)


# --------------------------------------------------------------------------------------------- detection

IMAGES = [torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(i)) for i in range(2)]
TARGETS = [
    {
        "boxes": torch.tensor([[20.0, 30.0, 120.0, 140.0], [100.0, 90.0, 200.0, 230.0]]),
        "labels": torch.tensor([1, 2]),
    },
    {"boxes": torch.tensor([[50.0, 60.0, 180.0, 170.0]]), "labels": torch.tensor([1])},
]
# Few proposals and sampled boxes keep the CPU test quick; the detector is otherwise torchvision's default.
SMALL = {
    "min_size": 256,
    "max_size": 256,
    "rpn_pre_nms_top_n_train": 100,
    "rpn_post_nms_top_n_train": 50,
    "rpn_batch_size_per_image": 32,
    "box_batch_size_per_image": 32,
}


def tiny_imagenet_wrn() -> nn.Module:
    """An ImageNet-layout network narrow enough for a CPU test: one basic block per stage, widths 16..128."""
    model = ImageNetResNet(block="basic", layers=(1, 1, 1, 1), width=0.25, num_classes=10)
    model.config = {"name": "tiny-imagenet-wrn", **model.config}
    return model


@pytest.mark.parametrize("family", ["cifar", "imagenet"])
def test_faster_rcnn_trains_on_the_backbone(family):
    torch.manual_seed(0)
    model = create_model("wrn-10-1") if family == "cifar" else tiny_imagenet_wrn()
    bb = backbone(model, out_channels=16)
    # default returned layers: every group, plus the extra levels that make torchvision's five anchor sizes fit
    assert isinstance(bb.fpn.extra_blocks, LastLevelP6P7 if family == "cifar" else LastLevelMaxPool)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in bb.modules())  # frozen BN by default
    frozen_bn = [m for m in bb.body.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(frozen_bn) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())

    detector = FasterRCNN(bb, num_classes=3, **SMALL).train()
    losses = detector(IMAGES, TARGETS)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()

    body = detector.backbone.body
    stem = body.conv1.weight
    assert not stem.requires_grad and stem.grad is None  # trainable_layers=3: the stem stays frozen
    last = body.layer3 if family == "cifar" else body.layer4
    for p in [body.layer2[0].conv1.weight, last[0].conv2.weight]:
        assert (
            p.requires_grad and p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
        )
    fpn = detector.backbone.fpn.inner_blocks[0][0].weight
    assert fpn.grad is not None and fpn.grad.abs().sum() > 0
    # the detector's losses did not touch the model that was passed in
    assert model.conv1.weight.requires_grad and isinstance(model.layer1[0].bn1, nn.BatchNorm2d)


def test_backbone_body_computes_our_network_with_frozen_bn():
    torch.manual_seed(0)
    model = randomize_bn_(create_model("wrn-10-2")).eval()
    bb = backbone(model, returned_layers=[2, 3], out_channels=8).train()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        body = bb.body(x)
        feats = FeatureNet(model, out_indices=(2, 3))(x)
        out = bb(x)
    assert list(body) == ["0", "1"]
    for got, want in zip(body.values(), feats, strict=True):
        assert torch.allclose(got, want, atol=1e-5)  # FrozenBatchNorm2d = BN in eval mode
    assert list(out) == ["0", "1", "pool"] and all(v.shape[1] == 8 for v in out.values())
    assert bb.out_channels == 8


@pytest.mark.parametrize(
    "name, trainable, frozen",
    [
        ("resnet-18", 3, ["conv1", "bn1", "layer1"]),
        ("resnet-18", 5, []),
        ("resnet-18", 0, ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]),
        ("wrn-10-1", 1, ["conv1", "layer1", "layer2"]),
        ("wrn-10-1", 4, []),
    ],
)
def test_trainable_layers_freeze_the_early_stages(name, trainable, frozen):
    bb = backbone(name, trainable_layers=trainable, norm_layer=nn.BatchNorm2d)
    for pname, p in bb.body.named_parameters():
        assert p.requires_grad == (pname.split(".")[0] not in frozen), pname


def test_freeze_batch_norm_keeps_the_eval_function():
    torch.manual_seed(0)
    model = randomize_bn_(create_model("resnet-18")).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        frozen = freeze_batch_norm(model)
        assert frozen is model and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        assert torch.allclose(model.train()(x), expected, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"trainable_layers": 5}, r"trainable_layers must be in \[0, 4\]"),
        ({"returned_layers": [0, 1]}, r"returned_layers must be increasing group numbers among \[1, 2, 3\]"),
        ({"returned_layers": [3, 2]}, "returned_layers must be increasing"),
        ({"norm_layer": nn.GroupNorm}, "norm_layer must be"),
        ({"widht": 2}, "has no option 'widht'"),
    ],
)
def test_backbone_bad_arguments(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        backbone("wrn-10-1", **kwargs)
    with pytest.raises(ConfigError, match="only when the backbone is given by name"):
        backbone(create_model("wrn-10-1"), dropout=0.3)
