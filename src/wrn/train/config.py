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

from wrn.data.registry import NORMALIZATION_CHOICES
from wrn.errors import ConfigError


class _Section(BaseModel):
    # inf and nan are refused wherever a number is expected (an lr of inf trains nothing)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

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


def option(flag: str | None = None, *, how: bool = False, volatile: bool = False, on_resume: bool = False):
    """The command-line side of a config field, kept beside it (pydantic's ``json_schema_extra``).

    ``flag``: the ``wrn train`` option that sets it (the field's description is its help, its choices are
    listed from its type); ``how``: the field says how or where a run trains, not what it computes (a grid
    changed only in such fields is not scaled down); ``volatile``: it changes nothing a run computes (a
    config.yaml edited in it is no edit); ``on_resume``: ``--resume`` may change it.
    """
    return {"flag": flag, "how": how, "volatile": volatile, "on_resume": on_resume}


def flagged(
    default, flag: str | None, description: str, *, how=False, volatile=False, on_resume=False, **constraints
):
    """A config field with its command-line side (:func:`option`): default, ``--flag``, help, constraints."""
    return Field(
        default=default,
        description=description,
        json_schema_extra=option(flag, how=how, volatile=volatile, on_resume=on_resume),
        **constraints,
    )


class ModelSection(_Section):
    name: str = flagged("wrn-28-10", "--model", "model name, e.g. wrn-28-10 (`wrn models` lists them)")
    dropout: float | None = flagged(
        None, "--dropout", "dropout rate in [0, 1) between the convs of a block", ge=0.0, lt=1.0
    )
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
    name: Literal["cifar10", "cifar100", "svhn", "imagenet", "imagefolder", "digits"] = flagged(
        "cifar10", "--dataset", "the data set"
    )
    root: str = flagged(
        "data", "--data-dir", "folder that holds (or will hold) the data set (default ./data)", how=True
    )
    augment: Literal["none", "crop", "flip-crop", "imagenet"] | None = flagged(
        None, "--augment", "training augmentation (default: the data set's recipe)"
    )
    normalization: Literal[NORMALIZATION_CHOICES] | None = flagged(
        None, "--normalization", "input normalisation (default: the data set's)"
    )
    crop_padding: Literal["reflect", "zeros"] = flagged(
        "reflect",
        "--crop-padding",
        "border of the training crop: reflect (the paper's) or zeros (torchvision's RandomCrop(padding=4))",
    )
    image_size: int | None = flagged(
        None, "--image-size", "training crop side (ImageNet / image folders)", gt=0
    )
    workers: int = flagged(
        4, "--workers", "data loading processes (image folders; the per-image policies)", how=True, ge=0
    )
    download: bool = flagged(False, "--download", "fetch a missing data set", how=True)
    # Cutout (DeVries & Taylor 2017): 16 px on CIFAR-10, 8 on CIFAR-100 in their code; on the device, after
    # normalisation, as their util/cutout.py
    cutout: int = flagged(
        0,
        "--cutout",
        "Cutout: the side in pixels of one square hole per training image (0: off; 16 on CIFAR-10)",
        ge=0,
    )
    # torchvision's v2.MixUp / v2.CutMix arithmetic, per batch on the device; both on: one of them per batch
    mixup: float = flagged(
        0.0,
        "--mixup",
        "mixup: alpha of the Beta distribution of the mixing weight, per batch (0: off; e.g. 1.0)",
        ge=0.0,
    )
    cutmix: float = flagged(
        0.0,
        "--cutmix",
        "CutMix: alpha of the Beta distribution of the pasted area, per batch (0: off; e.g. 1.0)",
        ge=0.0,
    )
    # torchvision's AutoAugment(CIFAR10 policy) / RandAugment / TrivialAugmentWide on each uint8 training image
    # before the crop and flip (image folders: after), in the loader's worker processes (wrn.data.policies)
    policy: Literal["none", "autoaugment", "randaugment", "trivialaugment"] = flagged(
        "none",
        "--policy",
        "per-image augmentation policy (before the crop and flip, as the AutoAugment code; image folders: "
        "after): AutoAugment's CIFAR-10 policy, RandAugment (--randaugment-n, --randaugment-m) or "
        "TrivialAugmentWide (default none)",
    )
    randaugment_n: int = flagged(
        2, "--randaugment-n", "RandAugment: number of operations per image (N, default 2)", ge=1, le=16
    )
    randaugment_m: int = flagged(
        9, "--randaugment-m", "RandAugment: magnitude of the operations (M in 0..30, default 9)", ge=0, le=30
    )
    # torchvision's RandomErasing(p, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0) after normalisation
    random_erasing: float = flagged(
        0.0,
        "--random-erasing",
        "random erasing: the probability that a training image gets one box set to 0 after normalisation "
        "(0: off; e.g. 0.5)",
        ge=0.0,
        le=1.0,
    )
    # md5 of every file; false only for re-packed copies (still safely unpickled)
    verify: bool = flagged(
        True,
        "--verify",
        "md5 checks of the data files (--no-verify: re-packed copies only; still safely unpickled)",
        how=True,
    )


