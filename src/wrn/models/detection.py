"""A wrn network as the backbone of a torchvision detector, with a feature pyramid (FPN).

>>> from torchvision.models.detection import FasterRCNN
>>> from wrn.models.detection import backbone
>>> model = FasterRCNN(backbone("wrn-50-2"), num_classes=91)

:func:`backbone` is torchvision's ``resnet_fpn_backbone`` for every family of the package: the returned
layers are the groups of the network (``feature_info`` indices 1.. : ``layer1..4`` of the ImageNet models,
``layer1..3`` of the CIFAR WRNs and pre-activation ResNets, whose last map is taken after the head's BN-ReLU),
the BNs are frozen by default (torchvision's ``FrozenBatchNorm2d``: the usual choice when a detector trains
with a few images per batch), and the early stages can be frozen with ``trainable_layers``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from wrn.errors import ConfigError
from wrn.models.features import check_chained
from wrn.models.io import unwrap
from wrn.models.registry import create_model


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` inside ``module`` (in place) by a ``FrozenBatchNorm2d`` holding the same
    statistics and affine parameters: the same function as the BN in eval mode, and nothing to train.
    Returns ``module`` (or the frozen BN if ``module`` is itself a BN)."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        for key in ("weight", "bias", "running_mean", "running_var"):
            src = getattr(module, key)
            if src is not None:
                getattr(frozen, key).copy_(src.detach())
        return frozen.to(module.running_mean.device if module.running_mean is not None else "cpu")
    for name, child in module.named_children():
        new = freeze_batch_norm(child)
        if new is not child:
            setattr(module, name, new)
    return module


def _stages(model: nn.Module) -> list[list[str]]:
    """The model's children grouped into the stages that end at each entry of ``feature_info``."""
    ends = [d["module"] for d in model.feature_info]
    stages: list[list[str]] = [[]]
    for name, _ in model.named_children():
        if len(stages) > len(ends):
            break
        stages[-1].append(name)
        if name == ends[len(stages) - 1]:
            stages.append([])
    return stages[: len(ends)]


def backbone(
    model: str | nn.Module,
    *,
    trainable_layers: int = 3,
    returned_layers: Sequence[int] | None = None,
    norm_layer: Callable[..., nn.Module] | None = FrozenBatchNorm2d,
    out_channels: int = 256,
    extra_blocks: ExtraFPNBlock | None = None,
    **model_kwargs: Any,
) -> BackboneWithFPN:
    """A torchvision ``BackboneWithFPN`` over a wrn network, ready for ``FasterRCNN(backbone, num_classes)``,
    ``MaskRCNN``, ``RetinaNet`` and the other detectors of ``torchvision.models.detection``.

    Args:
        model: a model name (built with ``wrn.create_model(model, **model_kwargs)``) or a wrn model, e.g. one
            from ``wrn.load_model`` or ``wrn.load_xternalz`` (copied, the original is left as it is).
        trainable_layers: how many stages, counted from the last, keep trainable parameters: 0 to 5 for the
            ImageNet models (stem, layer1..4; torchvision's default 3 trains layer2..4), 0 to 4 for the
            CIFAR families (stem, layer1..3; 3 trains every group and freezes the stem).
        returned_layers: the groups fed to the FPN, 1-based: default all of them ([1, 2, 3, 4] ImageNet,
            [1, 2, 3] CIFAR, at reductions 4-32 and 1-4 respectively).
        norm_layer: ``FrozenBatchNorm2d`` (default: every BN frozen with its current statistics) or
            ``nn.BatchNorm2d``/None (the BNs train; use with large per-device batches).
        out_channels: channels of every FPN map.
        extra_blocks: torchvision's extra FPN levels. Default: ``LastLevelP6P7`` when three groups are
            returned and ``LastLevelMaxPool`` otherwise, so that the default returned layers of every family
            give the five maps that torchvision's default anchor generator expects.
    """
    if isinstance(model, str):
        model = create_model(model, **model_kwargs)
    elif isinstance(model, nn.Module):
        if model_kwargs:
            raise ConfigError(
                f"model options {sorted(model_kwargs)} apply only when the backbone is given by name."
            )
        model = copy.deepcopy(unwrap(model))
    else:
        raise ConfigError(f"backbone needs a model name such as 'wrn-50-2' or a wrn model, got {model!r}.")
    info = getattr(model, "feature_info", None)
    name = getattr(model, "config", {}).get("name", type(model).__name__)
    if not isinstance(info, list) or len(info) < 2:
        raise ConfigError(f"{name} has no feature_info; a detection backbone needs a model built by wrn.")
    check_chained(model, name)
    n_stages = len(info)
    if isinstance(trainable_layers, bool) or not isinstance(trainable_layers, int):
        raise ConfigError(
            f"trainable_layers must be an integer in [0, {n_stages}], got {trainable_layers!r}."
        )
    if not 0 <= trainable_layers <= n_stages:
        raise ConfigError(
            f"trainable_layers must be in [0, {n_stages}] for {name} (stem + {n_stages - 1} groups), "
            f"got {trainable_layers}."
        )
    groups = list(range(1, n_stages))
    returned = list(groups if returned_layers is None else returned_layers)
    if not returned or any(r not in groups for r in returned) or returned != sorted(set(returned)):
        raise ConfigError(
            f"returned_layers must be increasing group numbers among {groups} for {name}, got {returned_layers!r}."
        )
    if norm_layer is FrozenBatchNorm2d:
        freeze_batch_norm(model)
    elif norm_layer not in (None, nn.BatchNorm2d):
        raise ConfigError(
            f"norm_layer must be torchvision's FrozenBatchNorm2d or torch.nn.BatchNorm2d, got {norm_layer!r}."
        )

    stages = _stages(model)
    frozen = [child for stage in stages[: n_stages - trainable_layers] for child in stage]
    for child in frozen:
        getattr(model, child).requires_grad_(False)

    if extra_blocks is None:
        extra_blocks = LastLevelP6P7(out_channels, out_channels) if len(returned) == 3 else LastLevelMaxPool()
    return BackboneWithFPN(
        model,
        return_layers={info[g]["module"]: str(k) for k, g in enumerate(returned)},
        in_channels_list=[info[g]["num_chs"] for g in returned],
        out_channels=out_channels,
        extra_blocks=extra_blocks,
    )
