"""A run's config composed from its layers: the defaults, a shipped preset (and the presets it extends), a
YAML file and overrides, merged in that order and validated once (:func:`build_config`), with the one rule for
a changed number of epochs (:func:`scale_milestones`)."""

from __future__ import annotations

import copy
import difflib
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from wrn.errors import ConfigError
from wrn.train.config import ScheduleSection, TrainConfig, replace, validate

# --------------------------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans (only true/false: ``off``, ``on``, ``yes`` and ``no`` stay
    words, which the field's type reads), YAML 1.2's floats without a dot (``1e-3``), and a key given twice in
    one mapping refused (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # (a list key whole, for the message)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise ConfigError(f"the key {key!r} (line {line}) is not a name; write each key as a word")
            if key in seen:
                raise ConfigError(f"the key {key!r} is given twice (line {line}); keep one of them")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_BOOL, _FLOAT = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(_FLOAT, re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"), list("-+0123456789"))


def read_yaml(text: str, source: str) -> dict[str, Any]:
    """A YAML mapping read as configs are (:class:`_Loader`); ``source`` names it in the one-sentence errors."""
    try:
        data = yaml.load(text, Loader=_Loader)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
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


def read_yaml_file(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The mapping of a YAML file, every failure (missing, unreadable, not text, not YAML) one sentence."""
    from wrn.paths import not_a_file

    path = Path(path)
    source = f"{what} {str(path)!r}"
    kind = not_a_file(path)
    if kind is not None:  # reading a FIFO would wait for a writer forever
        raise ConfigError(f"{source} is {kind}, not a file; pass the path of a YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source} does not exist; pass the path of a YAML file") from None
    except IsADirectoryError:
        raise ConfigError(f"{source} is a directory; pass the path of a YAML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source} is not a text file; pass a YAML config file") from None
    except OSError as exc:
        raise ConfigError(f"{source} cannot be read ({exc.strerror}); check its permissions") from None
    return read_yaml(text, source)


def dump_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)


# --------------------------------------------------------------------------------------------- presets


def _presets_dir():
    return resources.files("wrn.train") / "presets"


def list_presets() -> dict[str, str]:
    """Preset name -> one-line description, sorted by name (files starting with ``_`` are shared bases)."""
    out = {}
    for entry in _presets_dir().iterdir():
        if entry.name.endswith(".yaml") and not entry.name.startswith("_"):
            data = read_yaml(entry.read_text(encoding="utf-8"), f"preset {entry.name!r}")
            out[entry.name[: -len(".yaml")]] = str(data.get("description", "")).strip()
    return dict(sorted(out.items(), key=lambda item: _natural_key(item[0])))


def _natural_key(name: str) -> tuple:
    """``demo`` first, then by data set and numbers as numbers (wrn-16-4 before wrn-16-10)."""
    parts = tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t)
    return (name != "demo", parts)


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
    data = read_yaml(entry.read_text(encoding="utf-8"), f"preset {name!r}")
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
        source = f"config file {str(path)!r}"
        data = read_yaml_file(path)
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


# What a recipe chose for its data set: forgotten when a later layer switches to another data set without them.
_DATA_CHOICES = ("augment", "normalization", "crop_padding", "image_size")


def _forget_data_choices(data: dict[str, Any], new_name: str | None, given: set[str]) -> None:
    """Drop the merged data set choices (augmentation, normalisation, the crop's border, the image size) when
    a later layer names another data set without them: ImageNet's 224 never reaches the 8x8 digits."""
    section = data.get("dataset")
    if new_name is None or not isinstance(section, dict) or new_name == section.get("name"):
        return
    for key in _DATA_CHOICES:
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
            origin["from"] = "recipe" if name is not None else "given"
        origin["from"] = schedule.get(
            "milestones_from", origin["from"]
        )  # said outright (a run's config.yaml)
    public = [name for name, _ in chain if name is not None and not name.startswith("_")]
    data["preset"] = public[-1] if public else None
    data.setdefault("schedule", {})["milestones_from"] = origin["from"]
    cfg = validate(data)
    if isinstance(origin["epochs"], int) and origin["epochs"] != cfg.schedule.epochs:
        cfg = _described(_moved_to(cfg, origin["epochs"]), origin["epochs"])
    return cfg


def _described(cfg: TrainConfig, from_epochs: int) -> TrainConfig:
    """A recipe's description that gives its number of epochs, told the run's (``200 epochs`` -> ``20 epochs
    (the recipe's 200)``), so that --print-config and config.yaml do not say what does not run."""
    old = f"{from_epochs} epochs"
    if old not in cfg.description or from_epochs == cfg.schedule.epochs:
        return cfg
    new = f"{cfg.schedule.epochs} epoch{'s' * (cfg.schedule.epochs != 1)} (the recipe's {from_epochs})"
    return cfg.model_copy(update={"description": cfg.description.replace(old, new)})


def _moved_to(cfg: TrainConfig, from_epochs: int) -> TrainConfig:
    """The one rule for a changed number of epochs: a recipe's multistep milestones move to the same shares
    of the run (:func:`scale_milestones`); milestones the user gave are kept as they are. The moved milestones
    are valid by construction (increasing, from 2, inside the run)."""
    schedule = cfg.schedule
    if schedule.name != "multistep" or schedule.milestones_from != "recipe":
        return cfg
    return replace(
        cfg, schedule={"milestones": scale_milestones(schedule.milestones, from_epochs, schedule.epochs)}
    )


def with_epochs(cfg: TrainConfig, epochs: int) -> TrainConfig:
    """``cfg`` shortened or lengthened to ``epochs`` (a value given by the user, so validated) by the rule of
    ``--epochs`` (:func:`_moved_to`)."""
    if epochs == cfg.schedule.epochs:
        return cfg
    data = cfg.to_dict()
    data["schedule"]["epochs"] = epochs
    return _described(_moved_to(validate(data), cfg.schedule.epochs), cfg.schedule.epochs)
