"""CIFAR/SVHN networks: the wide residual networks WRN-d-k and the thin pre-activation ResNets.

Built exactly as the paper (Table 1) and the authors' code define them (docs/models.md):

* stem: 3x3 conv, ``in_channels -> 16``, no bias, NOT followed by BN-ReLU;
* three groups of pre-activation blocks at widths 16k, 32k, 64k, the first block of groups 2 and 3 with
  stride 2;
* head: BN -> ReLU -> global average pool -> Linear (with bias).

State-dict keys are stable and torchvision-like: ``conv1`` (stem), ``layer{1,2,3}.{i}.bn{j}/conv{j}``,
``layer{g}.{i}.shortcut`` (only where the shape changes), ``bn`` and ``fc`` (head).

Variants (defaults are the paper's): ``act`` (``"relu"``, ``"leaky_relu"`` with slope 0.1, ``"silu"``) replaces
every ReLU, ``bn_momentum`` every BN's momentum; ``num_classes=0`` replaces the classifier by the identity, so
the model returns the pooled ``64k`` features. Neither changes a state-dict key. ``init`` picks the
initialisation (:data:`INITS`): the authors' (default), PyTorch's, or AutoAugment's (which SAM's code keeps).

timm's interface: ``forward_features`` (the last map, after the head's BN-ReLU), ``forward_head``,
``feature_info`` (stem and the three groups) and ``reset_classifier``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wrn.errors import ConfigError
from wrn.models.layers import check_act, check_bn_momentum, check_num_classes, make_act

SHORTCUTS = ("conv", "pool_pad", "pool_pad_centred")


def pool_pad(
    x: torch.Tensor, stride: int, planes: int, centred: bool, ceil_mode: bool = False
) -> torch.Tensor:
    """``x`` average-pooled with window and stride ``stride``, then zero channels up to ``planes``: after the
    input's, or split evenly before and after them (``centred``). ``ceil_mode`` keeps a partial last window,
    for convs that pad 1 on every side (an odd side then gives ceil(n/2), not floor)."""
    if stride > 1:
        x = F.avg_pool2d(x, stride, ceil_mode=ceil_mode)
    extra = planes - x.shape[1]
    before = extra // 2 if centred else 0
    return F.pad(x, (0, 0, 0, 0, before, extra - before)) if extra else x


class PoolPadShortcut(nn.Module):
    """The parameter-free shortcut of AutoAugment's and SAM's WRNs where a block changes the shape: average
    pool of the block's stride, then zero channels, after the input's (SAM, ``_output_add`` of
    sam_jax/models/wide_resnet.py) or split before and after them (AutoAugment, ``zero_pad`` of
    research/autoaugment/custom_ops.py)."""

    def __init__(self, in_planes: int, planes: int, stride: int, centred: bool, ceil_mode: bool) -> None:
        super().__init__()
        self.in_planes, self.planes, self.stride = in_planes, planes, stride
        self.centred, self.ceil_mode = centred, ceil_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_pad(x, self.stride, self.planes, self.centred, self.ceil_mode)

    def extra_repr(self) -> str:
        return f"{self.in_planes}, {self.planes}, stride={self.stride}, centred={self.centred}"


class WideBlock(nn.Module):
    """Pre-activation block B(M) with kernel list ``kernels`` = (m1, ..., ml), all convs ``planes`` wide.

    ``o1 = ReLU(BN(x))`` is shared by the first conv and the projection shortcut; the identity shortcut takes
    the raw ``x``. With ``preact_input=False`` (FixMatch's first blocks of groups 2 and 3) a block with a
    projection feeds the raw ``x`` to both instead, and its ``bn1`` goes unused. ``same_padding``: a stride-2
    first conv pads (0, 1, 0, 1) as TensorFlow's 'SAME' (DeepMind's WRN) instead of 1 on every side. Dropout
    (element-wise) sits after the BN-ReLU and before every conv but the first. The stride sits on the first
    conv, whatever its kernel. No conv has a bias; there is no ReLU after the sum.

    ``shortcut`` (where the shape changes): ``"conv"``, the 1x1 projection; ``"pool_pad"``, a
    :class:`PoolPadShortcut` with the zeros after the channels (SAM); ``"pool_pad_centred"``, zeros before and
    after (AutoAugment). ``shortcut_preact``: which input the shortcut (or the identity) takes, ``True`` ``o1``,
    ``False`` the raw ``x``; None is the rule above.
    """

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        kernels: Sequence[int] = (3, 3),
        dropout: float = 0.0,
        act: str = "relu",
        bn_momentum: float = 0.1,
        preact_input: bool = True,
        same_padding: bool = False,
        shortcut: str = "conv",
        shortcut_preact: bool | None = None,
    ) -> None:
        super().__init__()
        self.kernels = tuple(int(k) for k in kernels)
        self.dropout_p = float(dropout)
        self.out_planes = planes
        self.preact_input = bool(preact_input)
        # TensorFlow's 'SAME' on even sizes: a stride-2 k x k conv pads (k-2)//2 before and the rest after
        first = self.kernels[0]
        self.same_pad = None
        if same_padding and stride == 2:
            before = max(first - 2, 0) // 2
            self.same_pad = (before, max(first - 2, 0) - before) * 2
        for j, k in enumerate(self.kernels, start=1):
            c_in = in_planes if j == 1 else planes
            pad = 0 if j == 1 and self.same_pad is not None else k // 2
            self.add_module(f"bn{j}", nn.BatchNorm2d(c_in, momentum=bn_momentum))
            self.add_module(
                f"conv{j}",
                nn.Conv2d(c_in, planes, k, stride=stride if j == 1 else 1, padding=pad, bias=False),
            )
        self.dropout = nn.Dropout(self.dropout_p) if self.dropout_p > 0 else None
        self.shortcut: nn.Module | None = None
        if in_planes != planes or stride != 1:
            if shortcut == "conv":
                self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
            else:  # the conv pads 1 on every side unless 'SAME': its output side is ceil(n/2), not floor
                centred, ceil_mode = shortcut == "pool_pad_centred", self.same_pad is None
                self.shortcut = PoolPadShortcut(in_planes, planes, stride, centred, ceil_mode)
        # FixMatch's first blocks of groups 2 and 3 feed the raw input to conv1 and the shortcut
        self.conv_preact = self.preact_input or self.shortcut is None
        if shortcut_preact is None:
            shortcut_preact = self.shortcut is not None and self.conv_preact
        self.shortcut_preact = bool(shortcut_preact)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1 = self.act(self.bn1(x))
        h = o1 if self.conv_preact else x
        h = self.conv1(h if self.same_pad is None else F.pad(h, self.same_pad))
        for j in range(2, len(self.kernels) + 1):
            h = self.act(getattr(self, f"bn{j}")(h))
            if self.dropout is not None:
                h = self.dropout(h)
            h = getattr(self, f"conv{j}")(h)
        skip = o1 if self.shortcut_preact else x
        return h + (self.shortcut(skip) if self.shortcut is not None else skip)


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck of the thin baselines: BN-ReLU-conv1x1 (C_in -> m, stride s), BN-ReLU-conv3x3
    (m -> m), BN-ReLU-conv1x1 (m -> 4m); a 1x1 projection (stride s, no BN, no bias) of the pre-activated input
    where the shape changes, else the raw input.

    The stride sits on the FIRST 1x1 conv, as in the authors' ``models/resnet-pre-act.lua`` and He et al.'s
    code (models/resnet-pre-act.lua); torchvision's habit of striding the 3x3 has the same parameters but is another
    network."""

    expansion = 4

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, act: str = "relu", bn_momentum: float = 0.1
    ) -> None:
        super().__init__()
        out_planes = self.out_planes = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_planes, momentum=bn_momentum)
        self.conv1 = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
            if in_planes != out_planes or stride != 1
            else None
        )
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1 = self.act(self.bn1(x))
        h = self.conv1(o1)
        h = self.conv2(self.act(self.bn2(h)))
        h = self.conv3(self.act(self.bn3(h)))
        return h + (self.shortcut(o1) if self.shortcut is not None else x)


