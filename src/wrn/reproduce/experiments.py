"""The paper's experiments as data: which runs each table and figure needs, and the paper's numbers.

Every number here is the paper's, as its tables print them (test error in percent, CIFAR
and SVHN medians of 5 runs; ImageNet single-crop top-1 / top-5; Table 9: best single runs). A :class:`Row` is
one line of a paper table on one data set; it expands into one ``wrn train`` run per seed. Its name is the
folder of its runs (``OUT/<row>/seed-<s>``) and follows the preset names (``<dataset>-<model>[-dropout][-zca]``).

This module imports nothing heavy: ``wrn reproduce list`` and ``wrn --help`` stay fast.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import NamedTuple

from wrn.data.registry import DATASETS
from wrn.errors import ConfigError
from wrn.models.table import shipped_rows

# Dropout rates of the paper (docs/models.md): 0.3 on CIFAR, 0.4 on SVHN.
CIFAR_DROPOUT = 0.3
SVHN_DROPOUT = 0.4

# How each data set's rows are built: the shared recipe a run config extends (src/wrn/train/presets).
BASES = {"cifar10": "_cifar", "cifar100": "_cifar", "svhn": "_svhn", "imagenet": "imagenet-wrn-50-2"}


@functools.cache
def recipe_epochs(dataset: str) -> int:
    """Epochs of the paper's recipe for ``dataset``: those of its shared preset (docs/training.md)."""
    from wrn.train.compose import build_config

    return build_config(BASES[dataset]).schedule.epochs


DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN", "imagenet": "ImageNet"}


@dataclass(frozen=True)
class Row:
    """One line of a paper table on one data set."""

    name: str  # folder of its runs, e.g. "cifar10-wrn-40-4-zca"
    label: str  # as the paper writes it, e.g. "WRN-40-4" or "B(1,3,1), d=40"
    model: str | None  # a name of `wrn models`; None: a reference line the package does not build
    dataset: str  # cifar10, cifar100, svhn or imagenet
    paper_error: float | None  # test error %, top-1 for ImageNet; None where the paper has no figure
    paper_params: float | None = None  # millions, as the paper prints them
    dropout: float | None = None
    normalization: str | None = None  # "zca" for Tables 2-4, else the data set's own
    paper_top5: float | None = None  # ImageNet only
    paper_time: float | None = None  # Table 2: seconds per training epoch on the authors' GPU
    note: str = ""
    # Rows of today's recipes: the shipped preset a run extends (its model, data and recipe), and dotted config
    # keys set on top, e.g. (("optim.sam_rho", 0.0),) for the SGD twin of a SAM row. None: the paper's recipe
    # of the data set (BASES).
    preset: str | None = None
    settings: tuple[tuple[str, object], ...] = ()
    # Rows of an experiment with an attack (``Experiment.attack``): the reference's clean and robust accuracy
    # in percent (paper_error is then 100 - paper_clean), and the file they are read from.
    paper_clean: float | None = None
    paper_robust: float | None = None
    paper_file: str = ""
    # Rows whose paper gives mean ± std over folds of a labelled split (FixMatch's Table 2): the std, and the
    # seeds run the folds (seed s trains fold s + 1, their folds 1..5)
    paper_std: float | None = None
    folds: bool = False

    @property
    def base(self) -> str:
        return self.preset or BASES[self.dataset]

    def config(self, seed: int, description: str = "") -> dict:
        """The small config a run of this row starts from: the shared recipe plus model, data and seed."""
        if self.model is None:
            raise ConfigError(
                f"row {self.name!r} is a reference line of the paper; wrn does not build its model"
            )
        model: dict = {"name": self.model}
        if self.dropout is not None:
            model["dropout"] = self.dropout
        dataset: dict = {"name": self.dataset}
        if self.normalization is not None:
            dataset["normalization"] = self.normalization
        out: dict = {"extends": self.base}
        if description:
            out["description"] = description
        out.update({"model": model, "dataset": dataset, "run": {"seed": int(seed)}})
        if self.folds:
            out["ssl"] = {"fold": int(seed) + 1}
        for key, value in self.settings:
            section, name = key.split(".")
            out.setdefault(section, {})[name] = value
        return out