class OptimSection(_Section):
    lr: float = flagged(0.1, "--lr", "initial learning rate", gt=0.0)
    momentum: float = flagged(0.9, "--momentum", "SGD momentum", ge=0.0, lt=1.0)
    nesterov: bool = flagged(True, "--nesterov", "Nesterov momentum (the paper's)")
    weight_decay: float = flagged(5e-4, "--weight-decay", "L2 weight decay on all parameters", ge=0.0)
    batch_size: int = flagged(128, "--batch-size", "global batch size (split over processes)", gt=0)
    eval_batch_size: int | None = flagged(
        None, "--eval-batch-size", "batch size of evaluation (default twice the training batch)", gt=0
    )
    label_smoothing: float = flagged(
        0.0, "--label-smoothing", "label smoothing of the training loss", ge=0.0, lt=1.0
    )
    # torch.optim.swa_utils.AveragedModel(get_ema_multi_avg_fn(decay), use_buffers=True), after every step
    ema_decay: float = flagged(
        0.0,
        "--ema",
        "decay of an average of the weights after every step, e.g. 0.999 (0: off); it is also "
        "evaluated, and saved as the run's model",
        ge=0.0,
        lt=1.0,
    )
    # timm's ModelEmaV3 warm-up: the k-th update (k from 0) uses min(decay, 1 - (1 + k) ** (-2/3)).
    ema_warmup: bool = flagged(
        False, "--ema-warmup", "warm the EMA's decay up as timm's ModelEmaV3: min(decay, 1 - (1 + k)^(-2/3))"
    )
    # Sharpness-Aware Minimization (Foret et al., ICLR 2021; google-research/sam): 0 is off.
    sam_rho: float = flagged(
        0.0, "--sam", "SAM's neighbourhood radius rho, e.g. 0.05 (0: off; two passes per step)", ge=0.0
    )
    grad_clip: float = flagged(
        0.0, "--grad-clip", "clip the gradient's global L2 norm to this value (0: off)", ge=0.0
    )
    # The paper (and its code) decays every parameter; off: no weight decay on 1-d ones (BN's and biases).
    decay_norm_and_bias: bool = flagged(
        True,
        "--decay-norm-and-bias",
        "weight decay on BN parameters and biases too (the paper's; default on)",
    )

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimSection:
        if self.nesterov and self.momentum == 0:
            raise ValueError("Nesterov momentum needs momentum > 0; set optim.nesterov to false")
        return self


MAX_EPOCHS = 100_000


