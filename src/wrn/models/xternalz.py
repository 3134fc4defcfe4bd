"""Import the de facto ``WideResNet`` checkpoints of the most-copied PyTorch port (``wideresnet.py``).

That network is the paper's WRN-d-k with B(3,3) blocks, exactly our :class:`~wrn.models.cifar.WideBlock`:
BN-ReLU before each conv, the 1x1 projection applied to the pre-activated input only where the channel count
changes, dropout between the two convs; its head is BN-ReLU, an 8x8 average pool (= our global pool at 32x32)
and the classifier. Only the names differ:

=====================================================  =========================================
theirs                                                 ours
=====================================================  =========================================
``conv1``                                              ``conv1``
``block{g}.layer.{i}.{bn1,conv1,bn2,conv2}``           ``layer{g}.{i}.{bn1,conv1,bn2,conv2}``
``block{g}.layer.{i}.convShortcut``                    ``layer{g}.{i}.shortcut``
``bn1`` (the head's BN)                                ``bn``
``fc``                                                 ``fc``
=====================================================  =========================================

Read: a bare state dict, or one under ``'state_dict'`` or ``'model'``; with or without the ``module.`` prefix
of DataParallel/DDP; with the unused ``sub_block1.*`` of the TRADES variant (dropped, with one warning line).
Depth (from the number of blocks), width, classes and input channels come from the tensors' shapes. FixMatch's
and USB's WRNs share these key names but are other networks: their files are refused with the format to use
(:mod:`wrn.models.imports`), by their wrappers or, for a bare state dict, by the BNs that never trained
(:mod:`wrn.models.checkpoints` holds every format's detector). Files are opened with ``torch.load(weights_only=True)``: tensors and plain containers only, never code.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any

import torch
from torch import nn

from wrn.errors import CheckpointError
from wrn.models import checkpoints
from wrn.models.checkpoints import ConversionWarning

__all__ = ["ConversionWarning", "build_from_xternalz_keys", "load_xternalz", "read_xternalz"]

_THEIR_BLOCK = re.compile(r"^block([123])\.layer\.(\d+)\.(bn1|conv1|bn2|conv2|convShortcut)\.(\w+)$")
_OUR_BLOCK = re.compile(r"^layer([123])\.(\d+)\.(bn1|conv1|bn2|conv2|shortcut)\.(\w+)$")
_UNUSED = "sub_block1."


def _few(keys: list[str], n: int = 5, quote: bool = True) -> str:
    shown = ", ".join(repr(k) if quote else k for k in keys[:n])
    return shown + (f" and {len(keys) - n} more" if len(keys) > n else "")


def _their_key(ours: str) -> str:
    """The xternalz name of one of our WideResNet state-dict keys."""
    m = _OUR_BLOCK.match(ours)
    if m:
        g, i, module, field = m.groups()
        return f"block{g}.layer.{i}.{'convShortcut' if module == 'shortcut' else module}.{field}"
    if ours.startswith("bn."):
        return "bn1." + ours[len("bn.") :]
    return ours  # conv1.weight (and conv1.bias), fc.weight, fc.bias


def _shape(params: dict[str, torch.Tensor], key: str, source: str) -> tuple[int, ...]:
    if key not in params:
        raise CheckpointError(f"{source} lacks {key!r}, which a WideResNet state dict always has.")
    return tuple(params[key].shape)


def read_xternalz(obj: Any, source: str, dropout: float = 0.0) -> nn.Module:
    """The reader of the ``xternalz`` format, with the input of the port's train.py (the paper's CIFAR
    constants, for CIFAR-10 and CIFAR-100 alike)."""
    from wrn.data.registry import normalization_constants

    model = build_from_xternalz_keys(checkpoints.state_dict(obj, source, "xternalz"), source, dropout=dropout)
    if model.config["in_channels"] == 3:
        dataset = {10: "cifar10", 100: "cifar100"}.get(model.config["num_classes"])
        model.wrn_metadata = checkpoints.input_record(
            model, "cifar10", *normalization_constants("cifar10"), dataset=dataset
        )
    return model


def load_xternalz(path_or_dict: str | os.PathLike | dict[str, Any], dropout: float = 0.0) -> nn.Module:
    """Our ``wrn-D-K``, in eval mode, from a checkpoint of the widely copied ``WideResNet`` port.

    Args:
        path_or_dict: a file written by ``torch.save`` or an already loaded dict: the state dict, bare or
            under ``'state_dict'``/``'model'``, with or without the ``module.`` prefix.
        dropout: the dropout rate to build the model with (not stored in such files; 0 by default, which
            is also what inference uses).

    The result computes the same function as the port fed the same state dict, in eval mode and in train
    mode without dropout; ``wrn.save_model`` writes it as a model directory. A file that FixMatch's or USB's
    code wrote (their WRN has the same key names but another network) is refused with the format to use.
    """
    return checkpoints.load("xternalz", path_or_dict, dropout=dropout)


def build_from_xternalz_keys(
    params: dict[str, torch.Tensor], source: str, dropout: float = 0.0, **variant: Any
) -> nn.Module:
    """The WRN whose xternalz-named state dict is ``params`` (shapes give depth, width, classes, channels),
    built with the constructor options ``variant`` (activation, BN momentum, block switch...), in eval mode."""
    from wrn.models.registry import FIXMATCH_OPTIONS, list_models

    unused = sorted(k for k in params if k.startswith(_UNUSED))
    if unused:
        warnings.warn(
            f"dropped {len(unused)} tensors of sub_block1.* from {source}: the TRADES variant's unused copy of "
            "block1, which its forward pass never runs.",
            ConversionWarning,
            stacklevel=3,
        )
        params = {k: v for k, v in params.items() if not k.startswith(_UNUSED)}

    # Depth from the number of blocks, width from group 1's first conv, classes and channels from the ends.
    blocks: dict[int, set[int]] = {1: set(), 2: set(), 3: set()}
    for key in params:
        m = _THEIR_BLOCK.match(key)
        if m:
            blocks[int(m.group(1))].add(int(m.group(2)))
    counts = {g: len(ids) for g, ids in blocks.items()}
    if len(set(counts.values())) != 1 or any(ids != set(range(len(ids))) for ids in blocks.values()):
        raise CheckpointError(
            f"{source}: the three groups must hold the same number of blocks numbered from 0, found "
            f"{', '.join(f'block{g}: {sorted(ids)}' for g, ids in blocks.items())}."
        )
    n = counts[1]
    c_out, c_in, kh, kw = _shape(params, "block1.layer.0.conv1.weight", source)
    width, rem = divmod(c_out, 16)
    if rem or width < 1 or (kh, kw) != (3, 3):
        raise CheckpointError(
            f"{source}: block1's first conv has shape {(c_out, c_in, kh, kw)}; a WRN's is (16k, 16, 3, 3)."
        )
    num_classes = _shape(params, "fc.weight", source)[0]
    in_channels = _shape(params, "conv1.weight", source)[1]
    name = f"wrn-{6 * n + 4}-{width}"
    if variant.get("preact_first") == (1,) and f"{name}-fixmatch" in list_models():
        # FixMatch's network (and USB's, with its stem bias and head eps): named as the registry names it
        name += "-fixmatch"
        variant = {k: v for k, v in variant.items() if k not in FIXMATCH_OPTIONS}
    model = checkpoints.create_checked(
        name, source, num_classes=num_classes, in_channels=in_channels, dropout=dropout, **variant
    )

    ours = model.state_dict()
    theirs = {_their_key(k): k for k in ours}
    optional = {
        t for t, o in theirs.items() if o.endswith("num_batches_tracked")
    }  # absent before PyTorch 0.4.1
    missing = [t for t in theirs if t not in params and t not in optional]
    unexpected = [k for k in params if k not in theirs]
    if missing or unexpected:
        found = "; ".join(
            part
            for part in (
                f"missing keys {_few(missing)}" if missing else "",
                f"unexpected keys {_few(unexpected)}" if unexpected else "",
            )
            if part
        )
        raise CheckpointError(
            f"{source} does not fit {model.config['name']} (inferred from its shapes): {found}."
        )
    mismatched = [
        f"{t} {tuple(params[t].shape)} vs {tuple(ours[o].shape)}"
        for t, o in theirs.items()
        if t in params and params[t].shape != ours[o].shape
    ]
    if mismatched:
        raise CheckpointError(
            f"{source} does not fit {model.config['name']} (inferred from its shapes): mismatched shapes "
            f"(file vs model) {_few(mismatched, quote=False)}."
        )
    state = {o: params[t] if t in params else torch.zeros((), dtype=torch.long) for t, o in theirs.items()}
    model.load_state_dict(state, strict=True)
    return model.eval()
