"""Export a model to ONNX (with a dynamic batch dimension) or TorchScript, in eval mode."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from wrn.atomic import atomic_write
from wrn.errors import ConfigError
from wrn.models.io import unwrap
from wrn.models.registry import model_info

FORMATS = ("onnx", "torchscript")


def example_input(model: nn.Module, batch: int = 2, image_size: int | None = None) -> torch.Tensor:
    """A random batch of the model's native input size (32x32 CIFAR families, 224x224 ImageNet)."""
    config = getattr(model, "config", {})
    if image_size is None:
        image_size = 224 if config.get("arch") == "ImageNetResNet" else 32
        if "name" in config:
            image_size = model_info(config["name"])["input_size"]
    device = next(model.parameters()).device
    return torch.randn(batch, config.get("in_channels", 3), image_size, image_size, device=device)


def export_model(
    model: nn.Module,
    out: str | os.PathLike,
    fmt: str = "onnx",
    image_size: int | None = None,
    opset: int = 18,
) -> Path:
    """Write ``model`` (in eval mode) to ``out`` as ``fmt`` ('onnx' or 'torchscript'); the file is moved into
    place only once complete. Returns the path."""
    if fmt not in FORMATS:
        raise ConfigError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}.")
    model = unwrap(model).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    x = example_input(model, batch=2, image_size=image_size)

    def write(tmp: str) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if fmt == "onnx":
                torch.onnx.export(
                    model,
                    (x,),
                    tmp,
                    input_names=["images"],
                    output_names=["logits"],
                    dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                    opset_version=opset,
                    dynamo=True,
                    external_data=False,
                    verbose=False,
                )
            else:
                torch.jit.save(torch.jit.trace(model, x), tmp)

    return atomic_write(out, write)
