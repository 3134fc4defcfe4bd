"""The command-line options of a training config, derived from its fields (:mod:`wrn.train.config`).

Each config field that has a ``--flag`` in its ``option(...)`` marker becomes one ``wrn train`` option, with
the field's description as its help and its choices listed from its type; ``wrn reproduce`` takes a few of
the same options. :func:`overrides_from` turns parsed options (and ``--set KEY=VALUE``) into the dotted-key
overrides that :func:`wrn.train.config.build_config` merges, for every command alike. Adding an option is
adding its marker beside the field.
"""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

from wrn.errors import ConfigError
from wrn.train.config import TrainConfig

# The option groups of `wrn train --help`, by config section.
GROUPS = {
    "model": "model and data",
    "dataset": "model and data",
    "optim": "optimization",
    "schedule": "optimization",
    "run": "run",
}


@dataclass(frozen=True)
class Option:
    key: str  # the dotted config key, e.g. optim.lr
    flag: str | None  # e.g. --lr; None: only --set sets it
    help: str
    kind: str  # "bool", "list" or "value"
    how: bool  # says how or where a run trains, not what it computes
    volatile: bool  # changes nothing a run computes
    on_resume: bool  # --resume may change it

    @property
    def dest(self) -> str:
        return self.key.replace(".", "__")


def _kind(annotation: Any) -> tuple[str, tuple[str, ...]]:
    """("bool" | "list" | "value", the choices of a Literal) of a field's type, ``X | None`` read as ``X``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is typing.Literal:
        return "value", tuple(str(c) for c in typing.get_args(annotation))
    if annotation is bool:
        return "bool", ()
    if typing.get_origin(annotation) is list:
        return "list", ()
    return "value", ()


def _help(description: str, choices: tuple[str, ...]) -> str:
    if not choices:
        return description
    if not description:
        return ", ".join(choices)
    listed = ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]
    return f"{description}: {listed}"


def _collect() -> tuple[Option, ...]:
    out = []
    for section, field in TrainConfig.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for name, info in model.model_fields.items():
            marker = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            kind, choices = _kind(info.annotation)
            out.append(
                Option(
                    key=f"{section}.{name}",
                    flag=marker.get("flag"),
                    help=_help(info.description or "", choices),
                    kind=kind,
                    how=bool(marker.get("how")) or section == "run",
                    volatile=bool(marker.get("volatile")),
                    on_resume=bool(marker.get("on_resume")),
                )
            )
    return tuple(out)


OPTIONS: tuple[Option, ...] = _collect()
BY_KEY: dict[str, Option] = {o.key: o for o in OPTIONS}


def how_keys() -> tuple[str, ...]:
    """Dotted keys that say how or where a run trains (changing them does not make a grid scaled down)."""
    return (*(o.key for o in OPTIONS if o.how), "description", "provenance")


def volatile_keys() -> tuple[str, ...]:
    """Dotted keys that change nothing a run computes (an edit of them in config.yaml is no edit)."""
    return (*(o.key for o in OPTIONS if o.volatile), "provenance")


def parse_value(text: str) -> Any:
    """A value as YAML reads it (``0.1`` a float, ``true`` a boolean, ``null`` None), else the text."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_list(text: str) -> list[Any]:
    """``60,120,160`` or ``60 120 160`` -> ``[60, 120, 160]``."""
    return [parse_value(p) for p in text.replace(",", " ").split()]


def add_options(parser: argparse.ArgumentParser, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Add the options of ``keys`` (default: every field with a flag) to ``parser``, in their groups; return
    the groups by title, for the command's own options to join."""
    groups: dict[str, Any] = {}
    for option in OPTIONS:
        if option.flag is None or (keys is not None and option.key not in keys):
            continue
        title = GROUPS[option.key.split(".")[0]]
        group = groups.get(title) or groups.setdefault(title, parser.add_argument_group(title))
        if option.kind == "bool":
            group.add_argument(
                option.flag,
                dest=option.dest,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=option.help,
            )
        else:
            group.add_argument(
                option.flag,
                dest=option.dest,
                type=parse_list if option.kind == "list" else parse_value,
                default=None,
                metavar=option.flag.lstrip("-").replace("-", "_").upper(),
                help=option.help,
            )
    return groups


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The dotted keys of the options given on the command line, with their values."""
    return {o.key: getattr(args, o.dest) for o in OPTIONS if getattr(args, o.dest, None) is not None}


def overrides_from(args: argparse.Namespace, flagged: dict[str, Any] | None = None) -> dict[str, Any]:
    """The overrides of the parsed options and of ``--set KEY=VALUE`` (``args.set``), as dotted keys; one key
    given both ways is refused. ``flagged``: the options' overrides, for a command that parsed them itself."""
    out = dict(flagged) if flagged is not None else given(args)
    flagged = set(out)
    for item in getattr(args, "set", None) or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} needs the form KEY=VALUE, e.g. --set optim.lr=0.05")
        key, value = (part.strip() for part in item.split("=", 1))
        if key in flagged:
            raise ConfigError(
                f"--set {key}=... and {BY_KEY[key].flag} both set {key}; give it once (either is fine)"
            )
        option = BY_KEY.get(key)
        out[key] = parse_list(value) if option is not None and option.kind == "list" else parse_value(value)
    return out


def flag_of(key: str) -> str:
    """The option that sets ``key``, or ``--set key=...``."""
    option = BY_KEY.get(key)
    return option.flag if option is not None and option.flag else f"--set {key}=..."
