"""Feature maps of the stem and of each group, with timm's conventions (``features_only=True``).

``wrn.create_model(name, features_only=True, out_indices=(...))`` returns a :class:`FeatureNet`: its forward
gives a list of tensors, one per chosen index, in network order, and ``feature_info`` says their channels and
reduction (``feature_info.channels()``, ``feature_info.reduction()``, ``feature_info.get_dicts()``).

Indices (every model also carries the full list as ``model.feature_info``, a list of dicts with ``num_chs``,
``reduction`` and ``module`` as timm's models do):

* CIFAR WRNs and pre-activation ResNets, 4 maps: 0 the stem conv (reduction 1), 1-3 the groups (1, 2, 4). The
  last one is taken after the head's BN-ReLU: in a pre-activation network the raw output of the last group
  is a sum of residuals that no BN has seen, the head's BN-ReLU is what turns it into the map the classifier
  pools, and this keeps ``features[-1] == model.forward_features(x)``. (timm's own pre-activation ResNetV2
  features take the raw last stage; its ``forward_features`` applies the final norm.) The maps of groups 1
  and 2 are the raw group outputs, as in timm.
* ImageNet ResNets/WRNs, 5 maps: 0 the stem after its ReLU (reduction 2), 1-4 ``layer1..4`` (4, 8, 16, 32).

The network is rebuilt from the model's children, in order, up to the last one needed: the classifier (and
later groups) are dropped, and the state-dict keys are the model's own, so a classifier's weights load into
it with ``strict=False`` (only ``fc.*`` and the unused groups are left over).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from wrn.errors import ConfigError


class FeatureInfo:
    """Channels, reduction and module name of the chosen feature maps (timm's ``FeatureInfo`` interface).

    ``info`` lists every map of the model; ``out_indices`` the chosen ones. Accessors without ``idx`` answer
    for the chosen maps, with an index (or a list of them) for those maps of the full list."""

    def __init__(self, info: list[dict[str, Any]], out_indices: Sequence[int]) -> None:
        self.info = [{**d, "index": i} for i, d in enumerate(info)]
        self.out_indices = tuple(out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (list, tuple)):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def get_dicts(
        self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None
    ) -> list[dict[str, Any]] | dict[str, Any]:
        def pick(i: int) -> dict[str, Any]:
            return dict(self.info[i]) if keys is None else {k: self.info[i][k] for k in keys}

        if idx is None:
            return [pick(i) for i in self.out_indices]
        if isinstance(idx, (list, tuple)):
            return [pick(i) for i in idx]
        return pick(idx)

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)

    def __getitem__(self, item: int) -> dict[str, Any]:
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo(out_indices={self.out_indices}, channels={self.channels()}, reduction={self.reduction()})"


def resolve_out_indices(out_indices: int | Sequence[int] | None, n_maps: int, name: str) -> tuple[int, ...]:
    """timm's conventions: None = every map, an int n = the last n maps, a sequence = those indices (negative
    ones count from the end). Returned sorted, as the maps come out in network order."""
    if out_indices is None:
        return tuple(range(n_maps))
    if isinstance(out_indices, int) and not isinstance(out_indices, bool):
        if not 1 <= out_indices <= n_maps:
            raise ConfigError(
                f"out_indices={out_indices} asks for the last {out_indices} of {n_maps} maps of {name}."
            )
        return tuple(range(n_maps - out_indices, n_maps))
    try:
        chosen = [int(i) for i in out_indices if not isinstance(i, bool)]
    except (TypeError, ValueError):
        chosen = []
    if not chosen or len(chosen) != len(list(out_indices)):
        raise ConfigError(
            f"out_indices must be a tuple of map indices such as (1, 2, 3), got {out_indices!r}."
        )
    bad = [i for i in chosen if not -n_maps <= i < n_maps]
    if bad:
        raise ConfigError(
            f"{name} has {n_maps} feature maps (indices 0..{n_maps - 1}: the stem, then each group); "
            f"out_indices {bad} do not exist."
        )
    resolved = sorted({i % n_maps for i in chosen})
    if len(resolved) != len(chosen):
        raise ConfigError(f"out_indices {tuple(out_indices)} name the same map twice.")
    return tuple(resolved)


def check_chained(model: nn.Module, name: str) -> None:
    """Refuse a model that its children, run in order, do not compute: AutoAugment's WRN adds the stem's
    output past the groups (``global_skip``)."""
    if getattr(model, "global_skip", 0):
        raise ConfigError(
            f"{name} adds its stem's output to its last group's (AutoAugment's global skip), which its groups "
            "taken one by one cannot compute; use model.forward_features(x) for its last map instead of "
            "features_only or a detection backbone."
        )


class FeatureNet(nn.Module):
    """The maps of the stem and the groups of a wrn model, as a list of tensors (timm's ``FeatureListNet``).

    Built from ``model``'s children in the order they run, up to the last chosen map; the children are
    shared with ``model``, not copied. ``config`` is the model's plus ``features_only`` and ``out_indices``,
    so :func:`wrn.build_model`, :func:`wrn.save_model` and :func:`wrn.load_model` work on it too."""

    def __init__(self, model: nn.Module, out_indices: int | Sequence[int] | None = None) -> None:
        super().__init__()
        info = getattr(model, "feature_info", None)
        name = getattr(model, "config", {}).get("name", type(model).__name__)
        if not isinstance(info, list) or not info:
            raise ConfigError(f"{name} has no feature_info; features_only needs a model built by wrn.")
        check_chained(model, name)
        chosen = resolve_out_indices(out_indices, len(info), name)
        self.feature_info = FeatureInfo(info, chosen)
        taps = {info[i]["module"]: i for i in chosen}
        self.return_layers: dict[str, int] = {}
        for child_name, child in model.named_children():
            if not taps:
                break
            self.add_module(child_name, child)
            if child_name in taps:
                self.return_layers[child_name] = taps.pop(child_name)
        if taps:  # feature_info names something that is not a direct child: a bug, not the user's mistake
            raise RuntimeError(f"feature modules {sorted(taps)} are not children of {name}")
        config = getattr(model, "config", None)
        if isinstance(config, dict):
            self.config = {**copy.deepcopy(config), "features_only": True, "out_indices": list(chosen)}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for child_name, child in self.named_children():
            x = child(x)
            if child_name in self.return_layers:
                out.append(x)
        return out
