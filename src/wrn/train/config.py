"""The training configuration: a validated tree of plain values, read from presets, YAML files and overrides.

A run is described by one :class:`TrainConfig`. It is built by merging, in order: the defaults (the paper's
CIFAR recipe), a shipped preset (``--preset``), a YAML file (``--config``) and command-line overrides. After
:func:`resolve`, every ``auto`` / ``null`` choice that depends on the machine or the data set is filled in, so
the ``config.yaml`` saved with a run says exactly what ran.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from wrn.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """``--lr true`` must not train at lr 1.0: a boolean is refused where a number is expected."""
        if isinstance(value, bool):
            annotation = cls.model_fields[info.field_name].annotation
            kinds = typing.get_args(annotation) or (annotation,)
            if any(k in (int, float) for k in kinds) and bool not in kinds:
                raise ValueError("expected a number, not a boolean")
        return value


class ModelSection(_Section):
    name: str = "wrn-28-10"
    dropout: float | None = Field(default=None, ge=0.0, lt=1.0)
    # None: the paper's ReLU and BN momentum 0.1. leaky_relu has slope 0.1 (FixMatch); FixMatch's BN: 0.001.
    act: Literal["relu", "leaky_relu", "silu"] | None = None
    bn_momentum: float | None = Field(default=None, gt=0.0, le=1.0)

    @field_validator("name")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from wrn.models.registry import model_info

        model_info(value)  # a name the registry cannot build fails here, before any data is read
        return value


class DataSection(_Section):
    name: Literal["cifar10", "cifar100", "svhn", "imagenet", "imagefolder", "digits"] = "cifar10"
    root: str = "data"
    augment: Literal["none", "crop", "flip-crop", "imagenet"] | None = None
    normalization: Literal["cifar10", "cifar100", "svhn", "digits", "imagenet", "zca", "none"] | None = None
    image_size: int | None = Field(default=None, gt=0)
    workers: int = Field(default=4, ge=0)
    download: bool = False
    verify: bool = True  # md5 of every file; false only for re-packed copies (still safely unpickled)


class OptimSection(_Section):
    lr: float = Field(default=0.1, gt=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    nesterov: bool = True
    weight_decay: float = Field(default=5e-4, ge=0.0)
    batch_size: int = Field(default=128, gt=0)
    eval_batch_size: int | None = Field(default=None, gt=0)
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimSection:
        if self.nesterov and self.momentum == 0:
            raise ValueError("Nesterov momentum needs momentum > 0; set optim.nesterov to false")
        return self


class ScheduleSection(_Section):
    name: Literal["multistep", "cosine"] = "multistep"
    epochs: int = Field(default=200, gt=0)
    # 1-indexed epochs that already run at the lowered rate (spec section 4: epoch 60 runs at 0.02).
    milestones: list[int] = Field(default_factory=lambda: [60, 120, 160])
    gamma: float = Field(default=0.2, gt=0.0, le=1.0)
    # The authors' code re-creates the optimizer at every drop, which clears the momentum buffers.
    reset_momentum: bool = True

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, value: list[int]) -> list[int]:
        if any(m < 2 for m in value):
            raise ValueError("milestones are 1-indexed epochs and must be >= 2")
        if sorted(set(value)) != value:
            raise ValueError("milestones must be strictly increasing")
        return value


class RunSection(_Section):
    seed: int = Field(default=0, ge=0)
    device: str = "auto"
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    # The test pass is the paper's measure and cheap: full precision unless asked otherwise.
    eval_amp: Literal["off", "bf16", "fp16"] = "off"
    compile: bool = False
    # torch.compile's mode: "reduce-overhead" adds CUDA graphs; "max-autotune" also searches kernels.
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = (
        "default"
    )
    channels_last: bool | None = None
    sync_bn: bool = False
    deterministic: bool = False
    checkpoint_every_minutes: float | None = Field(default=10.0, gt=0)
    checkpoint_every_steps: int | None = Field(default=None, gt=0)
    # Every this many steps: the NaN check and the per-step TensorBoard scalars (one host sync each).
    log_every_steps: int = Field(default=50, gt=0)
    progress: bool = True

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
            raise ValueError("device must be auto, cpu, cuda, cuda:N or mps")
        return value


class ProvenanceSection(_Section):
    """What ran the run (filled in by ``wrn train``; ignored when a run's config.yaml is reused)."""

    wrn: str | None = None
    torch: str | None = None
    cuda: str | None = None
    python: str | None = None
    command: str | None = None


COMPILE_MODES = typing.get_args(RunSection.model_fields["compile_mode"].annotation)


class TrainConfig(_Section):
    preset: str | None = None
    description: str = ""
    model: ModelSection = Field(default_factory=ModelSection)
    dataset: DataSection = Field(default_factory=DataSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    run: RunSection = Field(default_factory=RunSection)
    provenance: ProvenanceSection = Field(default_factory=ProvenanceSection)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of str/int/float/bool/None/list: safe in YAML and in a weights_only checkpoint."""
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------------------------- validation


def _error_sentence(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "config"
    msg = err["msg"]
    msg = msg.removeprefix("Value error, ")
    msg = msg[:1].lower() + msg[1:]
    if err["type"] == "extra_forbidden":
        return f"unknown config key {where!r}{_closest_key(err['loc'])}; `wrn presets demo` shows every key"
    if err["type"] == "literal_error":
        return f"{where} = {err.get('input')!r} is not allowed: {msg}"
    return f"{where} = {err.get('input')!r} is invalid: {msg}"


def _closest_key(loc: tuple) -> str:
    """`` (did you mean optim.lr?)`` for a misspelt key, by similarity among the keys of its section."""
    section: type[BaseModel] = TrainConfig
    for part in loc[:-1]:
        field = section.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        section = annotation
    close = difflib.get_close_matches(str(loc[-1]), list(section.model_fields), n=1, cutoff=0.6)
    return f" (did you mean {'.'.join(map(str, (*loc[:-1], close[0])))}?)" if close else ""


def validate(data: dict[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` from a nested dict; a bad key or value raises :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(
            "a training config must be a YAML mapping of sections (model, dataset, optim, schedule, run)"
        )
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_error_sentence(exc)) from None


# --------------------------------------------------------------------------------------------- presets


def _presets_dir():
    return resources.files("wrn.train") / "presets"


def list_presets() -> dict[str, str]:
    """Preset name -> one-line description, sorted by name (files starting with ``_`` are shared bases)."""
    out = {}
    for entry in _presets_dir().iterdir():
        if entry.name.endswith(".yaml") and not entry.name.startswith("_"):
            data = yaml.safe_load(entry.read_text()) or {}
            out[entry.name[: -len(".yaml")]] = str(data.get("description", "")).strip()
    return dict(sorted(out.items(), key=lambda item: _natural_key(item[0])))


def _natural_key(name: str) -> tuple:
    """``demo`` first, then by data set and numbers as numbers (wrn-16-4 before wrn-16-10)."""
    parts = tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t)
    return (name != "demo", parts)


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source} is not valid YAML{where}; fix the syntax and try again") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source} must hold a YAML mapping of sections (model, dataset, optim, schedule, run)"
        )
    return data


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated recursively by ``update`` (neither is modified)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# One layer of a config: (the preset it is, or None for a file or overrides; its mapping without extends).
_Layer = tuple[str | None, dict[str, Any]]


def _parent_of(data: dict[str, Any], source: str) -> str | None:
    """Pop the ``extends:`` key (``preset:`` means the same, as in a run's config.yaml) and return it."""
    extends, preset = data.pop("extends", None), data.pop("preset", None)
    if extends is not None and preset is not None and extends != preset:
        raise ConfigError(
            f"{source} has 'extends: {extends}' and 'preset: {preset}', two different recipes to start from; "
            "keep one of them"
        )
    parent = extends if extends is not None else preset
    if parent is not None and not isinstance(parent, str):
        raise ConfigError(f"{source}: 'extends' must name a preset (see 'wrn presets'), not {parent!r}")
    return parent


def unknown_preset(name: str) -> ConfigError:
    """The error for a preset name that does not exist, with the closest names as suggestions."""
    close = difflib.get_close_matches(str(name), list(list_presets()), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown preset {name!r}{hint} ('wrn presets' lists them)")


def _preset_chain(name: str, seen: tuple[str, ...] = ()) -> list[_Layer]:
    """The layers of a shipped preset, from the root base it extends to the preset itself."""
    entry = _presets_dir() / f"{name}.yaml"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not entry.is_file():
        raise unknown_preset(name)
    data = _read_yaml(entry.read_text(), f"preset {name!r}")
    parent = _parent_of(data, f"preset {name!r}")
    if parent is None:
        return [(name, data)]
    if parent in seen or parent == name:
        raise ConfigError(f"preset {name!r} extends itself through {parent!r}; remove the cycle")
    return [*_preset_chain(parent, (*seen, name)), (name, data)]


def _file_chain(path: str | Path | dict[str, Any]) -> list[_Layer]:
    """The layers of a config file (or of a mapping read already): the presets it extends, then itself."""
    if isinstance(path, dict):
        data, source = copy.deepcopy(path), "the config"
    else:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist; pass the path of a YAML file")
        source = f"config file {str(path)!r}"
        data = _read_yaml(path.read_text(), source)
    parent = _parent_of(data, source)
    return [*(_preset_chain(parent) if parent is not None else []), (None, data)]


def _merge_chain(chain: list[_Layer]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for _, layer in chain:
        merged = deep_merge(merged, layer)
    return merged


def load_preset(name: str) -> dict[str, Any]:
    """The raw nested dict of a shipped preset (``extends`` resolved), with ``preset`` set to its name."""
    data = _merge_chain(_preset_chain(name))
    data["preset"] = name
    return data


def load_file(path: str | Path) -> dict[str, Any]:
    """The raw nested dict of a config file, with the presets it extends merged in."""
    return _merge_chain(_file_chain(path))


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{'optim': {'lr': 0.1}}`` -> ``{'optim.lr': 0.1}``: every leaf under its dotted key."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data['a']['b'] = value`` for ``key='a.b'``, creating sections as needed."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _forget_data_choices(data: dict[str, Any], new_name: str | None, given: set[str]) -> None:
    """Drop the merged augmentation/normalisation when a later layer names another data set without them."""
    section = data.get("dataset")
    if new_name is None or not isinstance(section, dict) or new_name == section.get("name"):
        return
    for key in ("augment", "normalization"):
        if key not in given:
            section.pop(key, None)


def scale_milestones(milestones: list[int], from_epochs: int, to_epochs: int) -> list[int]:
    """The recipe's lr drops moved to the same fractions of a run of ``to_epochs`` (60, 120, 160 of 200 ->
    3, 6, 8 of 10). Milestones stay >= 2 (epoch 1 always runs at the initial rate); drops that land on the
    same epoch merge, and drops past the end of the run (a run of 1 epoch) are left out."""
    if from_epochs == to_epochs:
        return list(milestones)
    scaled = {max(2, math.floor(m * to_epochs / from_epochs + 0.5)) for m in milestones}
    return sorted(m for m in scaled if m <= to_epochs)


def _schedule_of(data: dict[str, Any]) -> dict[str, Any]:
    section = data.get("schedule")
    return section if isinstance(section, dict) else {}


def build_config(
    preset: str | None = None,
    config_file: str | Path | dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """Merge defaults < preset < file < overrides (dotted keys such as ``optim.lr``) and validate.

    ``config_file`` is a YAML file's path or the mapping such a file holds.

    A file may start from a preset with ``extends: NAME`` (or ``preset: NAME``, as every run's config.yaml
    has); together with ``preset`` it must name the same one. The result's ``preset`` is the shipped preset
    the run started from.

    A layer that switches to another data set without naming its augmentation or normalisation gets that
    data set's own (``--preset demo --dataset cifar10`` trains with CIFAR's flip-crop and constants, not the
    digits'), so a preset's data-specific choices never leak onto another data set.

    A layer that changes the number of epochs without giving milestones moves the lr drops to the same
    fractions of the new run (:func:`scale_milestones`): the paper's CIFAR drops sit at 0.3, 0.6 and 0.8 of
    the run whether it lasts 200 epochs or 10. Milestones given in the same layer as the epochs are kept.
    """
    chain: list[_Layer] = _preset_chain(preset) if preset is not None else []
    if config_file is not None:
        file_chain = _file_chain(config_file)
        named = file_chain[-2][0] if len(file_chain) > 1 else None
        if preset is not None and named is not None:
            if named != preset:
                raise ConfigError(
                    f"--preset {preset} and the config file's 'extends: {named}' name two different recipes to "
                    f"start from; drop --preset, or make the file extend {preset}"
                )
            chain = file_chain
        else:
            chain += file_chain
    layer: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        set_dotted(layer, key, value)
    if layer:
        chain.append((None, layer))

    defaults = ScheduleSection()
    # The milestones in force, and the run length they were written for.
    origin: dict[str, Any] = {"milestones": list(defaults.milestones), "epochs": defaults.epochs}
    data: dict[str, Any] = {}
    for _, layer in chain:
        section = layer.get("dataset") if isinstance(layer.get("dataset"), dict) else {}
        _forget_data_choices(data, section.get("name"), given=set(section))
        data = deep_merge(data, layer)
        if "milestones" in _schedule_of(layer):
            origin["milestones"] = _schedule_of(data).get("milestones")
            origin["epochs"] = _schedule_of(data).get("epochs", defaults.epochs)
    public = [name for name, _ in chain if name is not None and not name.startswith("_")]
    data["preset"] = public[-1] if public else None
    cfg = validate(data)
    epochs, from_epochs = cfg.schedule.epochs, origin["epochs"]
    if (
        cfg.schedule.name == "multistep"
        and isinstance(from_epochs, int)
        and 0 < from_epochs != epochs
        and cfg.schedule.milestones == origin["milestones"]
    ):
        cfg.schedule.milestones = scale_milestones(cfg.schedule.milestones, from_epochs, epochs)
    return cfg


def with_epochs(cfg: TrainConfig, epochs: int) -> TrainConfig:
    """``cfg`` shortened or lengthened to ``epochs``, its multistep milestones scaled along (as ``--epochs``)."""
    data = cfg.to_dict()
    if data["schedule"]["name"] == "multistep":
        data["schedule"]["milestones"] = scale_milestones(
            data["schedule"]["milestones"], data["schedule"]["epochs"], epochs
        )
    data["schedule"]["epochs"] = epochs
    return validate(data)


# --------------------------------------------------------------------------------------------- resolution


def resolve(cfg: TrainConfig, *, cuda_available: bool | None = None) -> TrainConfig:
    """Fill in every machine- or data-dependent default; raise :class:`ConfigError` for impossible choices."""
    import torch

    from wrn.data.registry import dataset_info

    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    cfg = cfg.model_copy(deep=True)
    run, data = cfg.run, cfg.dataset
    if run.device == "auto":
        run.device = "cuda" if cuda_available else "cpu"
    kind = run.device.split(":")[0]
    if kind == "cuda" and not cuda_available:
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is visible; use --device cpu")
    if kind == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' was asked for but is not available here; use --device cpu")
    if run.amp == "auto":
        run.amp = "bf16" if kind == "cuda" else "off"
    for option, value in (("--amp", run.amp), ("--eval-amp", run.eval_amp)):
        if value == "fp16" and kind != "cuda":
            raise ConfigError(
                f"{option} fp16 needs a CUDA GPU but the device is {run.device!r}; use {option} off (fp32: on "
                "most CPUs bf16 is slower than fp32)"
            )
    if run.channels_last is None:
        # on the GPU the tensor cores want it; on the CPU oneDNN's kernels measured 1.1-1.3x faster with it
        run.channels_last = kind in ("cuda", "cpu")
    if run.sync_bn and kind != "cuda":
        raise ConfigError(
            f"--sync-bn needs CUDA GPUs (SyncBatchNorm), but the device is {run.device!r}; drop --sync-bn"
        )
    # Unset augmentation / normalisation: the data set's own defaults (spec section 4; CIFAR-100 uses the
    # CIFAR-10 constants, as the authors' code does).
    defaults = dataset_info(data.name)
    if data.image_size is None and data.name not in ("imagefolder",):
        data.image_size = defaults.image_size  # image folders: set from the images once they are read
    if cfg.optim.eval_batch_size is None:
        cfg.optim.eval_batch_size = 2 * cfg.optim.batch_size  # no activations kept: twice the batch fits
    if cfg.model.dropout is None:
        cfg.model.dropout = 0.0
    if cfg.model.act is None:
        cfg.model.act = "relu"  # the paper's
    if cfg.model.bn_momentum is None:
        cfg.model.bn_momentum = 0.1  # PyTorch's convention; Torch's 0.9 of the authors' code
    if data.augment is None:
        data.augment = defaults.augment
    if data.normalization is None:
        data.normalization = defaults.normalization
    return cfg


def dump_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)