@dataclass(frozen=True)
class Experiment:
    name: str  # table2 ... figure4
    title: str  # "Table 4", "Figure 2"
    description: str
    rows: tuple[Row, ...] = ()
    view_of: str | None = None  # figure2 / figure3: drawn from the runs of this experiment
    panels: tuple[tuple[str, tuple[str, ...]], ...] = ()  # figures: (panel title, row names) per panel
    kind: str = "table"  # table, curves or bench
    columns: tuple[str, ...] = field(default=())  # data sets in the paper's column order
    default_runs: int = 5  # seeds per row: the paper's CIFAR/SVHN figures are medians of 5 runs
    # Where the reference figures come from when they are not the WRN paper's (today's recipes)
    source: str = ""
    # An attack each run gets once trained ("autoattack": `wrn eval RUN --attack autoattack` at the run's
    # training eps, L-inf; the best epoch's weights, RUN/best, for a run with adv.holdout); "": none
    attack: str = ""

    @property
    def runnable_rows(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.model is not None)

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)


# --------------------------------------------------------------------------------------------- the rows


def _cifar(model, label, c10, c100, params, **kw) -> list[Row]:
    """A model on CIFAR-10 and CIFAR-100 (no CIFAR-100 row where the paper has no CIFAR-100 figure)."""
    suffix = ("-dropout" if kw.get("dropout") else "") + ("-zca" if kw.get("normalization") == "zca" else "")
    rows = [Row(f"cifar10-{model}{suffix}", label, model, "cifar10", c10, params, **kw)]
    if c100 is not None:
        rows.append(Row(f"cifar100-{model}{suffix}", label, model, "cifar100", c100, params, **kw))
    return rows


_T2 = (  # (model, label, error, params M, seconds per epoch); k = 2, ZCA, CIFAR-10
    ("wrn-40-2-b131", "B(1,3,1), d=40", 6.06, 1.4, 85.8),
    ("wrn-40-2-b31", "B(3,1), d=40", 5.78, 1.2, 67.5),
    ("wrn-40-2-b13", "B(1,3), d=40", 6.42, 1.3, 72.2),
    ("wrn-40-2-b311", "B(3,1,1), d=40", 5.86, 1.3, 82.2),
    ("wrn-28-2", "B(3,3), d=28", 5.73, 1.5, 67.5),
    ("wrn-22-2-b313", "B(3,1,3), d=22", 5.78, 1.1, 59.9),
)
TABLE2 = tuple(
    Row(f"cifar10-{m}-zca", label, m, "cifar10", err, params, normalization="zca", paper_time=t)
    for m, label, err, params, t in _T2
)

TABLE3 = tuple(
    Row(f"cifar10-wrn-40-2-l{n}-zca", f"l={n}", f"wrn-40-2-l{n}", "cifar10", err, 2.2, normalization="zca")
    for n, err in ((1, 6.69), (2, 5.43), (3, 5.65), (4, 5.93))
)

_T4 = (  # (depth, k, params M, CIFAR-10, CIFAR-100); ZCA
    (40, 1, 0.6, 6.85, 30.89),
    (40, 2, 2.2, 5.33, 26.04),
    (40, 4, 8.9, 4.97, 22.89),
    (40, 8, 35.7, 4.66, None),
    (28, 10, 36.5, 4.17, 20.50),
    (28, 12, 52.5, 4.33, 20.43),
    (22, 8, 17.2, 4.38, 21.22),
    (22, 10, 26.8, 4.44, 20.75),
    (16, 8, 11.0, 4.81, 22.07),
    (16, 10, 17.1, 4.56, 21.59),
)
TABLE4 = tuple(
    row
    for d, k, params, c10, c100 in _T4
    for row in _cifar(f"wrn-{d}-{k}", f"WRN-{d}-{k}", c10, c100, params, normalization="zca")
)

_T5 = (  # paper order: the thin pre-activation ResNets, then the wide ones; mean/std, flip + crop
    ("preact-resnet-164", "pre-act ResNet-164", 5.46, 24.33, 1.7, ""),
    (
        "preact-resnet-1001",
        "pre-act ResNet-1001",
        4.92,
        22.71,
        10.2,
        "the paper also gives 4.64% on CIFAR-10 at batch 64",
    ),
    ("wrn-40-4", "WRN-40-4", 4.53, 21.18, 8.9, ""),
    ("wrn-16-8", "WRN-16-8", 4.27, 20.43, 11.0, ""),
    ("wrn-28-10", "WRN-28-10", 4.00, 19.25, 36.5, ""),
)
TABLE5 = tuple(
    row for m, label, c10, c100, params, note in _T5 for row in _cifar(m, label, c10, c100, params, note=note)
)

_T6 = (  # (model, k label, params M, dropout?, CIFAR-10, CIFAR-100, SVHN)
    ("wrn-16-4", "WRN-16-4", None, False, 5.02, 24.03, 1.85),
    ("wrn-16-4", "WRN-16-4", None, True, 5.24, 23.91, 1.64),
    ("wrn-28-10", "WRN-28-10", 36.5, False, 4.00, 19.25, None),
    ("wrn-28-10", "WRN-28-10", 36.5, True, 3.89, 18.85, None),
    ("wrn-52-1", "WRN-52-1", None, False, 6.43, 29.89, 2.08),
    ("wrn-52-1", "WRN-52-1", None, True, 6.28, 29.78, 1.70),
)


