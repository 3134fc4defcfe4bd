"""Weights in and out: ``model.safetensors`` + ``model.json``, written atomically.

safetensors holds only tensors, so loading a weights file can never run code; the architecture lives in
``model.json`` as the model's plain ``config`` dict.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from wrn.atomic import (
    fsync_directory,
    remove_stale_temporaries,
    write_bytes,
    write_temporary,
    writing,
)
from wrn.errors import CheckpointError, ConfigError
from wrn.models.checked import load_state_dict_checked
from wrn.models.registry import MAX_CHANNELS, MAX_CLASSES, MAX_IMAGE_SIZE, build_model, check_config

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"
# the previous weights, kept while a save replaces the pair (see save_model)
PREVIOUS_WEIGHTS = ".model.safetensors.prev"
FORMAT_VERSION = 1
# The largest model.json read: ImageNet-21k's 21,843 class names take a few hundred kilobytes.
MAX_CONFIG_BYTES = 16 * 1024 * 1024
# Characters a printed field may not hold: the C0 and C1 controls and DEL, which drive a terminal (ANSI
# colours, OSC titles and hyperlinks, a cursor moved over what was printed before).
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel / DataParallel / ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def read_torch_file(path: str | os.PathLike, what: str = "a PyTorch checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one sentence for every way it can fail.

    Only tensors and plain containers are read: a file that pickles anything else (a whole module, an
    optimizer class, an argparse Namespace) is refused, never executed. A file that is no ``torch.save``
    file at all (an ONNX model, safetensors weights, an image) is named as what it is."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; give the path of {what}")
    kind = foreign_kind(path)
    if kind is not None:
        raise CheckpointError(
            f"{path} is {kind}, not {what} (which torch.save writes as a zip archive or a pickle); give the "
            "PyTorch file that the weights were saved to"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises many kinds (UnpicklingError, KeyError, EOFError, ...)
        text = str(exc)
        if "TorchScript" in text:
            raise CheckpointError(
                f"{path} is a TorchScript archive (a compiled model), not {what}; load it with torch.jit.load "
                "in the code that made it and save its state_dict() with torch.save, then convert that"
            ) from None
        if "Unsupported global" in text or "GLOBAL" in text:
            raise CheckpointError(
                f"{path} holds pickled Python objects besides tensors and plain containers (a whole model, a "
                "class or a Namespace), which wrn never unpickles; load it in the code that wrote it and save "
                "its state_dict() with torch.save, then convert that"
            ) from None
        raise CheckpointError(
            f"{path} is not {what}: torch.load cannot read it ({type(exc).__name__}); is it truncated, or "
            "another kind of file?"
        ) from None


def foreign_kind(path: str | os.PathLike) -> str | None:
    """What a file is if its first bytes say it is a known kind that no ``torch.save`` writes (which
    writes a zip archive, or a pickle of protocol 2 or more): "an ONNX model", "a safetensors file", "an
    image"; None otherwise."""
    with open(path, "rb") as f:
        head = f.read(16)
    size = os.path.getsize(path)
    if len(head) >= 10 and head[8:10] == b'{"' and 8 + int.from_bytes(head[:8], "little") <= size:
        return "a safetensors file (wrn.load_model reads it with its model.json)"
    if head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        return None
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM")):
        return "an image"
    if Path(path).suffix.lower() == ".onnx" or head[:1] == b"\x08":  # ONNX's protobuf opens with ir_version
        return "an ONNX model (a graph for inference, exported from a PyTorch model)"
    return None  # torch.load names the rest: "cannot read it", truncated or of another kind


