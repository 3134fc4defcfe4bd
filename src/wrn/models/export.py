"""Export a model for inference, in eval mode: ONNX, ``torch.export`` (.pt2) or TorchScript.

The format follows the file's extension. Batch, height and width are dynamic: the networks are fully
convolutional with global pooling, so one file serves any image size. The example input has the channels
and size the model was trained on (``metadata["input"]`` of a trained model's model.json), and that record
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
from wrn.models.registry import model_info

# file extension -> format
FORMATS = {".onnx": "onnx", ".pt2": "export", ".ts": "torchscript"}


def format_for(path: str | os.PathLike) -> str:
    """The export format of an output file, from its extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(f"{ext} ({fmt})" for ext, fmt in FORMATS.items())
        raise ConfigError(f"cannot tell the export format of {str(path)!r} from its extension; use {known}")
    return FORMATS[suffix]


def example_input(
    model: nn.Module, batch: int = 2, image_size: int | None = None, in_channels: int | None = None
) -> torch.Tensor:
    """A random batch of the model's input: ``image_size`` (default: the family's native 32 or 224)."""
    config = getattr(model, "config", {})
    if image_size is None:
        image_size = 224 if config.get("arch") == "ImageNetResNet" else 32
        if "name" in config:
            try:
                image_size = model_info(config["name"])["input_size"]
            except ConfigError:
                pass
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
    size = image_size or record.get("size")
    x = example_input(model, batch=2, image_size=size, in_channels=record.get("channels"))
    # The smallest side that keeps the last feature map above 1x1 (the tracer specialises a size of 1); the
    # CIFAR networks with TensorFlow's 'SAME' padding halve a side rounding down, the others rounding up.
    config = getattr(model, "config", {})
    side = 33 if config.get("arch") == "ImageNetResNet" else 8 if config.get("same_padding") else 5
    dims = {
        0: torch.export.Dim("batch", min=1),
        2: torch.export.Dim("height", min=side),
        3: torch.export.Dim("width", min=side),
    }
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
