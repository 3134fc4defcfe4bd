"""What the report says, collected once: the runs of each grid, their status, aggregates and settings.

Everything is read from the run directories (``metrics.jsonl``, ``config.yaml``, the grid's failure records)
and turned into plain dataclasses: :class:`Table` (typed columns, formatted cells and a structured
:class:`Status` per row), :class:`Section` and :class:`Report`. The figures (:mod:`wrn.reproduce.figures`) and
both renderings (:mod:`wrn.reproduce.render`, Markdown and HTML from the same :class:`Report`) read these
objects; neither looks for a column by its header nor parses a cell back.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wrn.errors import ConfigError
from wrn.reproduce import grid as G
from wrn.reproduce.experiments import DATASET_TITLES, Row
from wrn.train.rundir import RunDir, lock_is_held

DASH = "–"  # en dash for ranges
NONE = "—"  # em dash for "no value"
STATES = ("done", "running", "stopped", "failed", "missing")


class ReportError(ConfigError):
    """Nothing to report, or a folder that is not a grid."""


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# --------------------------------------------------------------------------------------------- content


@dataclass(frozen=True)
class Going:
    """A run part-way through: where it is and its last test error."""

    seed: int
    epoch: int | None
    of: int | None
    error: float | None

    @property
    def text(self) -> str:
        of = f"/{self.of}" if self.of else ""
        at = f" {self.error:.2f}%" if self.error is not None else ""
        return f"seed {self.seed} at epoch {self.epoch}{of}:{at}"


@dataclass(frozen=True)
class Status:
    """How many of a row's runs are done, running, stopped, failed or missing (of ``total``)."""

    done: int = 0
    running: int = 0
    stopped: int = 0
    failed: int = 0
    missing: int = 0
    going: tuple[Going, ...] = ()
    reference: bool = False  # a line of the paper that wrn does not build

    @property
    def total(self) -> int:
        return self.done + self.running + self.stopped + self.failed + self.missing

    def parts(self) -> list[tuple[str, str]]:
        """(kind, text) pieces, in a fixed order: the done count of the total first, then the others."""
        if self.reference:
            return [("reference", "not built by wrn")]
        out = [("done" if self.done else "missing", f"{self.done} of {self.total} done")]
        out += [(k, f"{getattr(self, k)} {k}") for k in STATES[1:] if getattr(self, k)]
        out += [("running", g.text) for g in self.going]
        return out

    @property
    def text(self) -> str:
        return ", ".join(text for _, text in self.parts())


@dataclass(frozen=True)
class Column:
    title: str
    align: str = "r"  # "l" or "r"
    nowrap: bool = False  # names that must not break ("WRN-40-4")


@dataclass
class TableRow:
    cells: list[str]
    status: Status | None = None


@dataclass
class Table:
    columns: list[Column]
    rows: list[TableRow] = field(default_factory=list)
    caption: str = ""
    status_title: str | None = None  # the title of the status column; None: the table has none


@dataclass
class Figure:
    caption: str
    path: Path


@dataclass(frozen=True)
class Difference:
    """One setting the runs changed from the paper's: its name and each (paper, ours) pair of values."""

    name: str
    changes: tuple[tuple[str | None, str], ...]  # (None, value): the paper's value is not known here

    @property
    def text(self) -> str:
        return f"{self.name} " + ", ".join(b if a is None else f"{a} → {b}" for a, b in self.changes)


@dataclass
class Scaled:
    """Why a grid is not the paper's setting: every difference, and where it was read."""

    differences: list[Difference]
    source: str  # "the runs' config.yaml" or "the grid's overrides (no run has started yet)"

    @property
    def summary(self) -> str:
        return ", ".join(d.text for d in self.differences) or "settings unknown"

    @property
    def sentence(self) -> str:
        return (
            f"These runs differ from the paper's setting in: {self.summary} (from {self.source}). "
            "Their errors are not comparable to the paper's, so no difference to it is shown; the paper's "
            "figures are there for orientation only."
        )


@dataclass
class Section:
    """One part of the report: a table of the paper with our figures, or a figure of the paper."""

    title: str
    intro: list[str]
    source: Path
    scaled: Scaled | None = None
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # figures that are not to be trusted, and why
    order: tuple = (0,)  # the paper's order: tables by number, each figure after the table it is drawn from
    where: str = ""  # the grid's folder, where two grids of one experiment would give the same heading

    @property
    def heading(self) -> str:
        return (
            self.title
            + (f" in {self.where}" if self.where else "")
            + (" — scaled down" if self.scaled else "")
        )