def init_paper_(model: nn.Module) -> None:
    """The authors' initialisation: conv ~ N(0, sqrt(2 / (k*k*C_in))), BN gamma ~ U(0, 1) and beta = 0,
    Linear weight ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) and bias = 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.0, 1.0)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.in_features)
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


def init_autoaugment_(model: nn.Module) -> None:
    """AutoAugment's initialisation (``conv2d`` and ``fc`` of research/autoaugment/custom_ops.py, TensorFlow's
    BN defaults), which SAM's code keeps (sam_jax/models/utils.py): conv ~ N(0, sqrt(2 / (k*k*C_out))), BN
    gamma = 1 and beta = 0, Linear weight ~ U(-1/sqrt(outputs), 1/sqrt(outputs)) and bias = 0: xternalz's
    but for the Linear weight, drawn after the convolutions' (the classifier comes last)."""
    init_xternalz_(model)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.out_features)
            nn.init.uniform_(m.weight, -bound, bound)


def init_xternalz_(model: nn.Module) -> None:
    """The initialisation of the common WideResNet port (xternalz/WideResNet-pytorch), which the robustness
    codes train with (yaodongyu/TRADES models/wideresnet.py, locuslab/robust_overfitting, csdongxian/AWP): conv
    ~ N(0, sqrt(2 / (k*k*C_out))), BN gamma = 1 and beta = 0, Linear bias = 0 and its weight PyTorch's default,
    U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)  # (the weight keeps PyTorch's default draw, as theirs)


def init_fixmatch_(model: nn.Module) -> None:
    """FixMatch's initialisation (google-research/fixmatch libml/models.py ``ResNet``, TensorFlow 1.x): conv ~
    N(0, sqrt(2 / (k*k*C_out))) (``random_normal_initializer(stddev=rsqrt(0.5 * k * k * filters))``), BN gamma
    = 1 and beta = 0, the Linear weight ``glorot_normal_initializer`` (a normal of std sqrt(2 / (fan_in +
    fan_out)) / 0.87962566 truncated at two of its stds) and its bias 0."""
    init_xternalz_(model)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            std = math.sqrt(2.0 / (m.in_features + m.out_features)) / 0.87962566103423978
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)


# init name -> what initialises a model (or one new module of it); None keeps PyTorch's defaults
INITS: dict[str, Callable[[nn.Module], None] | None] = {
    "paper": init_paper_,
    "pytorch": None,
    "autoaugment": init_autoaugment_,
    "xternalz": init_xternalz_,
    "fixmatch": init_fixmatch_,
}


def _initialise(module: nn.Module, init: str) -> None:
    if INITS[init] is not None:
        INITS[init](module)


def _check_common(num_classes: int, in_channels: int, init: str, act: str, bn_momentum: float) -> None:
    check_num_classes(num_classes)
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ConfigError(
            f"in_channels must be a positive integer (3 for RGB, 1 for grayscale), got {in_channels!r}."
        )
    if init not in INITS:
        raise ConfigError(f"init must be one of {', '.join(INITS)}, got {init!r}.")
    check_act(act)
    check_bn_momentum(bn_momentum)


def _make_groups(make_block, widths: Sequence[int], n: int) -> list[list[nn.Module]]:
    """Three groups of ``n`` blocks after the 16-wide stem; the first block of groups 2 and 3 has stride 2.
    ``make_block(c_in, planes, stride)`` returns a block with an ``out_planes`` attribute."""
    groups, c_in = [], 16
    for g, planes in enumerate(widths):
        blocks = []
        for i in range(n):
            blocks.append(make_block(c_in, planes, 2 if g > 0 and i == 0 else 1))
            c_in = blocks[-1].out_planes
        groups.append(blocks)
    return groups


class _CifarResNet(nn.Module):
    """Stem, three groups of blocks and the pre-activation head, shared by both CIFAR families.

    The children are registered in the order they run (``conv1``, ``layer1..3``, ``bn``, ``act``, ``fc``), so
    feature extractors that walk them (torchvision's ``IntermediateLayerGetter``, :class:`FeatureNet`) see
    the network as it computes, but in AutoAugment's WRN: its ``global_skip`` (the stride from the stem's map
    to the last group's; 0: none) adds the stem's output past the groups, so they refuse that network."""

    global_skip = 0
    skip_ceil_mode = False

    def _build(
        self,
        groups: Sequence[Sequence[nn.Module]],
        out_channels: int,
        num_classes: int,
        in_channels: int,
        act: str,
        bn_momentum: float,
        stem_bias: bool = False,
        head_bn_eps: float = 1e-5,
    ) -> None:
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=stem_bias)
        layers = [g if isinstance(g, nn.Sequential) else nn.Sequential(*g) for g in groups]
        self.layer1, self.layer2, self.layer3 = layers
        self.bn = nn.BatchNorm2d(out_channels, eps=head_bn_eps, momentum=bn_momentum)
        self.act = make_act(act)
        self.num_features = out_channels
        self.fc = nn.Linear(out_channels, num_classes) if num_classes else nn.Identity()
        # timm's feature_info: the stem, then each group; the last map is taken after the head's BN-ReLU
        # (the map that forward_features returns and the classifier pools), not the raw sum of group 3.
        self.feature_info = [
            {"num_chs": 16, "reduction": 1, "module": "conv1"},
            {"num_chs": groups[0][-1].out_planes, "reduction": 1, "module": "layer1"},
            {"num_chs": groups[1][-1].out_planes, "reduction": 2, "module": "layer2"},
            {"num_chs": out_channels, "reduction": 4, "module": "act"},
        ]

    def set_input_normalization(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        """Normalise the input inside the forward, ``(x - mean) / std`` per channel (the robustness WRNs take
        pixels in [0, 1] and carry their data set's constants); None for neither (the default)."""
        if (mean is None) != (std is None):
            raise ConfigError("input_mean and input_std go together: give both or neither.")
        self.input_norm = mean is not None
        if mean is None or std is None:
            return
        channels = self.conv1.in_channels
        mean, std = [float(m) for m in mean], [float(s) for s in std]
        if len(mean) != channels or len(std) != channels or any(s <= 0 for s in std):
            raise ConfigError(
                f"input_mean and input_std need {channels} values each (one per input channel), the stds "
                f"positive; got {mean} and {std}."
            )
        # not persistent: the constants live in model.config, so the state dict keeps its keys
        self.register_buffer("input_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    # The sides of the images the network takes are multiples of this (WideResNet with 'SAME' padding: 4).
    size_multiple = 1

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The 64k-channel feature map after the head's BN-ReLU (before pooling)."""
        if self.size_multiple > 1 and (x.shape[-2] % self.size_multiple or x.shape[-1] % self.size_multiple):
            raise ConfigError(
                f"this model pads as TensorFlow's 'SAME' on even sizes (DeepMind's WRN), so it takes images "
                f"whose height and width are multiples of {self.size_multiple}, not {x.shape[-2]}x{x.shape[-1]}; "
                "resize them (e.g. to 32x32)"
            )
        if getattr(self, "input_norm", False):
            x = (x - self.input_mean) / self.input_std
        stem = x = self.conv1(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        if self.global_skip:  # AutoAugment's skip from the stem to the last group, centred as theirs
            x = x + pool_pad(stem, self.global_skip, self.num_features, True, self.skip_ceil_mode)
        return self.act(self.bn(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool of a :meth:`forward_features` map, then the classifier (skipped with
        ``pre_logits=True``)."""
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh classifier with ``num_classes`` outputs (0: none, the model returns pooled features)."""
        check_num_classes(num_classes)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        _initialise(self.fc, self.config.get("init", "paper"))
        self.config = {**self.config, "num_classes": num_classes}


def _check_wrn(depth, width, kernels, blocks_per_group, dropout) -> int:
    """The WRN's own arguments checked; the number of blocks per group."""
    if blocks_per_group is None:
        if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
            raise ConfigError(
                f"CIFAR WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 34, 40, ...), got {depth!r}."
            )
        blocks_per_group = (depth - 4) // 6
    if not isinstance(blocks_per_group, int) or blocks_per_group < 1:
        raise ConfigError(f"blocks_per_group must be a positive integer, got {blocks_per_group!r}.")
    if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
        raise ConfigError(f"the widening factor k must be a positive integer, got {width!r}.")
    if not kernels or any(not isinstance(k, int) or k < 1 or k % 2 == 0 for k in kernels):
        raise ConfigError(
            f"block kernels must be odd positive sizes such as (3, 3) or (1, 3, 1), got {kernels!r}."
        )
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}.")
    return blocks_per_group


def _check_variants(preact_first, head_bn_eps, shortcut, group_skips) -> tuple[int, ...]:
    """The other projects' options checked; the sorted groups whose first block pre-activates its input."""
    preact_first = tuple(sorted(int(g) for g in preact_first))
    if any(g not in (1, 2, 3) for g in preact_first) or len(set(preact_first)) != len(preact_first):
        raise ConfigError(f"preact_first lists groups among 1, 2, 3 (FixMatch: (1,)), got {preact_first!r}.")
    if shortcut not in SHORTCUTS:
        raise ConfigError(
            f"shortcut must be one of {', '.join(SHORTCUTS)} (the paper's 1x1 conv; SAM's and AutoAugment's "
            f"average pool and zeros), got {shortcut!r}."
        )
    if not isinstance(group_skips, bool):
        raise ConfigError(
            f"group_skips must be true or false (AutoAugment's WRN: true), got {group_skips!r}."
        )
    if isinstance(head_bn_eps, bool) or not isinstance(head_bn_eps, (int, float)) or head_bn_eps <= 0:
        raise ConfigError(
            f"head_bn_eps must be a positive number (PyTorch's 1e-5, USB's 1e-3), got {head_bn_eps!r}."
        )
    return preact_first


class SkipGroup(nn.Sequential):
    """A group of blocks whose output also adds the group's input, average-pooled by the group's stride and
    zero-padded (centred) to its width: AutoAugment's skip around each group (``_res_add`` of
    research/autoaugment/wrn.py). No parameter; the blocks keep their keys (``layer{g}.{i}``)."""

    def __init__(self, blocks: Sequence[nn.Module], stride: int, ceil_mode: bool) -> None:
        super().__init__(*blocks)
        self.skip_stride, self.skip_ceil_mode = stride, ceil_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out + pool_pad(x, self.skip_stride, out.shape[1], True, self.skip_ceil_mode)

    def extra_repr(self) -> str:
        return f"skip: average pool {self.skip_stride}, centred zeros"


def _wide_groups(
    widths: tuple[int, int, int], blocks_per_group: int, preact_first: tuple[int, ...], common: dict
) -> list[list[WideBlock]]:
    """The blocks of the three groups. The first block of a group listed in ``preact_first`` (or one that keeps
    the shape) feeds its pre-activated input to its first conv; the pooled shortcuts take the raw input,
    except in the network's first block (``WideResNet``'s ``shortcut``)."""
    first_of = {w: g + 1 for g, w in enumerate(widths)}  # the group of a block's width
    made: list[WideBlock] = []

    def block(c_in: int, planes: int, stride: int) -> WideBlock:
        first = c_in != planes or stride != 1
        preact = not first or first_of[planes] in preact_first
        skip_preact = None if common["shortcut"] == "conv" else not made
        made.append(
            WideBlock(c_in, planes, stride, preact_input=preact, shortcut_preact=skip_preact, **common)
        )
        return made[-1]

    return _make_groups(block, widths, blocks_per_group)


class WideResNet(_CifarResNet):
    """WRN-d-k with block type B(kernels) for CIFAR and SVHN (any input of at least 8x8).

    Args:
        depth: network depth; with ``blocks_per_group=None`` it must be 6n+4 and n = (depth-4)/6 blocks per
            group, whatever the block length (paper Tables 1, 2, 4-6, 9).
        width: widening factor k (group widths 16k, 32k, 64k; the stem stays 16 wide).
        kernels: kernel list M of every block, odd sizes, e.g. (3, 3) = B(3,3), (1, 3, 1) = B(1,3,1).
        blocks_per_group: explicit N, overriding the one derived from depth (Table 3 uses
            N = (depth-4)/(3l) for l convs per block).
        dropout: element-wise dropout rate between the convs of a block (0.3 CIFAR, 0.4 SVHN in the paper).
        num_classes, in_channels: classifier outputs (0: no classifier, the pooled features) and image
            channels (1 for grayscale).
        init: ``"paper"`` (the authors' initialisation, default), ``"pytorch"`` (PyTorch's defaults),
            ``"autoaugment"`` (AutoAugment's, which SAM's code keeps) or ``"xternalz"`` (the common WideResNet
            port's, which the robustness codes keep; see :data:`INITS`).
        act: ``"relu"`` (the paper), ``"leaky_relu"`` (slope 0.1, FixMatch) or ``"silu"`` (robustness WRNs).
        bn_momentum: momentum of every BN (PyTorch's convention; 0.1 default, FixMatch 0.001).

    The options of other projects' WRNs, all off by default (the paper's network), none adding a tensor
    to the state dict but ``stem_bias`` (the pooled shortcuts remove the projections' tensors):

        preact_first: the groups whose first block feeds its pre-activated input to ``conv1`` and the
            projection (default all three; FixMatch and USB: ``(1,)``, their first blocks of groups 2 and 3
            take the raw input and leave their ``bn1`` unused).
        shortcut: ``"conv"`` (the paper's 1x1 projection where the shape changes), ``"pool_pad"`` (average
            pool and zero channels after the input's, no parameter: SAM) or ``"pool_pad_centred"`` (the zeros
            split before and after: AutoAugment). Both of the latter, as their code, take every block's raw
            input but the network's first block's, which shares its BN-ReLU with the shortcut
            (``activate_before_residual``).
        group_skips: AutoAugment's extra skips: each group's output adds the group's input, and the last
            group's output adds the stem's, each average-pooled and zero-padded (centred) to the shape.
        same_padding: stride-2 convs pad (0, 1, 0, 1), TensorFlow's 'SAME' on even sizes (DeepMind's WRN,
            whose code pads so at every size; SAM, AutoAugment): the model takes images whose sides are
            multiples of 4 (``size_multiple``) and refuses others in one sentence.
        stem_bias: a bias on the stem conv (USB). head_bn_eps: the head BN's eps (USB: 1e-3).
        input_mean, input_std: per-channel ``(x - mean) / std`` inside the forward, for networks that take
            pixels in [0, 1] (DeepMind's WRN and the robustness models); recorded in ``model.config``.
    """

    def __init__(
        self,
        depth: int = 28,
        width: int = 10,
        num_classes: int = 10,
        kernels: Sequence[int] = (3, 3),
        blocks_per_group: int | None = None,
        dropout: float = 0.0,
        in_channels: int = 3,
        init: str = "paper",
        act: str = "relu",
        bn_momentum: float = 0.1,
        preact_first: Sequence[int] = (1, 2, 3),
        same_padding: bool = False,
        stem_bias: bool = False,
        head_bn_eps: float = 1e-5,
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
        shortcut: str = "conv",
        group_skips: bool = False,
    ) -> None:
        super().__init__()
        kernels = tuple(kernels)
        blocks_per_group = _check_wrn(depth, width, kernels, blocks_per_group, dropout)
        preact_first = _check_variants(preact_first, head_bn_eps, shortcut, group_skips)
        _check_common(num_classes, in_channels, init, act, bn_momentum)

        widths = (16 * width, 32 * width, 64 * width)
        common = dict(kernels=kernels, dropout=dropout, act=act, bn_momentum=bn_momentum, shortcut=shortcut)
        common["same_padding"] = bool(same_padding)
        groups = _wide_groups(widths, blocks_per_group, preact_first, common)
        if group_skips:  # the pools of the skips must give the sides that the strided convs give
            self.global_skip, self.skip_ceil_mode = 4, not same_padding  # 4: the strides of the groups
            groups = [SkipGroup(g, 1 if i == 0 else 2, not same_padding) for i, g in enumerate(groups)]
        self._build(
            groups,
            widths[-1],
            num_classes,
            in_channels,
            act,
            bn_momentum,
            bool(stem_bias),
            float(head_bn_eps),
        )
        _initialise(self, init)
        self.set_input_normalization(input_mean, input_std)
        # each stride-2 block's fixed (0, 1, 0, 1) padding needs an even side where a 1x1 conv of stride 2 (which
        # rounds up) meets it: 2 of them, multiples of 4; the pooled shortcuts (SAM, AutoAugment) round down too
        self.size_multiple = 4 if same_padding and shortcut == "conv" else 1
        self.config = {
            "arch": "WideResNet",
            "depth": depth,
            "width": width,
            "num_classes": num_classes,
            "kernels": list(kernels),
            "blocks_per_group": blocks_per_group,
            "dropout": float(dropout),
            "in_channels": in_channels,
            "init": init,
            "act": act,
            "bn_momentum": float(bn_momentum),
        }
        # the variants of other projects, recorded only where they differ from the paper's network
        variants = {
            "preact_first": (list(preact_first), [1, 2, 3]),
            "same_padding": (bool(same_padding), False),
            "stem_bias": (bool(stem_bias), False),
            "head_bn_eps": (float(head_bn_eps), 1e-5),
            "input_mean": (None if input_mean is None else [float(m) for m in input_mean], None),
            "input_std": (None if input_std is None else [float(v) for v in input_std], None),
            "shortcut": (shortcut, "conv"),
            "group_skips": (group_skips, False),
        }
        self.config.update({k: v for k, (v, default) in variants.items() if v != default})


class PreActResNet(_CifarResNet):
    """The thin pre-activation ResNets the paper compares to (He et al. 2016, "Identity mappings").

    ``block="bottleneck"``: depth 9n+2, inner widths 16/32/64, outputs 64/128/256 (ResNet-164, -1001).
    ``block="basic"``: depth 6n+2, B(3,3) blocks 16/32/64 wide (ResNet-110), the WRN block with k=1.
    ``num_classes``, ``in_channels``, ``init``, ``act`` and ``bn_momentum`` as for :class:`WideResNet`.
    """

    def __init__(
        self,
        depth: int = 164,
        block: str = "bottleneck",
        num_classes: int = 10,
        in_channels: int = 3,
        init: str = "paper",
        act: str = "relu",
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        _check_common(num_classes, in_channels, init, act, bn_momentum)

        def bottleneck(c_in: int, planes: int, stride: int) -> nn.Module:
            return PreActBottleneck(c_in, planes, stride, act, bn_momentum)

        def basic(c_in: int, planes: int, stride: int) -> nn.Module:
            return WideBlock(c_in, planes, stride, act=act, bn_momentum=bn_momentum)

        if block == "bottleneck":
            if not isinstance(depth, int) or depth < 11 or (depth - 2) % 9:
                raise ConfigError(
                    f"pre-activation bottleneck ResNet depth must be 9n+2 (164, 1001, ...), got {depth!r}."
                )
            groups, out = _make_groups(bottleneck, (16, 32, 64), (depth - 2) // 9), 256
        elif block == "basic":
            if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
                raise ConfigError(
                    f"pre-activation basic ResNet depth must be 6n+2 (20, 56, 110, ...), got {depth!r}."
                )
            groups, out = _make_groups(basic, (16, 32, 64), (depth - 2) // 6), 64
        else:
            raise ConfigError(f"block must be 'basic' or 'bottleneck', got {block!r}.")
        self._build(groups, out, num_classes, in_channels, act, bn_momentum)
        _initialise(self, init)
        self.config = {
            "arch": "PreActResNet",
            "depth": depth,
            "block": block,
            "num_classes": num_classes,
            "in_channels": in_channels,
            "init": init,
            "act": act,
            "bn_momentum": float(bn_momentum),
        }
