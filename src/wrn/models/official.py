"""Import checkpoints of the authors' code: the PyTorch port of their CIFAR training code and their BN-folded
ImageNet WRN-50-2 export (the ``official`` entry of :mod:`wrn.models.checkpoints`).

* The functional PyTorch port of the CIFAR WRNs: ``{'params': flat dict, 'epoch', 'optimizer'}`` (model.pt7)
  or the bare flat dict, keys ``conv0``, ``group{g}.block{i}.conv{0,1}``, ``...convdim``,
  ``...bn{0,1}.{weight,bias,running_mean,running_var}``, ``bn.*``, ``fc.*``. Depth, width, classes and input
  channels are read off the tensors.
* The authors' BN-folded ImageNet WRN-50-2 export: convs with ``.weight`` and ``.bias``, no BN,
  ``group{0..3}.block{i}.conv{0,1,2}``, ``group{g}.block0.conv_dim``, ``fc``. Each folded bias becomes a BN
  with gamma 1, beta = bias, running mean 0 and running variance 1 - eps, so the torchvision-compatible
  ``wrn-50-2`` computes the same function in eval mode.

Files are read with ``torch.load(weights_only=True)``: tensors and plain containers only, never code.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch
from torch import nn

from wrn.errors import CheckpointError
from wrn.models import checkpoints
from wrn.models.checked import load_state_dict_checked

_BLOCK_RE = re.compile(r"^group(\d+)\.block(\d+)\.")


def _blocks_per_group(params: dict[str, torch.Tensor]) -> dict[int, int]:
    counts: dict[int, set[int]] = {}
    for key in params:
        m = _BLOCK_RE.match(key)
        if m:
            counts.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return {g: max(ids) + 1 for g, ids in counts.items()}


def _bn(dst: dict[str, torch.Tensor], ours: str, params: dict[str, torch.Tensor], theirs: str) -> None:
    for field in ("weight", "bias", "running_mean", "running_var"):
        dst[f"{ours}.{field}"] = params[f"{theirs}.{field}"]
    dst[f"{ours}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)


def _convert_cifar(params: dict[str, torch.Tensor], source: str) -> nn.Module:
    counts = _blocks_per_group(params)
    if sorted(counts) != [0, 1, 2] or len(set(counts.values())) != 1:
        raise CheckpointError(
            f"{source}: expected three groups with the same number of blocks, found {counts}."
        )
    n = counts[0]
    width, rem = divmod(params["group0.block0.conv0"].shape[0], 16)
    if rem:
        raise CheckpointError(
            f"{source}: group0 is {params['group0.block0.conv0'].shape[0]} wide, not a multiple of 16."
        )
    name = f"wrn-{6 * n + 4}-{width}"
    model = checkpoints.create_checked(
        name, source, num_classes=params["fc.weight"].shape[0], in_channels=params["conv0"].shape[1]
    )
    state: dict[str, torch.Tensor] = {"conv1.weight": params["conv0"]}
    used = {"conv0"}
    for g in range(3):
        for i in range(n):
            src, dst = f"group{g}.block{i}", f"layer{g + 1}.{i}"
            state[f"{dst}.conv1.weight"] = params[f"{src}.conv0"]
            state[f"{dst}.conv2.weight"] = params[f"{src}.conv1"]
            used |= {f"{src}.conv0", f"{src}.conv1"}
            if f"{src}.convdim" in params:
                state[f"{dst}.shortcut.weight"] = params[f"{src}.convdim"]
                used.add(f"{src}.convdim")
            _bn(state, f"{dst}.bn1", params, f"{src}.bn0")
            _bn(state, f"{dst}.bn2", params, f"{src}.bn1")
    _bn(state, "bn", params, "bn")
    state["fc.weight"], state["fc.bias"] = params["fc.weight"], params["fc.bias"]
    used |= {k for k in params if k.startswith("bn.") or k.startswith("fc.") or ".bn0." in k or ".bn1." in k}
    extra = sorted(set(params) - used)
    if extra:
        raise CheckpointError(f"{source}: keys the official CIFAR WRN does not have: {', '.join(extra[:5])}.")
    load_state_dict_checked(model, state, source)
    return model


def _folded_bn(dst: dict[str, torch.Tensor], ours: str, bias: torch.Tensor, eps: float) -> None:
    dst[f"{ours}.weight"] = torch.ones_like(bias)
    dst[f"{ours}.bias"] = bias
    dst[f"{ours}.running_mean"] = torch.zeros_like(bias)
    dst[f"{ours}.running_var"] = torch.full_like(bias, 1.0 - eps)
    dst[f"{ours}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)


def _convert_imagenet_folded(params: dict[str, torch.Tensor], source: str) -> nn.Module:
    counts = _blocks_per_group(params)
    layers = tuple(counts.get(g, 0) for g in range(4))
    if layers != (3, 4, 6, 3):
        raise CheckpointError(f"{source}: a folded WRN-50-2 has 3, 4, 6, 3 blocks per group; found {layers}.")
    model = checkpoints.create_checked(
        "wrn-50-2",
        source,
        num_classes=params["fc.weight"].shape[0],
        in_channels=params["conv0.weight"].shape[1],
    )
    if params["group0.block0.conv1.weight"].shape[0] != 128:
        raise CheckpointError(
            f"{source}: group0's 3x3 conv is {params['group0.block0.conv1.weight'].shape[0]} wide, not 128 as in WRN-50-2."
        )
    eps = model.bn1.eps
    state: dict[str, torch.Tensor] = {"conv1.weight": params["conv0.weight"]}
    _folded_bn(state, "bn1", params["conv0.bias"], eps)
    for g, n in enumerate(layers):
        for i in range(n):
            src, dst = f"group{g}.block{i}", f"layer{g + 1}.{i}"
            for j in range(3):
                state[f"{dst}.conv{j + 1}.weight"] = params[f"{src}.conv{j}.weight"]
                _folded_bn(state, f"{dst}.bn{j + 1}", params[f"{src}.conv{j}.bias"], eps)
            if i == 0:
                state[f"{dst}.downsample.0.weight"] = params[f"{src}.conv_dim.weight"]
                _folded_bn(state, f"{dst}.downsample.1", params[f"{src}.conv_dim.bias"], eps)
    state["fc.weight"], state["fc.bias"] = params["fc.weight"], params["fc.bias"]
    used = {"conv0.weight", "conv0.bias", "fc.weight", "fc.bias"} | {
        f"group{g}.block{i}.{conv}.{field}"
        for g, n in enumerate(layers)
        for i in range(n)
        for conv in ("conv0", "conv1", "conv2", *(("conv_dim",) if i == 0 else ()))
        for field in ("weight", "bias")
    }
    extra = sorted(set(params) - used)
    if extra:
        raise CheckpointError(f"{source}: keys a folded WRN-50-2 does not have: {', '.join(extra[:5])}.")
    load_state_dict_checked(model, state, source)
    return model


def read_official(obj: Any, source: str) -> nn.Module:
    """The reader of the ``official`` format: our model from the loaded file, with the input the authors' code
    fed it (the paper's CIFAR constants at 32x32; ImageNet's at 224)."""
    params = checkpoints.state_dict(obj, source, "official", ("params", "state_dict", "model"))
    try:
        if "conv0.weight" in params and "group3.block0.conv_dim.weight" in params:
            model = _convert_imagenet_folded(params, source)
            from wrn.data.registry import DATASETS, preprocessing_record

            record = preprocessing_record(DATASETS["imagenet"], "imagenet", "imagenet")
            model.wrn_metadata = {"normalization": "imagenet", "input": record, "dataset": "imagenet"}
            if model.config["num_classes"] == 1000:  # ImageNet's classes in the order of their synsets
                from torchvision.models import Wide_ResNet50_2_Weights

                model.wrn_metadata["classes"] = list(Wide_ResNet50_2_Weights.IMAGENET1K_V1.meta["categories"])
        else:
            model = _convert_cifar(params, source)
            classes = model.config["num_classes"]
            dataset = {10: "cifar10", 100: "cifar100"}.get(classes)
            if model.config["in_channels"] == 3:
                from wrn.data.registry import normalization_constants

                # the port's main.py normalises CIFAR-10 and CIFAR-100 alike, with the paper's constants
                model.wrn_metadata = checkpoints.input_record(
                    model, "cifar10", *normalization_constants("cifar10"), dataset=dataset
                )
    except KeyError as exc:
        raise CheckpointError(f"{source} lacks the key {exc.args[0]!r} that its format requires.") from None
    return model


def load_official(path_or_dict: str | os.PathLike | dict[str, Any]) -> nn.Module:
    """Our model, in eval mode, from a checkpoint of the authors' code (a path or an already loaded dict).

    The CIFAR port's ``model.pt7`` (or its ``params`` dict) becomes ``wrn-D-K`` with the same outputs in
    train and eval mode; the BN-folded ImageNet WRN-50-2 export becomes the torchvision-compatible
    ``wrn-50-2`` with the same outputs in eval mode.
    """
    return checkpoints.load("official", path_or_dict)
