"""A grid: the runs of one experiment in one folder, its identity (``experiment.yaml``), and each run's state.

Layout of ``OUT``::

    experiment.yaml                    the grid's identity: experiment, overrides, seeds, runs (atomic writes)
    <row>/seed-<s>/                    an ordinary `wrn train` run directory
    <row>/seed-<s>/.lock               held (fcntl.flock) by whoever trains that run, child process included
    configs/<row>-seed-<s>.yaml        the run's full config, overrides merged in: `wrn train --config F` runs it
    logs/<row>-seed-<s>.log            everything the run printed, all attempts appended
    logs/<row>-seed-<s>.failed.json    why the last attempt failed (removed when the run succeeds)

A grid is one experiment with one set of overrides. Figures 2 and 3 are views of Tables 5 and 6: they add
their runs to (or read them from) a grid of the table they come from, so ``wrn reproduce figure2 --out
repro/table5`` draws Figure 2 from an existing Table 5 grid, training only what is missing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from wrn.atomic import atomic_write_text
from wrn.errors import ConfigError, DataError
from wrn.reproduce.experiments import EXPERIMENTS, Experiment, Row, base_experiment, get_experiment
from wrn.train.rundir import RunDir

EXPERIMENT_FILE = "experiment.yaml"
FORMAT = "wrn-reproduce"
VERSION = 1
CONFIGS_DIR = "configs"
LOGS_DIR = "logs"
BENCH_DIR = "bench"  # Figure 4: the folder given to `wrn bench figure4 --out`
BENCH_FILE = "figure4.json"


class GridError(ConfigError):
    """An OUT folder that belongs to another grid, or a grid that cannot be set up as asked."""


# --------------------------------------------------------------------------------------------- overrides


@dataclass(frozen=True)
class Overrides:
    """The `wrn train` options given to every run of a grid, in three forms.

    ``values``: the dotted config keys they set (``wrn.cli.train.collect_overrides``), merged into each run's
    config file, so no run gets them on its command line; ``record``: as written in experiment.yaml and
    compared with it; ``argv``: as they were given (paths made absolute), for reading only.
    """

    argv: tuple[str, ...] = ()
    values: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        parts = []
        for key, value in self.record.items():
            if key == "set":
                parts += [f"--set {v}" for v in value]
            elif value is not None:
                parts.append(f"--{key.replace('_', '-')} {value}")
        return " ".join(parts) or "no overrides"


# --------------------------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class RunSpec:
    """One run of a grid: a row of the paper on one seed."""

    out: Path  # the grid folder, absolute
    row: Row
    seed: int
    # The experiment's attack once the run is trained (Experiment.attack): the `wrn eval` arguments that make
    # its record, and the record's file name in the run folder; () and "": none
    attack: tuple[str, ...] = ()
    attack_record: str = ""

    @property
    def key(self) -> str:
        return f"{self.row.name}/seed-{self.seed}"

    @property
    def dir(self) -> Path:
        return self.out / self.row.name / f"seed-{self.seed}"

    @property
    def lock_path(self) -> Path:
        return RunDir(self.dir).lock  # the lock `wrn train` itself takes on the run

    @property
    def config_path(self) -> Path:
        return self.out / CONFIGS_DIR / f"{self.row.name}-seed-{self.seed}.yaml"

    @property
    def log_path(self) -> Path:
        return self.out / LOGS_DIR / f"{self.row.name}-seed-{self.seed}.log"

    @property
    def failed_path(self) -> Path:
        return self.out / LOGS_DIR / f"{self.row.name}-seed-{self.seed}.failed.json"

    @property
    def record_path(self) -> Path | None:
        """The attack's record (``RUN/robust-ATTACK-NORM-EPS.json``), None without an attack."""
        return self.dir / self.attack_record if self.attack_record else None

    def finished(self) -> bool:
        """Trained, and attacked where the experiment asks for it (its record is there)."""
        if RunDir(self.dir).state() != "done":
            return False
        return self.record_path is None or self.record_path.is_file()


# AutoAttack on a scaled-down grid (its runs train on another data set than the row's): the first N test images,
# as `wrn eval --n N`, so that it takes seconds on a CPU; on the row's own data set every test image.
SCALED_ATTACK_IMAGES = 50