def _table6() -> tuple[Row, ...]:
    rows: list[Row] = []
    for model, label, params, dropout, c10, c100, svhn in _T6:
        text = label + (" + dropout" if dropout else "")
        rows += _cifar(model, text, c10, c100, params, dropout=CIFAR_DROPOUT if dropout else None)
        if svhn is not None:
            name = f"svhn-{model}" + ("-dropout" if dropout else "")
            rows.append(
                Row(name, text, model, "svhn", svhn, params, dropout=SVHN_DROPOUT if dropout else None)
            )
    return tuple(rows)


TABLE6 = _table6()

TABLE7 = tuple(
    Row(f"imagenet-wrn-{d}-{w}", f"WRN-{d}, width {w}", f"imagenet-wrn-{d}-{w}", "imagenet", top1, params,
        paper_top5=top5)
    for d, w, top1, top5, params in (
        (18, "1.0", 30.4, 10.93, 11.7),
        (18, "1.5", 27.06, 9.0, 25.9),
        (18, "2.0", 25.58, 8.06, 45.6),
        (18, "3.0", 24.06, 7.33, 101.8),
        (34, "1.0", 26.77, 8.67, 21.8),
        (34, "1.5", 24.5, 7.58, 48.6),
        (34, "2.0", 23.39, 7.00, 86.0),
    )
)  # fmt: skip

TABLE8 = (
    Row("imagenet-resnet-50", "ResNet-50", "resnet-50", "imagenet", 24.01, 25.6, paper_top5=7.02),
    Row("imagenet-resnet-101", "ResNet-101", "resnet-101", "imagenet", 22.44, 44.5, paper_top5=6.21),
    Row("imagenet-resnet-152", "ResNet-152", "resnet-152", "imagenet", 22.16, 60.2, paper_top5=6.16),
    Row("imagenet-wrn-50-2", "WRN-50-2-bottleneck", "wrn-50-2", "imagenet", 21.9, 68.9, paper_top5=6.03),
    Row(
        "imagenet-preact-resnet-200",
        "pre-ResNet-200",
        None,
        "imagenet",
        21.66,
        None,
        paper_top5=5.79,
        note="reference line of the paper; wrn does not build this network",
    ),
)

TABLE9 = (
    Row("cifar10-wrn-40-10-dropout", "WRN-40-10 + dropout", "wrn-40-10", "cifar10", 3.8, 56.0,
        dropout=CIFAR_DROPOUT, note="the paper's best single run, not a median"),
    Row("cifar100-wrn-40-10-dropout", "WRN-40-10 + dropout", "wrn-40-10", "cifar100", 18.3, 56.0,
        dropout=CIFAR_DROPOUT, note="the paper's best single run, not a median"),
    Row("svhn-wrn-16-8-dropout", "WRN-16-8 + dropout", "wrn-16-8", "svhn", 1.54, 11.0,
        dropout=SVHN_DROPOUT, note="the paper's best single run, not a median"),
)  # fmt: skip


# --------------------------------------------------------------------------------------------- today's recipes
# WRN-28-10 as today's best-known training methods were shown on it; each row's preset holds the recipe of the
# method's own code (docs/training.md, "Modern recipes"), and its reference figure is that paper's.

CUTOUT_SOURCE = (
    "Cutout (DeVries & Taylor 2017), the README of uoguelph-mlrg/Cutout: WRN-28-10 + dropout 0.3, test error %, "
    "mean of 5 runs"
)
CUTOUT = tuple(
    Row(name, label, "wrn-28-10", ds, err, 36.5, preset=f"{ds}-wrn-28-10-cutout", settings=settings)
    for ds, px, base_err, cut_err in (("cifar10", 16, 3.87, 3.08), ("cifar100", 8, 18.8, 18.41))
    for name, label, err, settings in (
        (f"{ds}-wrn-28-10-cutout-baseline", "WRN-28-10 + dropout", base_err, (("dataset.cutout", 0),)),
        (f"{ds}-wrn-28-10-cutout", f"WRN-28-10 + dropout + Cutout {px} px", cut_err, ()),
    )
)