@dataclass
class Report:
    title: str
    intro: str
    sections: list[Section]


# --------------------------------------------------------------------------------------------- runs


@dataclass
class RunInfo:
    spec: G.RunSpec
    status: str  # one of STATES
    records: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    failure: dict | None = None
    attack: dict | None = None  # the record of `wrn eval --attack` in the run folder, where there is one

    def attack_acc(self, key: str) -> float | None:
        """``clean_acc`` or ``autoattack_acc`` (percent) of the attack's record, as RobustBench writes them."""
        value = (self.attack or {}).get(key)
        try:
            return float(value)
        except (TypeError, ValueError):
            return None

    @property
    def last(self) -> dict:
        return self.records[-1] if self.records else {}

    @property
    def planned_epochs(self) -> int | None:
        value = (self.config.get("schedule") or {}).get("epochs")
        return int(value) if is_number(value) else None

    def value(self, key: str) -> float | None:
        v = self.last.get(key)
        return float(v) if is_number(v) else None

    @property
    def train_time_per_epoch(self) -> float | None:
        times = [float(r["train_time"]) for r in self.records if is_number(r.get("train_time"))]
        return sum(times) / len(times) if times else None

    @property
    def total_time(self) -> float | None:
        times = [
            float(r.get("train_time") or 0) + float(r.get("test_time") or 0)
            for r in self.records
            if is_number(r.get("train_time"))
        ]
        return sum(times) if times else None

    @property
    def precision(self) -> str | None:
        value = self.last.get("train_precision")
        if isinstance(value, str):
            return value
        amp = (self.config.get("run") or {}).get("amp")
        return {"off": "fp32", "bf16": "bf16", "fp16": "fp16"}.get(amp) if isinstance(amp, str) else None