def save_model(
    model: nn.Module, directory: str | os.PathLike, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``model.safetensors`` (weights and BN statistics) and ``model.json`` (architecture) into
    ``directory`` as one pair. Returns the directory.

    ``metadata`` defaults to what the model carries as ``model.wrn_metadata`` (the input record of
    pretrained or converted weights: how its images are prepared), if anything; given keys win. A description
    that :func:`load_model` would refuse (a config out of its bounds) is refused before anything is written.

    The pair is replaced safely: both files are written in full under temporary names first; the previous
    weights stay linked as ``.model.safetensors.prev`` until the new model.json (which records the new
    weights' sha256) has its name. A process killed in between leaves the previous model.json beside a
    weights file that does not match it: :func:`load_model` then reads the previous weights, and the next
    save puts them back and removes what the killed one left."""
    model = unwrap(model)
    carried = getattr(model, "wrn_metadata", None)
    if isinstance(carried, dict):
        metadata = {**carried, **(metadata or {})}
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or "arch" not in config:
        raise CheckpointError("save_model needs a model built by wrn (one that carries model.config).")
    directory = Path(directory)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    doc = {
        "format_version": FORMAT_VERSION,
        "config": config,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "weights_sha256": "0" * 64,
        **({"metadata": metadata} if metadata else {}),
    }
    _check_doc(doc, "the model")
    with writing(directory / WEIGHTS_FILE):
        directory.mkdir(parents=True, exist_ok=True)
    recover_pair(directory)
    digest: list[str] = []

    def write_weights(tmp: str) -> None:
        save_file(tensors, tmp, metadata={"format": "pt"})
        digest.append(sha256_file(tmp))  # of the bytes written, before they get the final name

    needed = sum(t.numel() * t.element_size() for t in tensors.values())
    weights_tmp = write_temporary(directory / WEIGHTS_FILE, write_weights, needed=needed)
    try:
        doc["weights_sha256"] = digest[0]
        text = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
        config_tmp = write_temporary(
            directory / CONFIG_FILE, lambda tmp: write_bytes(tmp, text, directory / CONFIG_FILE), len(text)
        )
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(weights_tmp)
        raise
    previous = directory / PREVIOUS_WEIGHTS
    with writing(previous):
        with contextlib.suppress(FileNotFoundError):
            previous.unlink()
        if (directory / WEIGHTS_FILE).is_file() and (directory / CONFIG_FILE).is_file():
            try:
                os.link(directory / WEIGHTS_FILE, previous)
            except OSError:  # a file system without hard links: a copy keeps them as well
                shutil.copy2(directory / WEIGHTS_FILE, previous)
        try:
            os.replace(weights_tmp, directory / WEIGHTS_FILE)
            fsync_directory(directory)
            os.replace(config_tmp, directory / CONFIG_FILE)  # the commit: the new pair is whole from here on
        except OSError:
            recover_pair(directory)  # the previous pair back, the temporaries removed
            raise
        fsync_directory(directory)
        with contextlib.suppress(FileNotFoundError):
            previous.unlink()
    return directory


def recover_pair(directory: str | os.PathLike) -> None:
    """Undo what a save killed between its renames left in ``directory``: the previous weights go back beside
    the model.json that records them, and the temporary files of the killed save are removed."""
    directory = Path(directory)
    previous = directory / PREVIOUS_WEIGHTS
    with writing(previous):
        if previous.is_file():
            recorded = _recorded_sha(directory)
            weights = directory / WEIGHTS_FILE
            current = sha256_file(weights) if weights.is_file() else None
            if recorded is not None and current != recorded and sha256_file(previous) == recorded:
                os.replace(previous, weights)
                fsync_directory(directory)
            else:
                previous.unlink()
        remove_stale_temporaries(directory, (WEIGHTS_FILE, CONFIG_FILE))


def _recorded_sha(directory: Path) -> str | None:
    try:
        recorded = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8")).get("weights_sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return recorded if isinstance(recorded, str) else None


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class _ModelConfig(_Strict):
    arch: str
    name: str | None = None
    num_classes: int = Field(default=10, ge=0, le=MAX_CLASSES)  # 0: no classifier (features, pre-logits)
    in_channels: int = Field(default=3, ge=1, le=MAX_CHANNELS)


class _InputRecord(_Strict):
    channels: int = Field(ge=1, le=MAX_CHANNELS)
    size: int | None = Field(default=None, ge=1, le=MAX_IMAGE_SIZE)
    normalization: str | None = None
    resize: Literal["short-side", "imagenet"] = "short-side"
    resize_size: int | None = Field(default=None, ge=1, le=MAX_IMAGE_SIZE)  # torchvision's weights: 232, 256
    interpolation: Literal["nearest", "bilinear", "bicubic"] | None = None
    mean: list[float] | None = None
    std: list[Annotated[float, Field(gt=0)]] | None = None

    @model_validator(mode="after")
    def _mean_std(self):
        if self.normalization == "zca":
            return self
        for key in ("mean", "std"):
            values = getattr(self, key)
            if values is None:
                raise ValueError(f"has no {key} (the normalisation of its input)")
            if len(values) != self.channels:
                raise ValueError(f"has {len(values)} {key} values for {self.channels} channels")
        return self


class _Metadata(_Strict):
    input: _InputRecord | None = None
    classes: list[str] | None = None
    dataset: str | None = None

    @field_validator("classes")
    @classmethod
    def _printable(cls, classes):
        for index, name in enumerate(classes or ()):
            if _CONTROLS.search(name):
                raise ValueError(
                    f"holds a control character in class {index} ({name!r}), which would drive the terminal "
                    "it is printed on"
                )
        return classes


class _ModelDoc(_Strict):
    config: _ModelConfig
    weights_sha256: str | None = Field(default=None, pattern="^[0-9a-f]{64}$")
    metadata: _Metadata | None = None


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"])
    text = err["msg"].removeprefix("Value error, ")
    return f"{where} {text}" + (f" (it is {err['input']!r})" if err["type"] != "value_error" else "")


def _check_doc(doc: dict[str, Any], source: str) -> None:
    """Refuse a model description that :func:`read_model_doc` would refuse (one home for its bounds)."""
    try:
        _ModelDoc.model_validate(doc)
    except ValidationError as exc:
        raise CheckpointError(
            f"{source} makes a model that wrn.load_model refuses: {_first_problem(exc)}"
        ) from None


def check_loadable(config: dict[str, Any], source: str) -> None:
    """Refuse a model config out of the bounds that :func:`load_model` applies (classes, input channels), as
    what ``source`` makes."""
    _check_doc({"config": config}, source)


def read_model_doc(directory: str | os.PathLike) -> dict[str, Any]:
    """``directory/model.json`` as a dict, checked against its schema (the weights' sha256, the record of the
    input: sizes, mean and std per channel; class names free of control characters) and its config by
    :func:`wrn.models.registry.check_config` (a name that agrees with the fields, sizes within bounds), so that
    nothing is built, printed or read for a file that asks too much."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path} does not exist; point to a directory written by wrn.save_model or `wrn train`."
        )
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ValueError(
                f"it is larger than {MAX_CONFIG_BYTES >> 20} MiB, far more than a model description"
            )
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        _ModelDoc.model_validate(doc)
        check_config(doc["config"])
    except ValidationError as exc:
        raise CheckpointError(
            f"{path} is not a valid wrn model description: {_first_problem(exc)}; re-export the model or "
            "repair that field"
        ) from None
    except ConfigError as exc:
        raise CheckpointError(
            f"{path} is not a valid wrn model description: {str(exc).rstrip('.')}; re-export the model or "
            "repair that field"
        ) from None
    except RecursionError:
        raise CheckpointError(
            f"{path} is not a valid wrn model description (its JSON nests thousands of levels deep, as no model "
            "description does); re-export the model."
        ) from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not a valid wrn model description ({exc}); re-export the model."
        ) from None
    return doc


def load_model(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model saved by :func:`save_model` in ``directory``, with its weights, in eval mode."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(
            f"{directory} is not a directory; point to a directory written by wrn.save_model."
        )
    doc = read_model_doc(directory)
    model = build_model(dict(doc["config"]))
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights} does not exist; the model directory is incomplete.")
    recorded = doc.get("weights_sha256")  # model.json files written before checksums were recorded have none
    matches = recorded is None or sha256_file(weights) == recorded
    previous = directory / PREVIOUS_WEIGHTS
    if not matches and previous.is_file() and sha256_file(previous) == recorded:
        weights, matches = previous, True  # a save was killed between its renames: the previous pair is whole
    if not matches:
        raise CheckpointError(
            f"{weights} is corrupt: its sha256 does not match the one recorded in {CONFIG_FILE} when it was "
            "written; use a previous copy of the model or train it again"
        )
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights} is corrupt or not a safetensors file ({exc}).") from None
    load_state_dict_checked(model, state, source=str(weights))
    return model.to(map_location).eval()