AUTOAUGMENT_SOURCE = (
    "AutoAugment (Cubuk et al., CVPR 2019), Tables 2 and 3: WRN-28-10 with the CIFAR-10 policy and Cutout "
    "16 px, test error % (2.6 ± 0.1 and 17.1 ± 0.3)"
)
AUTOAUGMENT = tuple(
    Row(f"{ds}-wrn-28-10-autoaugment", "WRN-28-10 + AutoAugment + Cutout", "wrn-28-10-aa", ds, err, 36.5,
        preset=f"{ds}-wrn-28-10-autoaugment")
    for ds, err in (("cifar10", 2.6), ("cifar100", 17.1))
)  # fmt: skip

SAM_SOURCE = (
    "SAM (Foret et al., ICLR 2021), Table 1: WRN-28-10, 200 epochs, SAM and its SGD baseline with the same "
    "recipe, test error %; each SGD figure is the better of a 200- and a 400-epoch run (the paper's Section 3.1 "
    "and its footnote 4), while the SGD rows here train 200 epochs, as the SAM rows"
)
_SAM = (  # (augmentation label, preset suffix, CIFAR-10 SAM / SGD, CIFAR-100 SAM / SGD)
    ("basic", "", (2.7, 3.5), (16.5, 18.8)),
    ("Cutout", "-cutout", (2.3, 2.6), (14.9, 16.9)),
    ("AutoAugment", "-autoaugment", (2.1, 2.3), (13.6, 15.8)),
)
SAM = tuple(
    Row(f"{ds}-wrn-28-10-sam{suffix}{'-sgd' if sgd else ''}", f"{aug}, {'SGD' if sgd else 'SAM'}", "wrn-28-10-sam",
        ds, errors[ds][sgd], 36.5, preset=f"{ds}-wrn-28-10-sam{suffix}",
        settings=(("optim.sam_rho", 0.0),) if sgd else ())
    for ds in ("cifar10", "cifar100")
    for aug, suffix, c10, c100 in _SAM
    for errors in ({"cifar10": c10, "cifar100": c100},)
    for sgd in (0, 1)
)  # fmt: skip


ROBUST_SOURCE = (
    "RobustBench's model_info files (github.com/RobustBench/robustbench, model_info/DATASET/Linf/NAME.json): "
    "clean accuracy and AutoAttack accuracy (standard version, L-inf) in percent, each on the 10,000 test "
    "images; TRADES-AWP on CIFAR-100, not on RobustBench, from its authors' AutoAttack table "
    "(csdongxian/AWP, auto_attacks/README.md)"
)


def _robust(
    preset: str, label: str, model: str, params: float, clean: float, robust: float, file: str, note: str = ""
) -> Row:
    """A row of the robust grid: a shipped preset (its data set its name's first part) beside a reference's
    clean and AutoAttack accuracy (its error 100 - clean) read from ``file``: RobustBench's model_info file
    under model_info/DATASET/Linf/, or another source named in full."""
    dataset = preset.split("-")[0]
    file = file if "/" in file else f"model_info/{dataset}/Linf/{file}"
    return Row(
        preset,
        label,
        model,
        dataset,
        round(100 - clean, 2),
        params,
        preset=preset,
        paper_clean=clean,
        paper_robust=robust,
        paper_file=file,
        note=note,
    )


ROBUST = (
    _robust("cifar10-wrn-34-10-pgd-at", "WRN-34-10 + PGD-AT, early stopping", "wrn-34-10", 46.2, 87.14, 44.04,
            "Madry2018Towards.json", note="RobustBench's entry is Madry et al.'s own WRN-34-10, trained by "
            "their TensorFlow code without early stopping: the nearest entry, not this recipe's"),
    _robust("cifar10-wrn-34-20-pgd-at", "WRN-34-20 + PGD-AT, early stopping", "wrn-34-20", 184.5, 85.34, 53.42,
            "Rice2020Overfitting.json"),
    _robust("cifar10-wrn-34-10-trades", "WRN-34-10 + TRADES", "wrn-34-10", 46.2, 84.92, 53.08,
            "Zhang2019Theoretically.json", note="attacked at eps 0.031, as TRADES trains"),
    _robust("cifar10-wrn-34-10-trades-awp", "WRN-34-10 + TRADES + AWP", "wrn-34-10", 46.2, 85.36, 56.17,
            "Wu2020Adversarial.json"),
    _robust("cifar10-wrn-28-10-dm-at", "WRN-28-10 (swish) + TRADES + 1M generated images", "wrn-28-10-dm", 36.5,
            92.44, 67.31, "Wang2023Better_WRN-28-10.json", note="RobustBench's entry is DM-Improves-AT's "
            "WRN-28-10 trained with 20M generated images, whose settings their repository does not hold; this "
            "row trains their README's command, with the 1M file (edm_data/cifar10/1m.npz under the folder the "
            "grid starts in)"),
    _robust("cifar100-wrn-34-10-at-awp", "WRN-34-10 + PGD-AT + AWP", "wrn-34-10", 46.2, 60.38, 28.86,
            "Wu2020Adversarial.json", note="the best epoch is chosen on the test set under PGD-20, as AT-AWP's "
            "CIFAR-100 code chose the released network RobustBench lists"),
    _robust("cifar100-wrn-34-10-trades-awp", "WRN-34-10 + TRADES + AWP", "wrn-34-10", 46.2, 60.17, 28.80,
            "csdongxian/AWP auto_attacks/README.md"),
    _robust("cifar100-wrn-28-10-dm-at", "WRN-28-10 (swish) + TRADES + 1M generated images", "wrn-28-10-dm",
            36.5, 72.58, 38.83, "Wang2023Better_WRN-28-10.json", note="RobustBench's entry is DM-Improves-AT's "
            "WRN-28-10 trained with 50M generated images, whose settings their repository does not hold; this "
            "row trains their README's command on cifar100s, with the 1M file (edm_data/cifar100/1m.npz under "
            "the folder the grid starts in)"),
)  # fmt: skip


