"""The command-line options of a training config, derived from its fields (:mod:`wrn.train.config`).

Each config field's marker (:func:`wrn.train.fields.option`) is the only source of what the command line does
with it: a field with a ``--flag`` becomes one ``wrn train`` option, with the field's description as its help
and its choices listed from its type; ``commands`` adds it to ``wrn reproduce`` or ``wrn bench train``; the
lists of what ``--resume`` may change, what a grid counts as scaling and what an edit of config.yaml ignores
are read from the markers too (:func:`keys`). A section's marker applies to every field in it.

Every value given as text (``--flag VALUE``, ``--set KEY=VALUE``, a grid's overrides) is read by
:func:`parse_text` as the field's type says: a ``Literal``'s choices stay words (``--amp off``), ``null`` or
``~`` is None only where the field allows None, numbers, lists and booleans as their types.
"""

from __future__ import annotations

import argparse
import functools
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from wrn.errors import ConfigError
from wrn.train.config import TrainConfig

# The option groups of `wrn train --help`, by config section.
GROUPS = {
    "model": "model and data",
    "dataset": "model and data",
    "optim": "optimization",
    "schedule": "optimization",
    "objective": "optimization",
    "adv": "adversarial training",
    "ssl": "semi-supervised training",
    "run": "run",
}
NULLS = ("null", "~")  # None, where a field allows it (``none`` is a word: the choice of dataset.augment)


@dataclass(frozen=True)
class Option:
    key: str  # the dotted config key, e.g. optim.lr
    annotation: Any  # the field's type
    flag: str | None  # e.g. --lr; None: only --set sets it
    help: str
    how: bool  # says how or where a run trains, not what it computes
    volatile: bool  # changes nothing a run computes
    on_resume: bool  # --resume may change it
    commands: tuple[str, ...]  # the other commands that take its flag

    @property
    def dest(self) -> str:
        return self.key.replace(".", "__")

    @property
    def nullable(self) -> bool:
        return type(None) in typing.get_args(self.annotation)

    @property
    def base(self) -> Any:
        """The type without ``| None``."""
        if typing.get_origin(self.annotation) in (typing.Union, types.UnionType):
            (kind,) = (a for a in typing.get_args(self.annotation) if a is not type(None))  # one type or None
            return kind
        return self.annotation

    @property
    def kind(self) -> str:
        """ "bool", "list" or "value"."""
        if self.base is bool:
            return "bool"
        return "list" if typing.get_origin(self.base) is list else "value"

    @property
    def choices(self) -> tuple[str, ...]:
        if typing.get_origin(self.base) is typing.Literal:
            return tuple(str(c) for c in typing.get_args(self.base))
        return ()

    def parse(self, text: str) -> Any:
        """``text`` read as this field's type; text that does not read as it is returned as it is, for the
        config's validation to refuse in its own words."""
        text = text.strip()
        if self.nullable and text in NULLS:
            return None
        if self.kind == "list":
            (item,) = typing.get_args(self.base)
            return [_as(item, part) for part in text.strip("[]").replace(",", " ").split()]
        return _as(self.base, text)


@functools.cache
def _adapter(annotation: Any) -> TypeAdapter:
    return TypeAdapter(annotation)


def _as(annotation: Any, text: str) -> Any:
    try:
        return _adapter(annotation).validate_python(text)  # pydantic's lax mode: "0.1" -> 0.1, "off" -> "off"
    except ValidationError:
        return text


def _help(description: str, choices: tuple[str, ...]) -> str:
    if not choices:
        return description
    if not description:
        return ", ".join(choices)
    listed = ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]
    return f"{description}: {listed}"


def _marker(info) -> dict[str, Any]:
    return info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}


def _collect(model: type[BaseModel] = TrainConfig, prefix: str = "", inherited: dict | None = None):
    """Every leaf field of the config as an :class:`Option`, its section's marker merged under its own."""
    out = []
    for name, info in model.model_fields.items():
        marker = {**(inherited or {}), **{k: v for k, v in _marker(info).items() if v}}
        key = f"{prefix}{name}"
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += _collect(annotation, f"{key}.", marker)
            continue
        option = Option(key, annotation, marker.get("flag"), "", bool(marker.get("how")),
                        bool(marker.get("volatile")), bool(marker.get("on_resume")),
                        tuple(marker.get("commands") or ()))  # fmt: skip
        out.append(_with_help(option, info.description or ""))
    return tuple(out)


def _with_help(option: Option, description: str) -> Option:
    return Option(**{**option.__dict__, "help": _help(description, option.choices)})


OPTIONS: tuple[Option, ...] = _collect()
BY_KEY: dict[str, Option] = {o.key: o for o in OPTIONS}


def keys(what: str) -> tuple[str, ...]:
    """The dotted keys whose marker says ``what``: ``how`` (a grid changed only in them is not scaled down),
    ``volatile`` (an edit of them in config.yaml is no edit) or ``on_resume`` (``--resume`` may change them)."""
    return tuple(o.key for o in OPTIONS if getattr(o, what))


def command_keys(command: str) -> tuple[str, ...]:
    """The keys whose flag ``command`` (``reproduce`` or ``bench``) takes too."""
    return tuple(o.key for o in OPTIONS if command in o.commands)


def parse_text(key: str, text: str) -> Any:
    """A value given as text for config key ``key``, read as the field's type says (:meth:`Option.parse`);
    for a key that is no field, the text (the config's validation names the unknown key)."""
    option = BY_KEY.get(key)
    return option.parse(text) if option is not None else text


def add_options(parser: argparse.ArgumentParser, keys: tuple[str, ...] | None = None, group=None) -> dict:
    """Add the options of ``keys`` (default: every field with a flag) to ``parser``, in their groups (or all
    in ``group``); return the groups by title, for the command's own options to join."""
    groups: dict[str, Any] = {}
    for option in OPTIONS:
        if option.flag is None or (keys is not None and option.key not in keys):
            continue
        title = GROUPS[option.key.split(".")[0]]
        if group is None:
            groups.setdefault(title, parser.add_argument_group(title))
        target = group or groups[title]
        if option.kind == "bool":
            target.add_argument(
                option.flag,
                dest=option.dest,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=option.help,
            )
        else:
            target.add_argument(
                option.flag,
                dest=option.dest,
                type=option.parse,
                default=None,
                metavar=option.flag.lstrip("-").replace("-", "_").upper(),
                help=option.help,
            )
    return groups


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The dotted keys of the options given on the command line, with their values."""
    return {o.key: getattr(args, o.dest) for o in OPTIONS if getattr(args, o.dest, None) is not None}


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """The overrides of the parsed options and of ``--set KEY=VALUE`` (``args.set``), as dotted keys; one key
    given both ways is refused."""
    out = given(args)
    flagged = set(out)
    for item in getattr(args, "set", None) or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} needs the form KEY=VALUE, e.g. --set optim.lr=0.05")
        key, value = (part.strip() for part in item.split("=", 1))
        if key in flagged:
            raise ConfigError(
                f"--set {key}=... and {BY_KEY[key].flag} both set {key}; give it once (either is fine)"
            )
        out[key] = parse_text(key, value)
    return out


def flag_of(key: str) -> str:
    """The option that sets ``key``, or ``--set key=...``."""
    option = BY_KEY.get(key)
    return option.flag if option is not None and option.flag else f"--set {key}=..."
