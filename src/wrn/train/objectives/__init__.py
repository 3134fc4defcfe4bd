"""The objectives a training step can minimise, by name: the registry (timm's style: names -> constructors).

An objective is what :class:`~wrn.train.step.TrainStep` asks for the loss of a batch (:mod:`.base`): the
paper's cross-entropy (with label smoothing and the soft targets of mixup/CutMix), or another loss. Adding one
is one module in this package (a subclass of :class:`~wrn.train.objectives.base.Objective`) and one entry
below: its name (the value of ``--objective``), where its class lives, one line on what it computes and its
options, declared as config fields (:func:`wrn.train.fields.flagged`); they become the config section
``objective.<name>`` and their ``--flags``, with nothing else to edit. The registry imports no torch, so that
the config can list the names; the class is imported when a run builds it.
"""

from __future__ import annotations

import importlib
import typing
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, create_model

from wrn.train.fields import Section, flagged


@dataclass(frozen=True)
class Entry:
    target: str  # "module:Class", imported when a run builds it
    summary: str  # one line, for --help and the docs
    options: dict[str, Any] = field(default_factory=dict)  # option name -> (type, flagged(...))


OBJECTIVES: dict[str, Entry] = {
    "cross-entropy": Entry(
        "wrn.train.objectives.base:CrossEntropy",
        "the paper's cross-entropy (with --label-smoothing, and the soft targets of --mixup / --cutmix)",
    ),
    "focal": Entry(
        "wrn.train.objectives.focal:FocalLoss",
        "focal loss (Lin et al. 2017): cross-entropy weighted by (1 - p)^gamma, for hard or noisy examples",
        {"gamma": (float, flagged(2.0, "--focal-gamma", "focal loss: the focusing exponent gamma", ge=0.0))},
    ),
}


def objective_class(name: str) -> type:
    """The class of the objective ``name`` (a name the config has validated)."""
    module, _, attr = OBJECTIVES[name].target.partition(":")
    return getattr(importlib.import_module(module), attr)


def objective_section() -> type:
    """``objective``: the name of the loss a step minimises (:mod:`wrn.train.objectives`) and one sub-section
    per objective that has options, built from the registry's entries."""
    models = {
        key.replace("-", "_"): create_model(f"{key}_options", __base__=Section, **entry.options)
        for key, entry in OBJECTIVES.items()
        if entry.options
    }
    options = {key: (model, Field(default_factory=model)) for key, model in models.items()}
    name = flagged(
        "cross-entropy",
        "--objective",
        "the loss a training step minimises ("
        + "; ".join(f"{k}: {e.summary}" for k, e in OBJECTIVES.items())
        + ")",
    )
    return create_model(
        "ObjectiveSection", __base__=Section, name=(typing.Literal[tuple(OBJECTIVES)], name), **options
    )


__all__ = ["Entry", "OBJECTIVES", "objective_class", "objective_section"]
