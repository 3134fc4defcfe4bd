"""What a checkpoint file is, told from what it holds: the semi-supervised and robustness projects' files that
share xternalz's key names but are other networks or wrappers. Used by the xternalz reader (to refuse them) and by
the importers of those formats; it imports neither."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from wrn.errors import CheckpointError

# What kekmodel/FixMatch-pytorch's train.py writes beside the state dict.
_FIXMATCH_MARKS = ("ema_state_dict", "best_acc", "scheduler")


def _is_fixmatch_file(obj: Any) -> bool:
    return isinstance(obj, dict) and "state_dict" in obj and any(k in obj for k in _FIXMATCH_MARKS)


def _is_usb_file(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("model"), dict) and "ema_model" in obj


def _untouched(params: dict[str, torch.Tensor], prefix: str) -> bool:
    """True if the BN ``prefix`` still holds one weight for every channel and a zero bias, as a BN that never
    got a gradient (its EMA moves the weight by rounding only, never apart)."""
    w, b = params.get(prefix + "weight"), params.get(prefix + "bias")
    if w is None or b is None or w.numel() == 0:
        return False
    return bool((w == w.flatten()[0]).all()) and bool((b == 0).all())


def network_evidence(params: dict[str, torch.Tensor]) -> str:
    """What an xternalz-named state dict's BN weights say of its network: ``"fixmatch"`` (the first BNs of
    groups 2 and 3 never trained, as FixMatch's network never uses them, while others did), ``"xternalz"``
    (they trained) or ``"unknown"`` (no BN trained at all)."""
    skipped = ("block2.layer.0.bn1.", "block3.layer.0.bn1.")
    if not all(_untouched(params, p) for p in skipped):
        return "xternalz"
    bns = {k[: -len("running_mean")] for k in params if k.endswith("running_mean")} - set(skipped)
    return "fixmatch" if any(not _untouched(params, p) for p in bns) else "unknown"


def check_other_formats(obj: Any, source: str, model: nn.Module | None = None) -> None:
    """Refuse, as an xternalz file, one that FixMatch's or USB's code wrote (same key names, another network)
    or the robustness code's wrapper; with ``model`` (the xternalz reading built), what its weights show."""
    if _is_fixmatch_file(obj) and model is None:
        marks = ", ".join(k for k in _FIXMATCH_MARKS if k in obj)
        raise CheckpointError(
            f"{source} was written by FixMatch's training code (it holds {marks}), whose WRN feeds the raw input "
            "to the first blocks of groups 2 and 3 and gives other logits than xternalz's: convert it with "
            "`wrn convert fixmatch`"
        )
    if _is_usb_file(obj) and model is None:
        raise CheckpointError(
            f"{source} looks like a USB checkpoint ('model' and 'ema_model'): use `wrn convert usb`"
        )
    if isinstance(obj, dict) and "model_state_dict" in obj and model is None:
        raise CheckpointError(
            f"{source} holds 'model_state_dict', the wrapper of the robustness training code (DM-Improves-AT, "
            "adversarial_robustness_pytorch): use `wrn convert robustness`"
        )
    if model is None:
        return
    evidence = network_evidence(obj)
    if evidence == "fixmatch":
        raise CheckpointError(
            f"{source} holds FixMatch's WRN, not xternalz's: the BNs of the first blocks of groups 2 and 3 never "
            "trained (weights all equal, biases 0), as in FixMatch's network, which never uses them; convert it "
            "with `wrn convert fixmatch`"
        )
    if evidence == "unknown":
        raise CheckpointError(
            f"{source} cannot be told apart between xternalz's WRN and FixMatch's (no BN in it has trained, so "
            "its weights do not show which network wrote them, and the two give other logits): choose "
            "`wrn convert fixmatch` or `wrn convert usb` if semi-supervised code wrote it; an untrained "
            "xternalz network is wrn.create_model('wrn-D-K')"
        )