def read_run(spec: G.RunSpec) -> RunInfo:
    from wrn.train.logging import read_metrics

    state = RunDir(spec.dir).state()
    records: list[dict] = []
    if RunDir(spec.dir).metrics.is_file():
        try:
            records = read_metrics(spec.dir)
        except ConfigError:
            records = []
    try:
        config = RunDir(spec.dir).read_config().to_dict()
    except ConfigError:  # not written yet, or not readable: the run shows without its settings
        config = {}
    failure = None
    if spec.failed_path.is_file():
        try:
            failure = json.loads(spec.failed_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            failure = {"last_line": "(unreadable failure record)"}
    if state == "done":
        status = "done"
    elif lock_is_held(spec.lock_path):
        status = "running"
    elif failure is not None:
        status = "failed"
    elif state in ("partial", "unstarted"):
        status = "stopped"
    else:
        status = "missing"
    return RunInfo(spec, status, records, config, failure, read_attack(spec))


def read_attack(spec: G.RunSpec) -> dict | None:
    """The run's AutoAttack record (``RUN/robust-autoattack-*.json``), None where it has none (yet)."""
    for path in sorted(spec.dir.glob("robust-autoattack-*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return data
    return None


_PARAMS: dict[tuple, int | None] = {}


def count_params(model: str | None, dataset: str | None) -> int | None:
    """Trainable parameters of ``model`` built for ``dataset`` (its classes and channels), on the meta device."""
    if not model or not dataset:
        return None
    key = (model, dataset)
    if key not in _PARAMS:
        try:
            import torch

            from wrn.data.registry import DATASETS
            from wrn.models.complexity import count_parameters
            from wrn.models.registry import create_model

            info = DATASETS.get(dataset)
            if info is None or info.num_classes is None:  # an image folder: classes known only from its files
                _PARAMS[key] = None
                return None
            extra = {"in_channels": info.in_channels} if info.in_channels != 3 else {}
            with torch.device("meta"):
                net = create_model(model, num_classes=info.num_classes, **extra)
            _PARAMS[key] = count_parameters(net)
        except Exception:  # a model this version cannot build: no count rather than no report
            _PARAMS[key] = None
    return _PARAMS[key]


# --------------------------------------------------------------------------------------------- rows


@dataclass
class RowResult:
    """One row of a paper table and its runs: the figures of the table are computed here."""

    row: Row
    runs: list[RunInfo]
    overrides: dict = field(default_factory=dict)  # the grid's, from experiment.yaml

    @property
    def done(self) -> list[RunInfo]:
        return [r for r in self.runs if r.status == "done" and r.value(self.error_key) is not None]

    @property
    def error_key(self) -> str:
        """The figure of a run its paper reports: the last epoch's test error, or on a labelled split (FixMatch's
        Table 2) the median of the last 20 epochs' (``median20_test_error``)."""
        return "median20_test_error" if self.row.folds else "test_error"

    @property
    def errors(self) -> list[float]:
        return [r.value(self.error_key) for r in self.done]

    @property
    def top5(self) -> list[float]:
        """Top-5 test errors of the finished runs (metrics hold them for data sets of more than 10 classes)."""
        out = []
        for r in self.done:
            err = r.value("test_top5_error")
            if err is None and r.value("test_top5") is not None:  # the top-5 accuracy only
                err = 100.0 - r.value("test_top5")
            if err is not None:
                out.append(err)
        return out

    @property
    def median(self) -> float | None:
        return median(self.errors)

    def _trained(self, section: str, override: str | None) -> str | None:
        """What the runs trained (their config.yaml), else what the grid's overrides make of the row."""
        for r in self.runs:
            name = (r.config.get(section) or {}).get("name")
            if name:
                return str(name)
        return override

    @property
    def trained_model(self) -> str | None:
        override = self.row.model
        for item in self.overrides.get("set") or []:
            key, _, value = str(item).partition("=")
            if key.strip() == "model.name":
                override = value.strip()
        return self._trained("model", override)

    @property
    def trained_dataset(self) -> str | None:
        return self._trained("dataset", self.overrides.get("dataset") or self.row.dataset)

    @property
    def dataset_title(self) -> str:
        trained = self.trained_dataset or self.row.dataset
        return DATASET_TITLES.get(trained, trained)

    @property
    def dataset_label(self) -> str:
        """The data set the runs trained on, after the paper's where a scaled grid changed it: "CIFAR-100 →
        digits", so that the rows of two data sets scaled to one stay apart."""
        paper = DATASET_TITLES.get(self.row.dataset, self.row.dataset)
        trained = self.dataset_title
        return paper if trained == paper else f"{paper} → {trained}"

    @property
    def params(self) -> int | None:
        return count_params(self.trained_model, self.trained_dataset)

    @property
    def time_per_epoch(self) -> float | None:
        return median([t for t in (r.train_time_per_epoch for r in self.runs) if t is not None])

    @property
    def total_time(self) -> float | None:
        return median([t for t in (r.total_time for r in self.done) if t is not None])

    @property
    def precisions(self) -> list[str]:
        out: list[str] = []
        for r in self.runs:
            p = r.precision
            if p and p not in out and r.records:
                out.append(p)
        return out

    @property
    def status(self) -> Status:
        if self.row.model is None:
            return Status(reference=True)
        counts = {s: sum(1 for r in self.runs if r.status == s) for s in STATES}
        going = tuple(
            Going(r.spec.seed, r.last.get("epoch"), r.planned_epochs, r.value("test_error"))
            for r in self.runs
            if r.status in ("running", "stopped") and r.records
        )
        return Status(**counts, going=going)


# --------------------------------------------------------------------------------------------- settings

# What a reader calls each setting of a run's config.yaml that makes a result the paper's or not. The run's
# machine settings (device, precision, threads, checkpoints) and its bookkeeping are not the paper's setting.
SETTING_NAMES = {
    "dataset.name": "data set",
    "dataset.normalization": "normalization",
    "dataset.augment": "augmentation",
    "dataset.image_size": "image size",
    "dataset.crop_padding": "crop padding",
    "dataset.policy": "augmentation policy",
    "dataset.randaugment_n": "RandAugment N",
    "dataset.randaugment_m": "RandAugment M",
    "dataset.random_erasing": "random erasing",
    "dataset.cutout": "Cutout (px)",
    "dataset.cutout_per": "Cutout's holes placed per",
    "dataset.mixup": "mixup alpha",
    "dataset.cutmix": "CutMix alpha",
    "dataset.aux_data": "generated images",
    "dataset.aux_fraction": "generated share of a batch",
    "model.name": "model",
    "model.dropout": "dropout",
    "model.act": "activation",
    "model.bn_momentum": "batch-norm momentum",
    "model.bn_momentum_first": "batch-norm momentum of the first step",
    "model.init": "initialisation",
    "optim.lr": "learning rate",
    "optim.momentum": "momentum",
    "optim.nesterov": "Nesterov momentum",
    "optim.weight_decay": "weight decay",
    "optim.batch_size": "batch size",
    "optim.label_smoothing": "label smoothing",
    "optim.sam_rho": "SAM rho",
    "optim.replica_batch": "images per replica (m)",
    "optim.grad_clip": "gradient clipping",
    "optim.decay_norm_and_bias": "weight decay on BN and bias",
    "optim.decay_bias": "weight decay on biases",
    "optim.ema_decay": "EMA decay",
    "optim.ema_warmup": "EMA warm-up",
    "optim.ema_warmup_rule": "EMA warm-up rule",
    "schedule.name": "schedule",
    "schedule.epochs": "epochs",
    "schedule.milestones": "lr drops at epochs",
    "schedule.gamma": "lr drop factor",
    "schedule.warmup_epochs": "warm-up epochs",
    "schedule.reset_momentum": "momentum reset at lr drops",
    "adv.holdout": "held-out images for early stopping",
    "adv.holdout_rule": "early stopping's rule",
    "adv.eps": "attack eps",
    "adv.steps": "attack steps",
    "adv.step_size": "attack step",
}
_NOT_SETTINGS = (
    "run.",
    "provenance.",
    "description",
    "preset",
    "extends",
    "dataset.root",
    "dataset.workers",
    "dataset.download",
    "dataset.verify",
    "optim.eval_batch_size",
    "logging.",
    "ssl.fold",
)  # fmt: skip  (the fold is a run's seed, as run.seed)


def setting_text(value: Any) -> str:
    """A config value as a reader writes it: lists without brackets, booleans as on/off."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ", ".join(setting_text(v) for v in value) if value else "none"
    if value is None:
        return NONE
    return DATASET_TITLES.get(value, str(value)) if isinstance(value, str) else f"{value:g}"


_PAPER: dict[str, dict] = {}


def paper_setting(row: Row) -> dict:
    """The flattened, resolved config of a run of ``row`` as the paper trained it (no override)."""
    if row.name not in _PAPER:
        from wrn.train.compose import build_config, flatten
        from wrn.train.resolve import resolve

        cfg = resolve(build_config(None, row.config(0)), cuda_available=False)
        _PAPER[row.name] = flatten(cfg.to_dict())
    return _PAPER[row.name]


def _same(key: str, theirs: Any, mine: Any) -> bool:
    """Whether a run's setting is its recipe's: for the file of generated images, whether the run's path ends
    with the recipe's (a grid makes the recipe's relative path absolute: edm_data/cifar10/1m.npz under the folder
    it starts in, never CIFAR-100's 1m.npz)."""
    if key == "dataset.aux_data" and theirs and mine:
        recipe = Path(str(theirs)).parts
        return Path(str(mine)).parts[-len(recipe) :] == recipe
    return theirs == mine


def differences(results: list[RowResult]) -> list[Difference]:
    """Every setting in which a run's own config.yaml differs from its row's paper setting, merged over runs."""
    from wrn.train.compose import flatten

    changes: dict[str, list[tuple[str, str]]] = {}
    for res in results:
        if res.row.model is None:
            continue
        paper = paper_setting(res.row)
        for run in res.runs:
            if not run.config:
                continue
            ours = flatten(run.config)
            for key in paper.keys() | ours.keys():
                if key.startswith(_NOT_SETTINGS) or key not in ours:
                    continue
                theirs, mine = paper.get(key), ours[key]
                if _same(key, theirs, mine):
                    continue
                pair = (setting_text(theirs), setting_text(mine))
                if pair not in changes.setdefault(key, []):
                    changes[key].append(pair)
    order = list(SETTING_NAMES)
    keys = sorted(changes, key=lambda k: (order.index(k) if k in order else len(order), k))
    return [Difference(SETTING_NAMES.get(k, k), tuple(changes[k])) for k in keys]


def scaled_of(data: dict, results: list[RowResult]) -> Scaled | None:
    """How the grid differs from the paper: from its runs' config.yaml, else (no run yet) its overrides."""
    found = differences(results)
    if found:
        return Scaled(found, "the runs' own config.yaml")
    if not data.get("scaled"):
        return None
    asked = []
    for item in data.get("scaled_by") or []:
        key, _, value = str(item).partition("=")
        try:
            shown = setting_text(yaml.safe_load(value))
        except yaml.YAMLError:
            shown = value.strip()
        asked.append(Difference(SETTING_NAMES.get(key.strip(), key.strip()), ((None, shown),)))
    return Scaled(asked, "the grid's overrides: no run has written its config.yaml yet")
