"""What a config field is: the rules every section's values follow, and the command-line marker kept beside
each field (:func:`option`), from which :mod:`wrn.train.options` derives every option and list."""

from __future__ import annotations

import re
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator


class Section(BaseModel):
    """A section of the config (and the config itself): unknown keys, inf/nan and booleans for numbers refused."""

    # frozen: a validated config is never changed in place (model_copy makes a changed copy); inf and nan are
    # refused wherever a number is expected (an lr of inf trains nothing)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

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


_FRACTION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*/\s*([0-9]*\.?[0-9]+)\s*$")


def fraction(value: object) -> object:
    """``"8/255"`` as the float 8/255; any other value as it is (a number, or text for the caller to refuse)."""
    if isinstance(value, str):
        match = _FRACTION.match(value)
        if match:
            num, den = float(match.group(1)), float(match.group(2))
            return num / den if den else value
    return value


def radius_text(value: float) -> str:
    """A radius as papers and RobustBench write it: ``8/255`` for a multiple of 1/255, else the number."""
    k = value * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{value:g}"


COMMANDS = ("reproduce", "bench")  # the commands besides `wrn train` that may take a field's option


def option(
    flag: str | None = None,
    *,
    how: bool = False,
    volatile: bool = False,
    on_resume: bool = False,
    commands: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The command-line side of a config field, kept beside it (pydantic's ``json_schema_extra``).

    ``flag``: the ``wrn train`` option that sets it (the field's description is its help, its choices are
    listed from its type); ``how``: the field says how or where a run trains, not what it computes (a grid
    changed only in such fields is not scaled down); ``volatile``: it changes nothing a run computes (a
    config.yaml edited in it is no edit); ``on_resume``: ``--resume`` may change it; ``commands``: the other
    commands that take the same option (``reproduce``: applied to every run of a grid; ``bench``: ``wrn
    bench train`` times the step with it).
    """
    unknown = set(commands) - set(COMMANDS)
    if unknown:
        raise ValueError(f"unknown commands {sorted(unknown)} in a config field's marker")
    return {"flag": flag, "how": how, "volatile": volatile, "on_resume": on_resume, "commands": commands}


def flagged(default, flag: str | None, description: str, **marker_and_constraints):
    """A config field with its command-line side (:func:`option`): default, ``--flag``, help, the marker's
    keywords and pydantic's constraints (``gt``, ``le``, ...)."""
    marker = {k: marker_and_constraints.pop(k) for k in ("how", "volatile", "on_resume", "commands")
              if k in marker_and_constraints}  # fmt: skip
    return Field(
        default=default,
        description=description,
        json_schema_extra=option(flag, **marker),
        **marker_and_constraints,
    )