class ScheduleSection(_Section):
    name: Literal["multistep", "cosine"] = flagged(
        "multistep",
        "--schedule",
        "the learning-rate schedule: the paper's multistep, or cosine (per step, to 0)",
    )
    epochs: int = flagged(
        200,
        "--epochs",
        "number of epochs (the recipe's lr drops move along)",
        on_resume=True,
        gt=0,
        le=MAX_EPOCHS,
    )
    # 1-indexed epochs that already run at the lowered rate (the paper's recipe: epoch 60 runs at 0.02).
    milestones: list[int] = Field(
        default_factory=lambda: [60, 120, 160],
        description="1-indexed epochs of the lr drops, e.g. 60,120,160 (kept as given)",
        json_schema_extra=option("--milestones"),
    )
    # Where the milestones came from: a recipe's ("recipe": they move with the number of epochs) or the user's
    # ("given": kept as they are). Filled in by build_config.
    milestones_from: Literal["recipe", "given"] = "recipe"
    gamma: float = flagged(0.2, "--gamma", "lr factor at each milestone (0.2 in the paper)", gt=0.0, le=1.0)
    # The authors' code re-creates the optimizer at every drop, which clears the momentum buffers.
    reset_momentum: bool = flagged(
        True, "--reset-momentum", "clear momentum buffers at each lr drop, as the authors' code (default on)"
    )
    # Linear warm-up per step over round(warmup_epochs * steps per epoch) steps, then the schedule.
    warmup_epochs: float = flagged(
        0.0, "--warmup-epochs", "linear lr warm-up per step over this many epochs (0: none)", ge=0.0
    )

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, value: list[int]) -> list[int]:
        if any(m < 2 for m in value):
            raise ValueError("milestones are 1-indexed epochs and must be >= 2")
        if any(m > MAX_EPOCHS for m in value):
            raise ValueError(f"milestones are epochs, at most {MAX_EPOCHS:,}")
        if sorted(set(value)) != value:
            raise ValueError("milestones must be strictly increasing")
        return value

    @model_validator(mode="after")
    def _warmup_inside_the_run(self) -> ScheduleSection:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"the warm-up ({self.warmup_epochs:g} epochs) must be shorter than the run ({self.epochs} epochs)"
            )
        return self


