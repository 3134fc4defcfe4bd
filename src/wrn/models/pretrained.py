"""Pretrained ImageNet weights through torchvision's own weights API (its download, hash check and cache).

``create_model("wrn-50-2", pretrained=True)`` loads torchvision's default weights of ``wide_resnet50_2``
(``"IMAGENET1K_V1"`` or ``"IMAGENET1K_V2"`` choose), strictly, since the ImageNet networks here use
torchvision's key names. The weights' preprocessing (resize, centre crop, mean and std) is kept as
``model.wrn_metadata``, which :func:`wrn.save_model` writes into model.json for ``wrn predict`` and export.
Without network, torchvision reads the file from torch's hub cache (``torch.hub.get_dir()/checkpoints``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from wrn.errors import CheckpointError, ConfigError

# our name -> torchvision's weights enum
TORCHVISION_WEIGHTS = {
    "resnet-18": "ResNet18_Weights",
    "resnet-34": "ResNet34_Weights",
    "resnet-50": "ResNet50_Weights",
    "resnet-101": "ResNet101_Weights",
    "resnet-152": "ResNet152_Weights",
    "wrn-50-2": "Wide_ResNet50_2_Weights",
    "wrn-101-2": "Wide_ResNet101_2_Weights",
}


def weights_for(name: str, pretrained: bool | str) -> Any:
    """torchvision's weights entry for a model name and a ``pretrained`` choice (True: its default)."""
    import torchvision.models as tvm

    key = name.strip().lower()
    if key not in TORCHVISION_WEIGHTS:
        published = ", ".join(TORCHVISION_WEIGHTS)
        raise ConfigError(
            f"no pretrained weights exist for {name}: train it with `wrn train` or load your own with "
            f"wrn.load_model (torchvision publishes ImageNet weights for {published})."
        )
    enum = getattr(tvm, TORCHVISION_WEIGHTS[key])
    if pretrained is True:
        return enum.DEFAULT
    choices = [m for m in enum.__members__ if m != "DEFAULT"]
    if not isinstance(pretrained, str) or pretrained.strip().upper() not in enum.__members__:
        raise ConfigError(
            f"pretrained must be True or one of {', '.join(choices)} for {name}, got {pretrained!r}."
        )
    return enum[pretrained.strip().upper()]


def preprocessing(weights: Any) -> dict[str, Any]:
    """The model.json metadata of a torchvision weights entry: its test transform and class names."""
    t = weights.transforms()
    return {
        "pretrained": f"torchvision {type(weights).__name__}.{weights.name}",
        "dataset": "imagenet",
        "normalization": "imagenet",
        "classes": list(weights.meta["categories"]),
        "input": {
            "channels": 3,
            "size": int(t.crop_size[0]),
            "normalization": "imagenet",
            "mean": [m * 255 for m in t.mean],
            "std": [s * 255 for s in t.std],
            "resize": "imagenet",
            "resize_size": int(t.resize_size[0]),
            "interpolation": t.interpolation.value,
        },
    }


def fetch(name: str, pretrained: bool | str) -> tuple[Any, dict]:
    """torchvision's weights entry and its state dict (downloaded, hash-checked and cached by torchvision),
    with one sentence on every way getting them can fail."""
    import torch.hub

    weights = weights_for(name, pretrained)
    file_name = Path(weights.url).name
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        state = weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except Exception as exc:  # URLError, OSError, a hash mismatch (RuntimeError), an unreadable cached file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"could not get torchvision's {weights.name} weights of {name} ({type(exc).__name__}: {reason}); "
            f"without network, download {weights.url} elsewhere and put it at {cache / file_name}"
        ) from None
    return weights, state


def load_into(model: nn.Module, weights: Any, state: dict) -> nn.Module:
    """``model`` (built by name, 1000 classes) with torchvision's ``state`` loaded strictly and the weights'
    preprocessing kept as ``model.wrn_metadata``; in eval mode."""
    from wrn.models.checked import load_state_dict_checked

    load_state_dict_checked(
        model, state, source=f"torchvision's {weights.name} weights ({Path(weights.url).name})"
    )
    model.wrn_metadata = preprocessing(weights)
    return model.eval()
