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


@dataclass(frozen=True)
class Adversary:
    """A method of adversarial training (``--adv NAME``): the objective it wraps is trained on the examples its
    attack makes. ``eps``, ``steps`` and ``step_size`` are its code's defaults, on pixels in [0, 1]. The
    ``awp_*`` fields are those of csdongxian/AWP's script for the method (``--awp``, :mod:`wrn.train.awp`): its
    default gamma, the epochs it trains before AWP turns on, and its proxy's learning rate (None: the run's
    ``--lr``, as the script passes its own ``args.lr``)."""

    target: str  # "module:Class", imported when a run builds it
    summary: str
    source: str  # the file its step was read from
    eps: float
    steps: int
    step_size: float
    awp_gamma: float | None  # None: no AWP code trains the method (--awp is refused beside it)
    awp_warmup: int
    awp_lr: float | None


ADVERSARIES: dict[str, Adversary] = {
    "pgd": Adversary(
        "wrn.train.objectives.adversarial:PGDTraining",
        "PGD adversarial training (Madry et al. 2018): the objective on PGD examples, made with the network "
        "in training mode, from a uniform random start",
        "locuslab/robust_overfitting train_cifar.py (Rice et al. 2020)",
        8 / 255,
        10,
        2 / 255,
        0.01,  # AT_AWP/train_cifar10.py: --awp-gamma 0.01, --awp-warmup 0 (epochs count from 0)
        0,
        0.01,  # its proxy_opt: SGD at lr 0.01
    ),
    "trades": Adversary(
        "wrn.train.objectives.adversarial:TRADES",
        "TRADES (Zhang et al. 2019): the objective on the clean images + beta x KL(adversarial || clean), the "
        "attack run with the network in eval mode from x + 0.001 N(0, 1)",
        "yaodongyu/TRADES trades.py and train_trades_cifar10.py",
        0.031,
        10,
        0.007,
        0.005,  # trades_AWP/train_trades_cifar.py: --awp-gamma 0.005, --awp-warmup 10 with epochs from 1: AWP
        9,  # is on from the 10th epoch, after 9 without
        None,  # its proxy_optim: SGD at args.lr
    ),
    "trades-gowal": Adversary(
        "wrn.train.objectives.adversarial:TRADESGowal",
        "TRADES as Gowal et al.'s PyTorch port and DM-Improves-AT train it: the attack with BN in training mode "
        "and its statistics kept, from a uniform start in the ball; two passes (clean, adversarial)",
        "imrahulr/adversarial_robustness_pytorch and wzekai99/DM-Improves-AT gowal21uncovering/utils/trades.py",
        8 / 255,  # core/utils/parser.py: --attack-eps 8/255, --attack-iter 10, --attack-step 2/255
        10,
        2 / 255,
        None,  # no AWP in their code
        0,
        None,
    ),
}


@dataclass(frozen=True)
class SemiSupervised:
    """A method of semi-supervised training (``--ssl NAME``): the objective it wraps is trained on the labelled
    batch, and its own loss on a batch of the unlabelled loader it takes (``Context.unlabelled``)."""

    target: str  # "module:Class", imported when a run builds it
    summary: str
    source: str  # the file its step was read from


SEMI_SUPERVISED: dict[str, SemiSupervised] = {
    "fixmatch": SemiSupervised(
        "wrn.train.objectives.semi_supervised:FixMatch",
        "FixMatch (Sohn et al. 2020): the objective on the labelled batch + lambda-u x the cross-entropy of each "
        "unlabelled image's strong view against its weak view's prediction, where that is at least --threshold "
        "sure, averaged over the whole unlabelled batch; one forward of the three batches",
        "google-research/fixmatch fixmatch.py and ablation/ab_fixmatch_ra.py",
    ),
}


def semi_supervised_class(name: str) -> type:
    """The class of the semi-supervised method ``name`` (a name the config has validated)."""
    module, _, attr = SEMI_SUPERVISED[name].target.partition(":")
    return getattr(importlib.import_module(module), attr)


def adversary_budget(adv: Any) -> dict[str, Any]:
    """The attack's ``eps``, ``steps`` and ``step_size`` of the config's ``adv`` section, each unset one the
    method's own (:data:`ADVERSARIES`); ``{}`` without adversarial training."""
    method = ADVERSARIES.get(adv.method)
    if method is None:
        return {}
    return {
        k: getattr(method, k) if getattr(adv, k) is None else getattr(adv, k)
        for k in ("eps", "steps", "step_size")
    }


def awp_warmup(adv: Any) -> dict[str, Any]:
    """``{"awp_warmup": N}``, the method's own warm-up of AWP where AWP is on and none is given; else ``{}``."""
    method = ADVERSARIES.get(adv.method)
    if method is None or not adv.awp or adv.awp_warmup is not None:
        return {}
    return {"awp_warmup": method.awp_warmup}


def adversary_class(name: str) -> type:
    """The class of the adversarial training method ``name`` (a name the config has validated)."""
    module, _, attr = ADVERSARIES[name].target.partition(":")
    return getattr(importlib.import_module(module), attr)


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


__all__ = [
    "ADVERSARIES",
    "Adversary",
    "Entry",
    "OBJECTIVES",
    "adversary_budget",
    "adversary_class",
    "awp_warmup",
    "objective_class",
    "objective_section",
    "SEMI_SUPERVISED",
    "SemiSupervised",
    "semi_supervised_class",
]