FIXMATCH_SOURCE = (
    "Sohn et al., FixMatch (NeurIPS 2020), Table 2, the FixMatch (RA) row: error rates in percent, mean ± std "
    "over 5 folds of the labelled split, each the median of the last 20 checkpoints' test errors"
)
_FIXMATCH = (  # (data set, labels, model, paper's params (M), error, std)
    ("cifar10", 40, "wrn-28-2-fixmatch", 1.5, 13.81, 3.37),
    ("cifar10", 250, "wrn-28-2-fixmatch", 1.5, 5.07, 0.65),
    ("cifar10", 4000, "wrn-28-2-fixmatch", 1.5, 4.26, 0.05),
    ("cifar100", 400, "wrn-28-8-fixmatch", 23.4, 48.85, 1.75),
    ("cifar100", 2500, "wrn-28-8-fixmatch", 23.4, 28.29, 0.11),
    ("cifar100", 10000, "wrn-28-8-fixmatch", 23.4, 22.60, 0.12),
)
FIXMATCH = tuple(
    Row(f"{data}-{model.removesuffix('-fixmatch')}-fixmatch-{n}", f"{model.removesuffix('-fixmatch').upper()}, {n} labels", model,
        data, err, params, preset=f"{data}-{model.removesuffix('-fixmatch')}-fixmatch-{n}", paper_std=std,
        folds=True)
    for data, n, model, params, err, std in _FIXMATCH
)  # fmt: skip


def _pick(rows: tuple[Row, ...], *names: str) -> tuple[Row, ...]:
    by_name = {r.name: r for r in rows}
    return tuple(by_name[n] for n in names)


_F2 = ("cifar10-preact-resnet-164", "cifar10-wrn-28-10", "cifar100-preact-resnet-164", "cifar100-wrn-28-10")
_F3 = ("svhn-wrn-52-1", "svhn-wrn-52-1-dropout", "svhn-wrn-16-4", "svhn-wrn-16-4-dropout")

EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "table2",
            "Table 2",
            "block types B(M) at k=2 on CIFAR-10 with ZCA (test error %, seconds per epoch on the authors' GPU)",
            TABLE2,
            columns=("cifar10",),
        ),
        Experiment(
            "table3",
            "Table 3",
            "WRN-40-2 with l = 1, 2, 3, 4 convolutions per block, CIFAR-10, ZCA",
            TABLE3,
            columns=("cifar10",),
        ),
        Experiment(
            "table4",
            "Table 4",
            "depth and width of WRN-d-k on CIFAR-10 and CIFAR-100, ZCA",
            TABLE4,
            columns=("cifar10", "cifar100"),
        ),
        Experiment(
            "table5",
            "Table 5",
            "thin pre-activation ResNets vs wide WRNs, CIFAR-10 and CIFAR-100, mean/std + flip/crop",
            TABLE5,
            columns=("cifar10", "cifar100"),
        ),
        Experiment(
            "table6",
            "Table 6",
            "dropout in the residual block, CIFAR-10, CIFAR-100 and SVHN",
            TABLE6,
            columns=("cifar10", "cifar100", "svhn"),
        ),
        Experiment(
            "table7",
            "Table 7",
            "ImageNet: non-bottleneck ResNet-18 and -34 made wider (top-1 / top-5 error %)",
            TABLE7,
            columns=("imagenet",),
            default_runs=1,  # the paper's ImageNet figures are single runs
        ),
        Experiment(
            "table8",
            "Table 8",
            "ImageNet: bottleneck ResNets vs WRN-50-2-bottleneck (single-crop top-1 / top-5 error %)",
            TABLE8,
            columns=("imagenet",),
            default_runs=1,
        ),
        Experiment(
            "table9",
            "Table 9",
            "the paper's best single runs: WRN-40-10 + dropout on CIFAR, WRN-16-8 + dropout on SVHN",
            TABLE9,
            columns=("cifar10", "cifar100", "svhn"),
        ),
        Experiment(
            "figure2",
            "Figure 2",
            "training curves of a thin (pre-act ResNet-164) and a wide (WRN-28-10) net, from the Table 5 runs",
            _pick(TABLE5, *_F2),
            view_of="table5",
            panels=(("CIFAR-10", _F2[:2]), ("CIFAR-100", _F2[2:])),
            kind="curves",
            columns=("cifar10", "cifar100"),
        ),
        Experiment(
            "figure3",
            "Figure 3",
            "SVHN training curves with and without dropout, thin (WRN-52-1) and wide (WRN-16-4), "
            "from the Table 6 runs",
            _pick(TABLE6, *_F3),
            view_of="table6",
            panels=(("SVHN, thin: WRN-52-1", _F3[:2]), ("SVHN, wide: WRN-16-4", _F3[2:])),
            kind="curves",
            columns=("svhn",),
        ),
        Experiment(
            "figure4",
            "Figure 4",
            "time of forward + backward + update of a minibatch of 32 (`wrn bench figure4`): thin vs wide",
            kind="bench",
        ),
        Experiment(
            "cutout",
            "Cutout",
            "WRN-28-10 + dropout with and without Cutout (one 16 px hole on CIFAR-10, 8 px on CIFAR-100), "
            "the recipe of uoguelph-mlrg/Cutout",
            CUTOUT,
            columns=("cifar10", "cifar100"),
            source=CUTOUT_SOURCE,
        ),
        Experiment(
            "autoaugment",
            "AutoAugment",
            "AutoAugment's WRN-28-10 with the 95 sub-policies of its code and Cutout, cosine lr, the recipe of "
            "tensorflow/models research/autoaugment",
            AUTOAUGMENT,
            columns=("cifar10", "cifar100"),
            source=AUTOAUGMENT_SOURCE,
        ),
        Experiment(
            "sam",
            "SAM",
            "SAM's WRN-28-10 trained with SAM (m = 32) and with plain SGD, basic, Cutout and AutoAugment "
            "augmentation, the paper's settings in the code of google-research/sam",
            SAM,
            columns=("cifar10", "cifar100"),
            source=SAM_SOURCE,
        ),
        Experiment(
            "robust",
            "Robust training",
            "WRN-34-10 and -34-20 trained adversarially (PGD-AT with early stopping, TRADES, TRADES + AWP; "
            "AT-AWP and TRADES-AWP on CIFAR-100) and WRN-28-10 with DM-Improves-AT's generated images (CIFAR-10 "
            "and -100), as their authors' code trains them, each attacked with AutoAttack (standard, L-inf) at "
            "its training eps once trained",
            ROBUST,
            columns=("cifar10", "cifar100"),
            default_runs=1,  # RobustBench's entries are single models
            source=ROBUST_SOURCE,
            attack="autoattack",
        ),
        Experiment(
            "fixmatch",
            "FixMatch",
            "WRN-28-2 (CIFAR-10) and WRN-28-8 (CIFAR-100) trained with FixMatch (RA) on 40 to 10,000 labels, "
            "2^20 steps as google-research/fixmatch trains them; each seed a fold of the labelled split",
            FIXMATCH,
            columns=("cifar10", "cifar100"),
            source=FIXMATCH_SOURCE,
        ),
    )
}


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        import difflib

        close = difflib.get_close_matches(str(name), list(EXPERIMENTS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown experiment {name!r}{hint}; choose one of {', '.join(EXPERIMENTS)} "
            "('wrn reproduce list' describes them)"
        )
    return EXPERIMENTS[name]


def base_experiment(exp: Experiment) -> Experiment:
    """The experiment whose runs ``exp`` uses: Table 5 for Figure 2, Table 6 for Figure 3, else itself."""
    return EXPERIMENTS[exp.view_of] if exp.view_of else exp


def views_of(name: str) -> list[Experiment]:
    """The figures drawn from the runs of experiment ``name``."""
    return [e for e in EXPERIMENTS.values() if e.view_of == name]


# --------------------------------------------------------------------------------------------- compute

# Forward multiply-adds of one image at the native input size (32x32, ImageNet 224x224), 10 / 1000 classes:
# the shipped model table (wrn.models.table, checked against the models by a test), so that `wrn reproduce
# list` neither imports torch nor traces 36 networks.
FORWARD_MACS = {name: row["macs"] for name, row in shipped_rows().items()}

# The paper's own timings, as FLOP rates of its Titan X (a training step = 3 forward passes = 6 FLOPs per
# multiply-add and image; docs/benchmarks.md). Figure 4 (batch of 32): WRN-28-10 312 ms -> 3.23 TFLOP/s, WRN-40-4
# 68 ms -> 3.67; pre-act ResNet-164 85 ms -> 0.55 and -1001 512 ms -> 0.56. Table 2 (50,000 images per epoch):
# the k=2 nets run at 0.73-0.95 TFLOP/s. Thin nets use a GPU far less well than wide ones: that is the
# paper's point, and an estimate that ignored it would be 6x off for the pre-act ResNets.
PAPER_TFLOPS_WIDE = 6 * FORWARD_MACS["wrn-28-10"] * 32 / 0.312 / 1e12


def _rate(macs: float, ms: float, batch: int = 32) -> float:
    return 6 * macs * batch / (ms / 1000) / 1e12


def paper_efficiencies() -> dict[str, float]:
    """Fraction of a wide net's FLOP rate that each family reached on the paper's GPU (its own timings)."""
    thin = (
        _rate(FORWARD_MACS["preact-resnet-164"], 85.0) + _rate(FORWARD_MACS["preact-resnet-1001"], 512.0)
    ) / 2
    k2 = [6 * FORWARD_MACS[r.model] * 50_000 / r.paper_time / 1e12 for r in TABLE2]
    return {"thin": thin / PAPER_TFLOPS_WIDE, "k2": sum(k2) / len(k2) / PAPER_TFLOPS_WIDE, "wide": 1.0}


# Assumed (not measured: no GPU was available) rate of a wide WRN's training step on a current data-centre
# GPU with bf16 and channels_last, about 8x the paper's Titan X. `wrn reproduce list --bench figure4.json`
# replaces it by a measured one.
ASSUMED_TFLOPS_WIDE = 25.0


def family(model: str) -> str:
    """thin (pre-act ResNets, WRNs with k=1), k2 (k=2) or wide, for the efficiency of the estimate."""
    if model.startswith("preact-resnet"):
        return "thin"
    parts = model.split("-")
    if model.startswith("wrn-") and len(parts) >= 3 and parts[2].isdigit() and parts[1] not in ("50", "101"):
        k = int(parts[2])
        return "thin" if k == 1 else "k2" if k == 2 else "wide"
    return "wide"  # ImageNet nets: large feature maps keep a GPU busy


def forward_macs(model: str) -> int:
    """Forward multiply-adds of one image of ``model``: the shipped table's count, else for a CIFAR WRN-d-k not in
    it (wrn-34-20) the count of its convolutions and classifier at 32x32, which gives the table's count for every
    CIFAR WRN in it."""
    if model in FORWARD_MACS:
        return FORWARD_MACS[model]
    parts = model.split("-")
    if len(parts) != 3 or parts[0] != "wrn" or not (parts[1].isdigit() and parts[2].isdigit()):
        raise KeyError(model)
    depth, k = int(parts[1]), int(parts[2])
    widths, positions = (16, 16 * k, 32 * k, 64 * k), (1024, 1024, 256, 64)
    total = 3 * 16 * 9 * 1024
    for g in range(3):
        cin, cout, p = widths[g], widths[g + 1], positions[g + 1]
        for _ in range((depth - 4) // 6):
            total += (cin + cout) * cout * 9 * p + (cin * cout * p if cin != cout else 0)
            cin = cout
    return total + 64 * k * 10


def adversarial_passes(cfg) -> float:
    """Forward-backward passes of one training step of ``cfg``'s recipe, in plain steps' worth: 1; 2 with SAM;
    with adversarial training K attack steps (each a forward and a backward pass, as a plain step) plus the
    step on the adversarial images, K + 1 for PGD-AT, K + 2 for TRADES (its clean images too); AWP one more
    (its weight perturbation's forward and backward pass)."""
    if cfg.adv.method == "none":
        return 2.0 if cfg.optim.sam_rho else 1.0
    from wrn.train.objectives import ADVERSARIES

    steps = cfg.adv.steps or ADVERSARIES[cfg.adv.method].steps
    passes = steps + (2 if cfg.adv.method.startswith("trades") else 1)
    return float(passes + (1 if cfg.adv.awp else 0))


def images_per_epoch(cfg) -> int | None:
    """The images an epoch of ``cfg`` passes through the network where that is not the training set: with a
    labelled split (ssl.labels) ``epoch_steps`` batches, each of ``(1 + 2 mu)`` x the batch with semi-supervised
    training (the labelled images and both views of the unlabelled ones); else None."""
    if cfg.ssl.labels is None:
        return None
    per_step = cfg.optim.batch_size * (1 + 2 * cfg.ssl.mu if cfg.ssl.method != "none" else 1)
    return cfg.ssl.epoch_steps * per_step


class Recipe(NamedTuple):
    """What a row's recipe costs: see :func:`row_recipe`."""

    epochs: int
    passes: float
    holdout: int
    images: int | None
    holdout_rule: str = "rice"


@functools.cache
def row_recipe(row: Row) -> Recipe:
    """(epochs, forward-backward passes per training step, held-out images, images per epoch, how the best
    epoch is picked) of ``row``'s recipe: 2 passes with SAM, K + 1 with PGD-AT of K steps, K + 2 with TRADES,
    one more with AWP, else 1 (:func:`adversarial_passes`); the held-out images (adv.holdout) leave training and
    are attacked after each epoch (with rule ``awp``: test images, none held out); the images of an epoch,
    where they are not the training set's (:func:`images_per_epoch`)."""
    if row.preset is None and not row.settings:
        return Recipe(recipe_epochs(row.dataset), 1.0, 0, None)
    from wrn.train.compose import build_config

    cfg = build_config(None, row.config(0))
    return Recipe(cfg.schedule.epochs, adversarial_passes(cfg), cfg.adv.holdout, images_per_epoch(cfg),
                  cfg.adv.holdout_rule)  # fmt: skip


def run_flops(row: Row, epochs: int | None = None) -> float:
    """FLOPs of one run of ``row`` with its recipe: training steps (each as many passes as its recipe costs:
    :func:`row_recipe`) plus one test pass per epoch; with adv.holdout, the held-out images attacked after each
    epoch (PGD at the training budget: counted as training steps of the same passes) and trained on no more;
    with the rule ``awp`` nothing is held out, and the test images it attacks after each epoch (PGD-20) are
    counted on top, as 21 forward-backward passes each."""
    if row.model is None:
        return 0.0
    info = DATASETS[row.dataset]
    train, test = info.train_size, info.test_size
    recipe = row_recipe(row)
    train = recipe.images or train
    epochs = recipe.epochs if epochs is None else epochs
    macs = forward_macs(row.model)
    from wrn.train.holdout import AWP_TEST_STEPS

    chosen_on_test = recipe.holdout * (AWP_TEST_STEPS + 1) if recipe.holdout_rule == "awp" else 0
    return epochs * (6 * macs * (recipe.passes * train + chosen_on_test) + 2 * macs * test)


def gpu_hours(row: Row, tflops_wide: float = ASSUMED_TFLOPS_WIDE, efficiencies: dict | None = None) -> float:
    """Estimated GPU-hours of one run of ``row``: its FLOPs at the family's share of the wide rate."""
    if row.model is None:
        return 0.0
    eff = (efficiencies or paper_efficiencies())[family(row.model)]
    return run_flops(row) / (tflops_wide * 1e12 * eff) / 3600


def experiment_gpu_hours(exp: Experiment, seeds: int | None = None, **kw) -> float:
    seeds = exp.default_runs if seeds is None else seeds
    return seeds * sum(gpu_hours(r, **kw) for r in exp.runnable_rows)


def bench_rates(figure4: dict) -> tuple[float, dict[str, float]]:
    """The wide rate (TFLOP/s) and family efficiencies measured by ``wrn bench figure4`` (its JSON)."""
    ms = {m["name"]: float(m["ms"]) for m in figure4.get("models", []) if m.get("ms")}
    batch = int(figure4.get("settings", {}).get("batch_size", 32))
    if "wrn-28-10" not in ms:
        raise ConfigError("the figure4.json has no time for wrn-28-10; run 'wrn bench figure4' again")
    wide = _rate(FORWARD_MACS["wrn-28-10"], ms["wrn-28-10"], batch)
    eff = paper_efficiencies()
    thin = [
        _rate(FORWARD_MACS[n], ms[n], batch) for n in ("preact-resnet-164", "preact-resnet-1001") if n in ms
    ]
    if thin:
        eff["thin"] = sum(thin) / len(thin) / wide
    return wide, eff


def total_epochs(exp: Experiment) -> int:
    """Epochs of one seed of the experiment with the paper's recipes."""
    return sum(row_recipe(r).epochs for r in exp.runnable_rows)