def attack_args(exp: Experiment, row: Row, cfg: Any, run_dir: Path) -> tuple[tuple[str, ...], str]:
    """The `wrn eval` arguments that attack a trained run of ``row`` (config ``cfg``) as ``exp`` asks, and the
    record's file name: L-inf at the run's training eps, the best epoch's weights (RUN/best) where the run
    kept them (adv.holdout), its last epoch's otherwise; the record in the run folder either way."""
    if not exp.attack:
        return (), ""
    from wrn.train.objectives import ADVERSARIES
    from wrn.train.robust_eval import AttackSpec

    if cfg.adv.method == "none":
        raise ConfigError(f"row {row.name} trains no adversary: {exp.name} attacks at the training eps")
    spec = AttackSpec(exp.attack, float(cfg.adv.eps or ADVERSARIES[cfg.adv.method].eps))
    record = RunDir(run_dir).robust_record(spec.attack, spec.norm, spec.eps_text()).name
    model = run_dir / "best" if cfg.adv.holdout else run_dir
    args = ["eval", str(model), "--attack", spec.attack, "--eps", repr(spec.eps), "--norm", spec.norm]
    if cfg.dataset.name != row.dataset:
        args += ["--n", str(SCALED_ATTACK_IMAGES)]
    args += ["--out", str(run_dir / record), "--no-progress"]
    return tuple(args), record


