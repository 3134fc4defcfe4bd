"""Which known checkpoint format a state dict resembles most, for refusals that help: the format to convert
it with, and what in its keys shows it."""

from __future__ import annotations

import torch


def _has(keys: set[str], *names: str) -> bool:
    return all(n in keys for n in names)


def closest_format(params: dict[str, torch.Tensor]) -> tuple[str | None, str]:
    """``(format, what)``: the ``wrn convert`` format a state dict (unwrapped, without ``module.``) looks like
    and a phrase saying why; format None where it matches none (``what`` then names a few keys)."""
    keys = set(params)
    if _has(keys, "block1.layer.0.conv1.weight", "classifier.weight"):
        return "usb", "a USB WideResNet (`classifier.*`, conv bias)"
    if "init_conv.weight" in keys or any(k.startswith("layer.0.block.0.") for k in keys):
        return "dm", "DeepMind's WRN (`init_conv`, `layer.G.block.I.conv_0`, `logits`)"
    if any(k.startswith(("0.", "1.")) for k in keys) and any(
        ".block1.layer." in k or ".init_conv." in k for k in keys
    ):
        return "robustness", "a robustness training WRN (a Sequential: `0.` normalisation, `1.` the WRN)"
    if _has(keys, "conv0", "group0.block0.conv0") or _has(
        keys, "conv0.weight", "group3.block0.conv_dim.weight"
    ):
        return "official", "a checkpoint of the authors' functional code (`conv0`, `group0.block0.conv0`)"
    if _has(keys, "block1.layer.0.conv1.weight", "fc.weight"):
        return "xternalz", "the xternalz WideResNet port (`block1.layer.0.conv1`, `bn1`, `fc`)"
    if _has(keys, "layer1.0.conv1.weight", "layer4.0.conv1.weight"):
        return (
            None,
            "an ImageNet ResNet in torchvision's format (build it with wrn.create_model and load_state_dict)",
        )
    if _has(keys, "layer1.0.conv1.weight", "bn.weight"):
        return None, "a wrn CIFAR model's own state dict (load it with load_state_dict into wrn.create_model)"
    shown = sorted(keys)[:5]
    return None, "keys " + ", ".join(repr(k) for k in shown) + (
        f" and {len(keys) - 5} more" if len(keys) > 5 else ""
    )


def resemblance(params: dict[str, torch.Tensor]) -> str:
    """One phrase: "it looks like X: use `wrn convert F`", or what it holds."""
    fmt, what = closest_format(params)
    return f"it looks like {what}: use `wrn convert {fmt}`" if fmt else f"it holds {what}"
