"""Export a model for inference, in eval mode: ONNX, ``torch.export`` (.pt2) or TorchScript.

The format follows the file's extension. Batch, height and width are dynamic: the networks are fully
convolutional with global pooling, so one file serves any image size from a smallest side on (5 for the CIFAR
families, 33 for the ImageNet ones); a WRN with 'SAME' padding (DeepMind's, the robustness models) takes
multiples of 4 from 8 on, and its .pt2 and ONNX files say so (height and width ``4*k``). The example input
has the channels and size the model was trained on (``metadata["input"]`` of a trained model's model.json), and that record
(normalisation, class names) travels inside the file: ONNX ``metadata_props``, an extra ``wrn.json`` file
in .pt2 and TorchScript archives.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wrn.atomic import atomic_write, write_bytes
from wrn.errors import ConfigError
from wrn.models.io import unwrap
from wrn.models.registry import check_image_size, model_info

# file extension -> format
FORMATS = {".onnx": "onnx", ".pt2": "export", ".ts": "torchscript"}


def format_for(path: str | os.PathLike) -> str:
    """The export format of an output file, from its extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(f"{ext} ({fmt})" for ext, fmt in FORMATS.items())
        raise ConfigError(f"cannot tell the export format of {str(path)!r} from its extension; use {known}")
    return FORMATS[suffix]


def native_size(model: nn.Module) -> int:
    """The side of the images a model's family is made for: 32, or 224 for the ImageNet networks."""
    config = getattr(model, "config", {})
    size = 224 if config.get("arch") == "ImageNetResNet" else 32
    if "name" in config:
        try:
            size = model_info(config["name"])["input_size"]
        except ConfigError:
            pass
    return size


def input_sides(model: nn.Module) -> tuple[int, int]:
    """The smallest side an exported file takes and the multiple its sides are: the smallest that keeps
    the last feature map above 1x1 (the tracer specialises a size of 1), 5 for the CIFAR families and 33
    for the ImageNet ones; 8 for a WRN with 'SAME' padding, and multiples of 4 for DeepMind's
    (``size_multiple``)."""
    multiple = getattr(unwrap(model), "size_multiple", 1)
    config = getattr(model, "config", {})
    # 'SAME' padding halves a side rounding down, the others round up
    side = 33 if config.get("arch") == "ImageNetResNet" else 8 if config.get("same_padding") else 5
    return -(-side // multiple) * multiple, multiple


def _side_dims(side: int, multiple: int) -> dict[int, Any]:
    """The dynamic height and width of an export: from ``side`` up, multiples of ``multiple``."""
    if multiple == 1:
        return {2: torch.export.Dim("height", min=side), 3: torch.export.Dim("width", min=side)}
    return {
        2: multiple * torch.export.Dim("height_blocks", min=side // multiple),
        3: multiple * torch.export.Dim("width_blocks", min=side // multiple),
    }


def example_input(
    model: nn.Module, batch: int = 2, image_size: int | None = None, in_channels: int | None = None
) -> torch.Tensor:
    """A random batch of the model's input: ``image_size`` (default: the family's native 32 or 224)."""
    config = getattr(model, "config", {})
    image_size = native_size(model) if image_size is None else image_size
    channels = in_channels or config.get("in_channels", 3)
    device = next(model.parameters()).device
    return torch.randn(batch, channels, image_size, image_size, device=device)


def export_model(
    model: nn.Module,
    out: str | os.PathLike,
    fmt: str | None = None,
    image_size: int | None = None,
    metadata: dict[str, Any] | None = None,
    opset: int = 18,
) -> Path:
    """Write ``model`` (in eval mode) to ``out``; ``fmt`` ('onnx', 'export' or 'torchscript') defaults to the
    extension's (:data:`FORMATS`). ``metadata`` (JSON-able) is stored in the file. The file is moved into
    place only once complete. Returns the path."""
    fmt = fmt or format_for(out)
    if fmt not in FORMATS.values():
        raise ConfigError(f"export format must be one of {', '.join(FORMATS.values())}, got {fmt!r}.")
    model = unwrap(model).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = (metadata or {}).get("input") or {}
    side, multiple = input_sides(model)
    if image_size is not None:
        size = check_image_size(image_size, side, multiple)
    else:  # the training size, where the file can be traced at it
        size = record.get("size") or native_size(model)
        size = size if size >= side and size % multiple == 0 else side
    x = example_input(model, batch=2, image_size=size, in_channels=record.get("channels"))
    dims = {0: torch.export.Dim("batch", min=1), **_side_dims(side, multiple)}
    info = json.dumps({"config": getattr(model, "config", {}), **(metadata or {})})

    def write(tmp: str) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if fmt == "onnx":
                program = torch.onnx.export(
                    model,
                    (x,),
                    None,
                    input_names=["images"],
                    output_names=["logits"],
                    dynamic_shapes=(dims,),
                    opset_version=opset,
                    dynamo=True,
                    verbose=False,
                )
                program.model.metadata_props["wrn"] = info
                program.save(tmp, external_data=False)
            elif fmt == "export":
                program = torch.export.export(model, (x,), dynamic_shapes=(dims,))
                buffer = io.BytesIO()  # torch's zip writer aborts the process on a full disk: write it here
                torch.export.save(program, buffer, extra_files={"wrn.json": info})
                write_bytes(tmp, buffer.getbuffer(), out)
            else:
                buffer = io.BytesIO()
                torch.jit.save(torch.jit.trace(model, x), buffer, _extra_files={"wrn.json": info})
                write_bytes(tmp, buffer.getbuffer(), out)

    return atomic_write(out, write, keep_suffix=True)