class RunSection(_Section):
    seed: int = flagged(0, "--seed", "random seed", ge=0, le=2**32 - 1)
    device: str = flagged("auto", "--device", "auto, cpu, cuda or cuda:N", how=True)
    amp: Literal["auto", "bf16", "fp16", "off"] = flagged(
        "auto",
        "--amp",
        "mixed precision of training (fp16: CUDA only, with a grad scaler; auto: bf16 on CUDA)",
        how=True,
    )
    # The test pass is the paper's measure and cheap: full precision unless asked otherwise.
    eval_amp: Literal["off", "bf16", "fp16"] = flagged(
        "off", "--eval-amp", "mixed precision of the test pass (default off: fp32)", how=True
    )
    compile: bool = flagged(False, "--compile", "torch.compile", how=True)
    # torch.compile's mode: "reduce-overhead" adds CUDA graphs; "max-autotune" also searches kernels.
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = (
        flagged(
            "default", "--compile-mode", "torch.compile's mode (reduce-overhead adds CUDA graphs)", how=True
        )
    )
    channels_last: bool | None = flagged(
        None, "--channels-last", "channels_last memory format (default on: CUDA and CPU)", how=True
    )
    sync_bn: bool = flagged(False, "--sync-bn", "SyncBatchNorm (DDP)", how=True)
    deterministic: bool = flagged(False, "--deterministic", "deterministic kernels", how=True)
    checkpoint_every_minutes: float | None = flagged(
        10.0, None, "", how=True, volatile=True, on_resume=True, gt=0
    )
    checkpoint_every_steps: int | None = flagged(
        None, None, "", how=True, volatile=True, on_resume=True, gt=0
    )
    # Every this many steps: the NaN check and the per-step TensorBoard scalars (one host sync each).
    log_every_steps: int = flagged(50, None, "", how=True, gt=0)
    progress: bool = flagged(
        True, "--progress", "a progress bar or progress lines", how=True, volatile=True, on_resume=True
    )
    # With an EMA of the weights: evaluate both, only the average, or only the plain model.
    eval_models: Literal["both", "ema", "model"] = flagged(
        "both", "--eval-models", "with --ema, which weights each epoch's test pass evaluates"
    )

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


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"the key {key!r} is given twice (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}; keep one of them") from None
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
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{source} is not a text file; pass a YAML config file") from None
        data = _read_yaml(text, source)
    parent = _parent_of(data, source)
    return [*(_preset_chain(parent) if parent is not None else []), (None, data)]


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
    """A recipe's lr drops moved to a run of ``to_epochs``, keeping the share of the run spent before each.

    A milestone ``m`` lowers the rate at the start of epoch ``m``, so ``m - 1`` epochs run before it; those are
    what scale: ``m' = round((m - 1) * to / from) + 1``. The CIFAR recipe's 60, 120, 160 of 200 become 3, 5, 6
    of 6 (2 of the 6 epochs at 0.1, as 59 of 200). Drops that land on the same epoch merge, a drop is never
    before epoch 2, and drops past the end of the run are left out.
    """
    if from_epochs == to_epochs:
        return list(milestones)
    scaled = {max(2, math.floor((m - 1) * to_epochs / from_epochs + 0.5) + 1) for m in milestones}
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

    One rule for the number of epochs: when a later layer changes it, a recipe's milestones (a shipped
    preset's, or the defaults') move along so that the same share of the run passes before each drop
    (:func:`scale_milestones`), and milestones the user gave (in a file or an option) are kept as they are.
    ``schedule.milestones_from`` records which of the two the run has.
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

    data: dict[str, Any] = {}
    origin = {"epochs": ScheduleSection().epochs, "from": "recipe"}  # where the milestones in force came from
    for name, layer in chain:
        section = layer.get("dataset") if isinstance(layer.get("dataset"), dict) else {}
        _forget_data_choices(data, section.get("name"), given=set(section))
        data = deep_merge(data, layer)
        schedule = _schedule_of(layer)
        if "milestones" in schedule:
            origin["epochs"] = _schedule_of(data).get("epochs", origin["epochs"])
            # a shipped preset's milestones are a recipe's; a file's or an option's are the user's
            origin["from"] = schedule.get("milestones_from", "recipe" if name is not None else "given")
    public = [name for name, _ in chain if name is not None and not name.startswith("_")]
    data["preset"] = public[-1] if public else None
    data.setdefault("schedule", {})["milestones_from"] = origin["from"]
    cfg = validate(data)
    if isinstance(origin["epochs"], int) and origin["epochs"] != cfg.schedule.epochs:
        cfg = _moved_to(cfg, origin["epochs"], cfg.schedule.epochs)
    return cfg


def _moved_to(cfg: TrainConfig, from_epochs: int, epochs: int) -> TrainConfig:
    """The one rule for a changed number of epochs: a recipe's multistep milestones move to the same shares
    of the run (:func:`scale_milestones`); milestones the user gave are kept as they are."""
    data = cfg.to_dict()
    schedule = data["schedule"]
    if schedule["name"] == "multistep" and schedule["milestones_from"] == "recipe":
        schedule["milestones"] = scale_milestones(schedule["milestones"], from_epochs, epochs)
    schedule["epochs"] = epochs
    return validate(data)


def with_epochs(cfg: TrainConfig, epochs: int) -> TrainConfig:
    """``cfg`` shortened or lengthened to ``epochs`` by the rule of ``--epochs`` (:func:`_moved_to`)."""
    return _moved_to(cfg, cfg.schedule.epochs, epochs)


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
    # Unset augmentation / normalisation: the data set's own defaults (docs/training.md; CIFAR-100 uses the
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
