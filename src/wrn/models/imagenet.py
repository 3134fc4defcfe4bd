"""ImageNet networks (paper section 3, Tables 7 and 8), drop-in compatible with torchvision.

Post-activation ResNets: 7x7/2 stem with 64 channels and a 3x3/2 max-pool (never widened), conv-BN-ReLU
blocks with the sum followed by a ReLU, the stride on the 3x3 conv of a bottleneck ("v1.5") and a 1x1 conv +
BN shortcut where the shape changes. The state-dict keys are torchvision's own (``conv1``, ``bn1``,
``layer{1..4}.{i}.conv{j}/bn{j}``, ``layer{g}.0.downsample.{0,1}``, ``fc``), so a torchvision ``resnet50``
or ``wide_resnet50_2`` state dict loads with ``strict=True`` and gives the same outputs.

Widening follows the paper: the basic-block family (WRN-18/34 at width w) widens all four stage widths,
the bottleneck family (WRN-50-2) widens only the inner 3x3 convs.

Variants (defaults are torchvision's): ``act`` replaces every ReLU (the modules keep torchvision's name
``relu``), ``bn_momentum`` every BN's momentum, ``num_classes=0`` the classifier by the identity. timm's
interface: ``forward_features``, ``forward_head``, ``feature_info`` (the stem after its activation at
reduction 2, then ``layer1..4`` at 4, 8, 16, 32) and ``reset_classifier``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from wrn.errors import ConfigError
from wrn.models.layers import check_act, check_bn_momentum, check_num_classes, make_act


def _conv_bn(
    c_in: int, c_out: int, kernel: int, stride: int = 1, bn_momentum: float = 0.1
) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
    return conv, nn.BatchNorm2d(c_out, momentum=bn_momentum)


class BasicBlock(nn.Module):
    """conv3x3(stride) - BN - ReLU - conv3x3 - BN, plus shortcut, then ReLU (torchvision's BasicBlock)."""

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, act: str = "relu", bn_momentum: float = 0.1
    ) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(in_planes, planes, 3, stride, bn_momentum)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3, 1, bn_momentum)
        self.relu = make_act(act, inplace=True)
        self.downsample = (
            nn.Sequential(*_conv_bn(in_planes, planes, 1, stride, bn_momentum))
            if stride != 1 or in_planes != planes
            else None
        )
        self.out_planes = planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """conv1x1 - BN - ReLU - conv3x3(stride) - BN - ReLU - conv1x1 - BN, plus shortcut, then ReLU.

    ``planes * 4`` output channels; the inner width is ``planes * bottleneck_width`` (2 for WRN-50-2)."""

    expansion = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        bottleneck_width: float = 1.0,
        act: str = "relu",
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        inner = int(planes * bottleneck_width)
        out_planes = planes * self.expansion
        self.conv1, self.bn1 = _conv_bn(in_planes, inner, 1, 1, bn_momentum)
        self.conv2, self.bn2 = _conv_bn(inner, inner, 3, stride, bn_momentum)
        self.conv3, self.bn3 = _conv_bn(inner, out_planes, 1, 1, bn_momentum)
        self.relu = make_act(act, inplace=True)
        self.downsample = (
            nn.Sequential(*_conv_bn(in_planes, out_planes, 1, stride, bn_momentum))
            if stride != 1 or in_planes != out_planes
            else None
        )
        self.out_planes = out_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ImageNetResNet(nn.Module):
    """ResNet / WRN for ImageNet-sized inputs (any size; global pooling).

    Args:
        block: ``"basic"`` or ``"bottleneck"``.
        layers: blocks per stage, e.g. (3, 4, 6, 3) for 50 layers.
        width: basic blocks: multiplier of all four stage widths 64/128/256/512 (WRN-18/34 at 1.0-3.0);
            bottleneck: multiplier of the inner width only (2 for WRN-50-2-bottleneck).
        num_classes, in_channels: classifier outputs (0: no classifier, the pooled features) and image
            channels.
        zero_init_residual: start each residual branch at zero (last BN gamma = 0), as torchvision offers.
        init: ``"torchvision"`` (Kaiming fan-out normal convs, BN 1/0; default) or ``"pytorch"``.
        act: ``"relu"`` (default), ``"leaky_relu"`` (slope 0.1) or ``"silu"``.
        bn_momentum: momentum of every BN (PyTorch's convention, default 0.1).
    """

    def __init__(
        self,
        block: str = "bottleneck",
        layers: Sequence[int] = (3, 4, 6, 3),
        width: float = 1.0,
        num_classes: int = 1000,
        in_channels: int = 3,
        zero_init_residual: bool = False,
        init: str = "torchvision",
        act: str = "relu",
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        layers = tuple(int(n) for n in layers)
        if block not in ("basic", "bottleneck"):
            raise ConfigError(f"block must be 'basic' or 'bottleneck', got {block!r}.")
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ConfigError(f"layers must list four positive block counts, got {layers!r}.")
        if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
            raise ConfigError(f"width must be a positive number, got {width!r}.")
        check_num_classes(num_classes)
        check_act(act)
        check_bn_momentum(bn_momentum)
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ConfigError(f"in_channels must be a positive integer, got {in_channels!r}.")
        if init not in ("torchvision", "pytorch"):
            raise ConfigError(f"init must be 'torchvision' or 'pytorch', got {init!r}.")

        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=bn_momentum)
        self.relu = make_act(act, inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.feature_info = [{"num_chs": 64, "reduction": 2, "module": "relu"}]
        c_in = 64
        for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), layers, strict=True), start=1):
            blocks = []
            for i in range(n):
                stride = 2 if stage > 1 and i == 0 else 1
                if block == "basic":
                    blk = BasicBlock(c_in, int(planes * width), stride, act, bn_momentum)
                else:
                    blk = Bottleneck(c_in, planes, stride, width, act, bn_momentum)
                blocks.append(blk)
                c_in = blk.out_planes
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
            self.feature_info.append(
                {"num_chs": c_in, "reduction": 2 ** (stage + 1), "module": f"layer{stage}"}
            )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = c_in
        self.fc = nn.Linear(c_in, num_classes) if num_classes else nn.Identity()

        if init == "torchvision":
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)
        self.config = {
            "arch": "ImageNetResNet",
            "block": block,
            "layers": list(layers),
            "width": width,
            "num_classes": num_classes,
            "in_channels": in_channels,
            "zero_init_residual": zero_init_residual,
            "init": init,
            "act": act,
            "bn_momentum": float(bn_momentum),
        }

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last map (``layer4``'s output, before pooling)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool of a :meth:`forward_features` map, then the classifier (skipped with
        ``pre_logits=True``)."""
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh classifier with ``num_classes`` outputs (0: none, the model returns pooled features)."""
        check_num_classes(num_classes)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.config = {**self.config, "num_classes": num_classes}