def last_log_line(path: Path) -> str:
    """The last non-empty line of a run's log (its error message when it failed)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in tail.replace("\r", "\n").split("\n") if ln.strip()]
    return lines[-1] if lines else ""


# --------------------------------------------------------------------------------------------- the plan


@dataclass
class Plan:
    """What a `wrn reproduce` command asks for, validated, before anything is written."""

    experiment: Experiment  # what was asked for (figure2, table4, ...)
    base: Experiment  # the grid's experiment (table5 for figure2)
    out: Path
    seeds: list[int]
    overrides: Overrides
    runs: list[RunSpec]  # every run of what was asked for
    todo: list[RunSpec]  # the runs this command may train (--rows)
    configs: dict[str, str]  # run key -> the YAML text of its config file (``resolved`` written out)
    resolved: dict[str, Any]  # run key -> TrainConfig (defaults and overrides applied)
    scaled: list[str]  # "key=value" of every recipe value the overrides change; empty: the paper's recipe
    datasets: dict[str, str]  # data set -> root it is read from, for the runs of this command
    attack: dict[str, Any] = field(
        default_factory=dict
    )  # the experiment's attack as experiment.yaml keeps it


def _base_root(base: str) -> tuple[str, str | None]:
    """The data root a shipped recipe reads from and its file of generated images (``--aux-data``; None:
    none), made absolute (runs may start in other folders; a relative file is the current folder's, as for
    ``wrn train``)."""
    from wrn.train.compose import build_config

    data = build_config(base).dataset
    aux = str(Path(data.aux_data).expanduser().absolute()) if data.aux_data else None
    return str(Path(data.root).expanduser().absolute()), aux


def _run_config(exp: Experiment, row: Row, seed: int, root: tuple[str, str | None]) -> dict[str, Any]:
    """A run's own layer: the shared recipe (extends) plus the row's model and data (its config file is this
    with the grid's overrides merged in)."""
    paper = f"{row.paper_error}%" if row.paper_error is not None else "no figure"
    desc = f"{exp.title}, {row.label}, {row.dataset} (paper: {paper}), seed {seed}"
    data = row.config(seed, description=desc)
    data["dataset"]["root"] = root[0]
    if root[1] is not None:
        data["dataset"]["aux_data"] = root[1]
    return data


def _config_text(exp: Experiment, row: Row, seed: int, cfg: Any) -> str:
    """The run's config file: its whole config (``cfg``, a TrainConfig), what `wrn train --config` reads."""
    from wrn.train.compose import dump_yaml

    head = (
        f"# Written by `wrn reproduce {exp.name}`: row {row.name}, seed {seed}. The shared recipe, the row's\n"
        "# model and data, and the grid's overrides, merged: the run trains exactly this.\n"
    )
    return head + dump_yaml(cfg)


def fit_to_images(row: Row, cfg: Any, given: dict[str, Any]) -> dict[str, Any]:
    """The recipe's settings in pixels moved to the side of the images a run trains on, as dotted keys (and
    adv.holdout and a labelled split to a run's own data set: :func:`scaled_holdout`, :func:`scaled_split`): a
    Cutout hole keeps its share of the side (16 of 32 becomes 4 of 8; a 16 px hole covers the 8x8 digits and
    the runs train at chance). Values the grid's overrides ``given`` set are kept as they are, and nothing
    changes where the side is the recipe's or not known.

    The per-image policies are kept: measured on the digits (docs/reproduce.md, *Scaling down*), each of the
    recipes' three trains as well on 8x8 images as without a policy, so a scaled grid runs the recipe's code.
    The crop's padding needs nothing: a data set of another side brings its own augmentation, and the
    digits' has no crop. Generated images of the row's data set do not fit another's: a run on another data
    set trains without them unless the overrides name a file (``--set dataset.aux_data=FILE``)."""
    from wrn.data.registry import dataset_info

    out: dict[str, Any] = {}
    if cfg.dataset.aux_data and "dataset.aux_data" not in given and cfg.dataset.name != row.dataset:
        out["dataset.aux_data"] = None
    held = cfg.adv.holdout
    if held and "adv.holdout" not in given and cfg.dataset.name != row.dataset:
        out["adv.holdout"] = scaled_holdout(held, row.dataset, cfg.dataset.name, cfg.adv.holdout_rule)
    if cfg.ssl.labels is not None and cfg.dataset.name != row.dataset:
        out.update({k: v for k, v in scaled_split(cfg, row.dataset).items() if k not in given})
    recipe = dataset_info(row.dataset).image_size
    side = cfg.dataset.image_size or dataset_info(cfg.dataset.name).image_size
    hole = cfg.dataset.cutout
    if not hole or "dataset.cutout" in given or not recipe or not side or side == recipe:
        return out
    return {**out, "dataset.cutout": max(1, round(hole * side / recipe))}


def scaled_split(cfg: Any, recipe_data: str) -> dict[str, int]:
    """A labelled split (ssl.labels) and its epochs (ssl.epoch_steps) on a run's own data set: the recipe's
    labels per class for each of its classes, at most half its training images (4000 of CIFAR-10 become 710
    of the digits), and epochs of the recipe's share of the training set (1024 steps of 64 are 1.3 passes over
    CIFAR's 50,000 images: 29 steps on the digits' 1,437)."""
    from wrn.data.registry import DATASETS

    recipe, here = DATASETS.get(recipe_data), DATASETS.get(cfg.dataset.name)
    if not (
        recipe and here and recipe.num_classes and here.num_classes and recipe.train_size and here.train_size
    ):
        return {}
    per_class = max(1, cfg.ssl.labels // recipe.num_classes)
    per_class = min(per_class, max(1, here.train_size // 2 // here.num_classes))
    steps = max(1, round(cfg.ssl.epoch_steps * here.train_size / recipe.train_size))
    return {"ssl.labels": per_class * here.num_classes, "ssl.epoch_steps": steps}


def scaled_holdout(held: int, recipe_data: str, data: str, rule: str = "rice") -> int:
    """The held-out images (adv.holdout) of a run on another data set: the recipe's share of its training images
    (1,000 of CIFAR's 50,000 is 2%), but at least 100, so that the best epoch is picked on more than a handful
    of images (100 of the digits' 1,437), and never more than the recipe's; with rule ``awp`` (the best epoch
    picked on the first test images) the share of the test images (AT-AWP's 10,000 of 10,000: all 360 of the
    digits')."""
    from wrn.data.registry import DATASETS

    size = "test_size" if rule == "awp" else "train_size"
    recipe_n = getattr(DATASETS[recipe_data], size) if recipe_data in DATASETS else 0
    n = getattr(DATASETS[data], size) if data in DATASETS else 0
    if not recipe_n or not n:
        return held
    return min(held, max(100, round(held * n / recipe_n)))


def _scaling(plain: dict[str, Any], scaled: dict[str, Any]) -> list[str]:
    """The settings in which a grid's run differs from its row's recipe, as ``key=value``, except those that
    say how or where it trains (the fields marked ``how``)."""
    from wrn.train.compose import flatten
    from wrn.train.options import keys

    a, b = flatten(plain), flatten(scaled)
    how = set(keys("how"))
    changed = []
    for key in sorted(set(a) | set(b)):
        if key in how:
            continue
        # None: the data set's own default, but for the generated images, where it is none
        if a.get(key) != b.get(key) and (b.get(key) is not None or key == "dataset.aux_data"):
            changed.append(f"{key}={b.get(key)}")
    return changed


def select_rows(exp: Experiment, patterns: list[str] | None) -> list[Row]:
    """The rows of ``exp`` named by ``--rows`` (names or shell patterns), all of them without it."""
    import fnmatch

    rows = list(exp.runnable_rows)
    if not patterns:
        return rows
    chosen = []
    for pattern in patterns:
        hits = [r for r in rows if fnmatch.fnmatchcase(r.name, pattern)]
        if not hits:
            raise ConfigError(
                f"--rows {pattern!r} names no row of {exp.name}; its rows are {', '.join(r.name for r in rows)}"
            )
        chosen += [r for r in hits if r not in chosen]
    return [r for r in rows if r in chosen]


def make_plan(
    name: str,
    out: str | os.PathLike,
    runs: int,
    overrides: Overrides,
    rows: list[str] | None = None,
) -> Plan:
    """Expand an experiment into its runs and validate every run's config; writes nothing."""
    from wrn.train.compose import build_config

    exp = get_experiment(name)
    out_path = Path(out).expanduser().absolute()
    if exp.kind == "bench":  # Figure 4: one benchmark, no training runs
        return Plan(exp, exp, out_path, [], overrides, [], [], {}, {}, [], {})
    if not isinstance(runs, int) or runs < 1:
        raise ConfigError(f"--runs {runs} is not a positive number of seeds; the paper uses 5")
    if any(str(item).split("=", 1)[0].strip() == "run.seed" for item in overrides.record.get("set", [])):
        raise ConfigError("--set run.seed cannot be used: each run's seed comes from --runs (seeds 0 .. N-1)")
    base = base_experiment(exp)
    seeds = list(range(runs))
    wanted = select_rows(exp, rows)
    specs = [RunSpec(out_path, row, seed) for row in exp.runnable_rows for seed in seeds]

    configs: dict[str, str] = {}
    resolved: dict[str, Any] = {}
    scaled: list[str] = []
    datasets: dict[str, str] = {}
    root_cache: dict[str, tuple[str, str | None]] = {}
    for i, spec in enumerate(specs):
        row = spec.row
        if row.base not in root_cache:
            root_cache[row.base] = _base_root(row.base)
        data = _run_config(base, row, spec.seed, root_cache[row.base])
        cfg = build_config(None, data, dict(overrides.values))
        fitted = fit_to_images(row, cfg, overrides.values)
        if fitted:
            cfg = build_config(None, data, {**fitted, **overrides.values})
        configs[spec.key] = _config_text(base, row, spec.seed, cfg)
        resolved[spec.key] = cfg
        if spec.seed == seeds[0]:
            plain = build_config(None, data).to_dict()
            scaled += [item for item in _scaling(plain, cfg.to_dict()) if item not in scaled]
        if base.attack:
            args, record = attack_args(base, row, cfg, spec.dir)
            specs[i] = replace(spec, attack=args, attack_record=record)
        if row in wanted:
            datasets.setdefault(cfg.dataset.name, cfg.dataset.root)
    todo = [s for s in specs if s.row in wanted]
    attack: dict[str, Any] = {}
    if base.attack:
        attack = {"attack": base.attack, "norm": "linf", "eps": "training eps"}
        if any("--n" in s.attack for s in specs):
            attack["n"] = SCALED_ATTACK_IMAGES
    return Plan(
        exp, base, out_path, seeds, overrides, specs, todo, configs, resolved, scaled, datasets, attack
    )


# --------------------------------------------------------------------------------------------- data


def check_data(datasets: dict[str, str], download: bool) -> None:
    """Every data set the runs read is present (or fetched now, once, with ``download``)."""
    import warnings

    for name, root in datasets.items():
        if name == "digits":
            continue
        if name in ("imagenet", "imagefolder"):
            missing = [s for s in ("train", "val") if not (Path(root) / s).is_dir()]
            if missing:
                what = "ImageNet" if name == "imagenet" else "the image folder"
                raise DataError(
                    f"{what} is missing: {Path(root) / missing[0]} does not exist; put the images in "
                    f"{root}/train/<class>/ and {root}/val/<class>/ (or give --data-dir)"
                )
            continue
        from wrn.data import ensure_files

        if download:
            Path(root).mkdir(parents=True, exist_ok=True)
            ensure_files(name, root, download=True, verify=True)
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ensure_files(name, root, download=False, verify=False)
        except DataError:
            raise DataError(
                f"the {name} data set is not under {root}; fetch it with 'wrn data download {name} --root {root}' "
                "(or add --download), or point --data-dir at it"
            ) from None


def check_generated(plan: Plan) -> None:
    """Every file of generated images (``dataset.aux_data``) that a run still to train reads is there, before
    any run starts (a run trained already, waiting for its attack, reads none): one sentence naming the row,
    the file and where to get it, otherwise."""
    from wrn.data.generated import GENERATED_SOURCE

    for spec in plan.todo:
        data = plan.resolved[spec.key].dataset
        if data.aux_data is None or Path(data.aux_data).is_file() or RunDir(spec.dir).state() == "done":
            continue
        raise DataError(
            f"row {spec.row.name} trains on generated images and {data.aux_data} does not exist; download "
            f"DM-Improves-AT's file there ({GENERATED_SOURCE}/{data.name}/1m.npz), or give another with --set "
            f"dataset.aux_data=FILE --rows {spec.row.name} (--set applies to every row), or leave the row out "
            "with --rows"
        )


# --------------------------------------------------------------------------------------------- experiment.yaml


def read_experiment(out: Path) -> dict[str, Any] | None:
    path = out / EXPERIMENT_FILE
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise GridError(f"{path} is not an experiment file of wrn reproduce; choose another --out")
    return data


def check_out(plan: Plan) -> dict[str, Any] | None:
    """Refuse an OUT that holds another grid (or other files); return its experiment.yaml if it is ours."""
    from wrn.paths import check_output_dir

    out = check_output_dir(plan.out, "--out")  # a file, a name too long, a read-only or unwritable place
    existing = read_experiment(out) if out.is_dir() else None
    if existing is None:
        if out.is_dir() and any(out.iterdir()):
            raise GridError(
                f"--out {out} is not empty and holds no {EXPERIMENT_FILE}; give an empty or new folder for the grid"
            )
        return None
    if existing.get("experiment") != plan.base.name:
        theirs = existing.get("experiment")
        via = f" (which {plan.experiment.name} is drawn from)" if plan.experiment is not plan.base else ""
        raise GridError(
            f"--out {out} holds the grid of {theirs}, not of {plan.base.name}{via}; choose another --out"
        )
    if (existing.get("overrides") or {}) != plan.overrides.record:
        theirs = Overrides(record=existing.get("overrides") or {}).describe()
        raise GridError(
            f"--out {out} holds a {plan.base.name} grid run with {theirs}, not {plan.overrides.describe()}: "
            "run it with the same options or choose another --out"
        )
    return existing


def write_experiment(plan: Plan, existing: dict[str, Any] | None) -> dict[str, Any]:
    """Create or extend OUT/experiment.yaml (atomically): more seeds or another view of the same grid."""
    from wrn import __version__

    requested = list((existing or {}).get("requested") or [])
    if plan.experiment.name not in requested:
        requested.append(plan.experiment.name)
    seeds = sorted(set((existing or {}).get("seeds") or []) | set(plan.seeds))
    known = {(r["row"], int(r["seed"])) for r in (existing or {}).get("runs") or []}
    known |= {(s.row.name, s.seed) for s in plan.runs}
    order = {r.name: i for i, r in enumerate(plan.base.rows)}
    runs = sorted(known, key=lambda rs: (order.get(rs[0], len(order)), rs[1]))
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    data = {
        "format": FORMAT,
        "version": VERSION,
        "experiment": plan.base.name,
        "requested": requested,
        "title": plan.base.title,
        "scaled": bool(plan.scaled),
        "scaled_by": list(plan.scaled),
        "overrides": plan.overrides.record,
        **({"attack": plan.attack} if plan.attack else {}),
        "seeds": seeds,
        "runs": [{"row": row, "seed": seed, "dir": f"{row}/seed-{seed}"} for row, seed in runs],
        "created": (existing or {}).get("created", now),
        "updated": now,
        "wrn_version": __version__,
    }
    if existing is not None:
        same = {k: v for k, v in existing.items() if k != "updated"}
        if same == {k: v for k, v in data.items() if k != "updated"}:
            return existing  # a re-run of the same command leaves the folder as it is
    plan.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(plan.out / EXPERIMENT_FILE, yaml.safe_dump(data, sort_keys=False))
    return data


def write_config(plan: Plan, spec: RunSpec) -> None:
    """The run's config file (atomically; left as it is if it already says the same)."""
    text = plan.configs[spec.key]
    path = spec.config_path
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def write_failure(spec: RunSpec, returncode: int | None, attempts: int) -> str:
    line = last_log_line(spec.log_path)
    record = {
        "run": spec.key,
        "returncode": returncode,
        "attempts": attempts,
        "last_line": line,
        "log": str(spec.log_path),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    spec.failed_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(spec.failed_path, json.dumps(record, indent=2) + "\n")
    return line


def clear_failure(spec: RunSpec) -> None:
    spec.failed_path.unlink(missing_ok=True)


def grid_specs(out: Path, data: dict[str, Any]) -> list[RunSpec]:
    """The runs an experiment.yaml lists (rows the package no longer knows are skipped)."""
    exp = EXPERIMENTS.get(str(data.get("experiment")))
    if exp is None:
        return []
    rows = {r.name: r for r in exp.rows}
    for view in EXPERIMENTS.values():
        if view.view_of == exp.name:
            rows.update({r.name: r for r in view.rows})
    specs = []
    for item in data.get("runs") or []:
        row = rows.get(str(item.get("row")))
        if row is not None:
            specs.append(RunSpec(out, row, int(item.get("seed", 0))))
    return specs
