"""``wrn reproduce cutout | autoaugment | sam``: today's recipes of WRN-28-10 beside their papers' figures.

The recipes are written out below from each method's own code (uoguelph-mlrg/Cutout's train.py,
tensorflow/models research/autoaugment, google-research/sam), independently of the shipped presets, and every
run of the three grids must train exactly that.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from conftest import forward_macs
from wrn.cli import main as wrn_main
from wrn.reproduce import experiments as E
from wrn.reproduce import grid as G
from wrn.train.compose import build_config, dump_yaml, flatten
from wrn.train.resolve import resolve

# What each method's code trains, in our config's keys (beside the WRN paper's CIFAR recipe where they agree).
CUTOUT_CODE = {
    "model.name": "wrn-28-10", "model.dropout": 0.3, "optim.lr": 0.1, "optim.momentum": 0.9,
    "optim.nesterov": True, "optim.weight_decay": 5e-4, "optim.batch_size": 128, "schedule.name": "multistep",
    "schedule.epochs": 200, "schedule.milestones": [62, 122, 162], "schedule.gamma": 0.2,
    "schedule.reset_momentum": False, "dataset.augment": "flip-crop", "dataset.crop_padding": "zeros",
    "dataset.normalization": "cifar10", "dataset.policy": "none", "optim.sam_rho": 0.0,
}  # fmt: skip
AUTOAUGMENT_CODE = {
    "model.name": "wrn-28-10-aa", "model.init": "autoaugment", "model.dropout": 0.0, "optim.lr": 0.1,
    "optim.momentum": 0.9, "optim.nesterov": True, "optim.weight_decay": 5e-4, "optim.decay_norm_and_bias": True,
    "optim.batch_size": 128, "optim.grad_clip": 5.0, "optim.replica_batch": 0, "schedule.name": "cosine",
    "schedule.epochs": 200, "schedule.reset_momentum": False, "schedule.warmup_epochs": 0.0,
    "dataset.augment": "flip-crop", "dataset.crop_padding": "mean", "dataset.policy": "autoaugment-paper",
    "dataset.cutout": 16, "dataset.cutout_per": "image", "dataset.normalization": "cifar10",
}  # fmt: skip
# SAM's paper (Appendix C.1, Table 6: batch 256 on 8 GPUs, lr 0.1, weight decay 5e-4, rho) and the rest from its
# code's defaults (sam_jax/train.py, training_utils/flax_training.py, datasets/augmentation.py)
SAM_CODE = {
    "model.name": "wrn-28-10-sam", "model.init": "autoaugment", "model.dropout": 0.0, "optim.lr": 0.1,
    "optim.momentum": 0.9, "optim.nesterov": True, "optim.weight_decay": 5e-4, "optim.decay_norm_and_bias": True,
    "optim.batch_size": 256, "optim.replica_batch": 32, "optim.grad_clip": 5.0, "optim.label_smoothing": 0.0,
    "optim.ema_decay": 0.0, "schedule.name": "cosine", "schedule.epochs": 200, "schedule.warmup_epochs": 0.0,
    "schedule.reset_momentum": False, "dataset.augment": "flip-crop", "dataset.crop_padding": "reflect",
}  # fmt: skip
SAM_RHO = {"cifar10": 0.05, "cifar100": 0.1}  # Table 6

PAPER_FIGURES = {  # test error %, each paper's, as docs/reproduce.md cites them
    "cutout": {"cifar10-wrn-28-10-cutout-baseline": 3.87, "cifar10-wrn-28-10-cutout": 3.08,
               "cifar100-wrn-28-10-cutout-baseline": 18.8, "cifar100-wrn-28-10-cutout": 18.41},
    "autoaugment": {"cifar10-wrn-28-10-autoaugment": 2.6, "cifar100-wrn-28-10-autoaugment": 17.1},
    "sam": {"cifar10-wrn-28-10-sam": 2.7, "cifar10-wrn-28-10-sam-sgd": 3.5,
            "cifar10-wrn-28-10-sam-cutout": 2.3, "cifar10-wrn-28-10-sam-cutout-sgd": 2.6,
            "cifar10-wrn-28-10-sam-autoaugment": 2.1, "cifar10-wrn-28-10-sam-autoaugment-sgd": 2.3,
            "cifar100-wrn-28-10-sam": 16.5, "cifar100-wrn-28-10-sam-sgd": 18.8,
            "cifar100-wrn-28-10-sam-cutout": 14.9, "cifar100-wrn-28-10-sam-cutout-sgd": 16.9,
            "cifar100-wrn-28-10-sam-autoaugment": 13.6, "cifar100-wrn-28-10-sam-autoaugment-sgd": 15.8},
}  # fmt: skip


def plan_of(name: str, tmp_path):
    over = G.Overrides(
        (), {}, {"dataset": None, "data_dir": None, "epochs": None, "image_size": None, "set": []}
    )
    return G.make_plan(name, tmp_path / name, 1, over)


def run_settings(plan) -> dict[str, dict]:
    """Row name -> the flattened config its run's config file holds (what `wrn train --config` reads), with
    the data set's defaults filled in as `wrn train` fills them."""
    out = {}
    for spec in plan.runs:
        cfg = build_config(None, yaml.safe_load(plan.configs[spec.key]))
        out[spec.row.name] = flatten(resolve(cfg, cuda_available=False).to_dict())
    return out


@pytest.mark.parametrize("name", ["cutout", "autoaugment", "sam"])
def test_each_row_stands_beside_its_papers_figure(name, tmp_path):
    exp = E.get_experiment(name)
    assert {r.name: r.paper_error for r in exp.rows} == PAPER_FIGURES[name]
    assert exp.source and exp.columns == ("cifar10", "cifar100")
    plan = plan_of(name, tmp_path)
    assert len(plan.runs) == len(PAPER_FIGURES[name]) and not plan.scaled


def test_the_cutout_runs_train_the_recipe_of_its_code(tmp_path):
    runs = run_settings(plan_of("cutout", tmp_path))
    for row, cfg in runs.items():
        dataset = row.split("-")[0]
        holes = 0 if row.endswith("baseline") else {"cifar10": 16, "cifar100": 8}[dataset]
        assert {k: cfg[k] for k in CUTOUT_CODE} == CUTOUT_CODE, row
        assert (cfg["dataset.name"], cfg["dataset.cutout"]) == (dataset, holes)


def test_the_autoaugment_runs_train_the_recipe_of_its_code(tmp_path):
    for row, cfg in run_settings(plan_of("autoaugment", tmp_path)).items():
        assert {k: cfg[k] for k in AUTOAUGMENT_CODE} == AUTOAUGMENT_CODE, row
        assert cfg["dataset.name"] == row.split("-")[0]


def test_the_sam_runs_train_the_papers_settings_in_its_code(tmp_path):
    for row, cfg in run_settings(plan_of("sam", tmp_path)).items():
        dataset = row.split("-")[0]
        assert {k: cfg[k] for k in SAM_CODE} == SAM_CODE, row
        assert (cfg["dataset.name"], cfg["dataset.normalization"]) == (dataset, dataset)
        assert cfg["optim.sam_rho"] == (0.0 if row.endswith("-sgd") else SAM_RHO[dataset])
        augmented = "-cutout" in row or "-autoaugment" in row
        assert (cfg["dataset.cutout"], cfg["dataset.cutout_per"]) == (
            (16, "batch") if augmented else (0, "image")
        )
        assert cfg["dataset.policy"] == ("autoaugment-sam" if "-autoaugment" in row else "none")


def test_each_sgd_row_of_sam_is_its_sam_row_with_rho_0(tmp_path):
    runs = run_settings(plan_of("sam", tmp_path))
    for row, cfg in runs.items():
        if not row.endswith("-sgd"):
            continue
        twin = runs[row.removesuffix("-sgd")]
        assert twin["optim.sam_rho"] > 0 and cfg["optim.sam_rho"] == 0
        differ = {k for k in cfg.keys() | twin.keys() if cfg.get(k) != twin.get(k)}
        assert differ == {"optim.sam_rho", "description"}, row
    augment = {r: (c["dataset.policy"], c["dataset.cutout"]) for r, c in runs.items()}
    assert augment["cifar10-wrn-28-10-sam"] == ("none", 0)
    assert augment["cifar100-wrn-28-10-sam-cutout"] == ("none", 16)
    assert augment["cifar10-wrn-28-10-sam-autoaugment-sgd"] == ("autoaugment-sam", 16)


def test_gpu_hours_count_twice_the_training_passes_of_sam(tmp_path):
    """6 FLOPs per multiply-add and training image (x2 with SAM's second pass), 2 per test image; the
    multiply-adds counted by torch's FLOP counter, not read from the code's table."""
    sam = E.get_experiment("sam")
    macs = forward_macs("wrn-28-10-sam")
    for row in sam.rows:
        epochs = build_config(None, row.config(0)).schedule.epochs
        passes = 1 if row.name.endswith("-sgd") else 2
        assert E.run_flops(row) == pytest.approx(epochs * (6 * macs * 50_000 * passes + 2 * macs * 10_000))
    cut, paper = E.get_experiment("cutout").rows[0], forward_macs("wrn-28-10")
    assert E.run_flops(cut) == pytest.approx(200 * (6 * paper * 50_000 + 2 * paper * 10_000))


def test_reproduce_list_gives_the_new_experiments_with_their_gpu_hours(capsys):
    assert wrn_main(["reproduce", "list"]) == 0
    lines = {ln.split()[0]: ln.split() for ln in capsys.readouterr().out.splitlines() if ln.strip()}
    for name in ("cutout", "autoaugment", "sam"):
        exp = E.get_experiment(name)
        rows, runs, epochs, hours = lines[name][1:5]
        assert (int(rows), int(runs)) == (len(exp.rows), len(exp.runnable_rows))
        assert int(epochs.replace(",", "")) == E.total_epochs(exp)
        assert float(hours.replace(",", "")) == pytest.approx(E.experiment_gpu_hours(exp), abs=0.5)


def test_the_report_sets_ours_beside_each_papers_figure(tmp_path, capsys):
    """Finished runs written in wrn train's formats, with the run's own config: the report shows the paper's
    figure, ours, and the difference, and names where the figures come from."""
    plan = plan_of("sam", tmp_path)
    G.write_experiment(plan, None)
    ours = {}
    for i, spec in enumerate(plan.runs):
        run = spec.dir
        run.mkdir(parents=True)
        # what `wrn train --config` writes: the run's config file with the machine's choices filled in
        cfg = resolve(build_config(None, yaml.safe_load(plan.configs[spec.key])), cuda_available=True)
        (run / "config.yaml").write_text(dump_yaml(cfg))
        ours[spec.row.name] = err = 2.0 + i / 4
        lines = [{"epoch": e, "lr": 0.1, "train_loss": 1.0, "test_error": err, "train_time": 30.0,
                  "test_time": 3.0, "train_precision": "bf16"} for e in (1, 2)]  # fmt: skip
        (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
        (run / "model.json").write_text("{}")
        (run / "model.safetensors").write_bytes(b"")
    assert wrn_main(["report", str(plan.out), "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    text = (tmp_path / "r" / "report.md").read_text()
    assert re.findall(r"^## .*$", text, re.M) == ["## SAM"]
    assert E.SAM_SOURCE in text and "differ from the paper's setting" not in text
    assert "the better of a 200- and a 400-epoch run" in text.split("| ")[0]  # said before the table
    table = [ln for ln in text.splitlines() if ln.startswith("| ") and ("SAM" in ln or "SGD" in ln)]
    cells = {(c[0], c[1]): c for c in ([x.strip() for x in ln.strip("|").split("|")] for ln in table)}
    for row in E.get_experiment("sam").rows:
        title = E.DATASET_TITLES[row.dataset]
        c = cells[(row.label, title)]
        assert (float(c[2]), float(c[3])) == (row.paper_error, ours[row.name])
        assert c[6] == f"{ours[row.name] - row.paper_error:+.2f}"


# --------------------------------------------------------------------------------------------- scaled down

RECIPE_HOLES = {"cutout": {"cifar10": 16, "cifar100": 8}, "autoaugment": {"cifar10": 16, "cifar100": 16},
                "sam": {"cifar10": 16, "cifar100": 16}}  # fmt: skip


def dry_run_configs(capsys, *args: str) -> tuple[str, dict[str, dict]]:
    """`wrn reproduce ... --dry-run` in this process: its first line and each run's config as printed."""
    from conftest import wrn_here

    done = wrn_here(capsys, "reproduce", *args, "--dry-run")
    assert done.returncode == 0, done.stderr
    parts = re.split(r"^# (\S+)/seed-\d+: .*$", done.stdout, flags=re.M)
    return parts[0].strip(), {
        row: yaml.safe_load(text) for row, text in zip(parts[1::2], parts[2::2], strict=True)
    }


@pytest.mark.parametrize("name", ["cutout", "autoaugment", "sam"])
def test_a_grid_scaled_to_the_digits_keeps_cutouts_share_of_the_image(name, tmp_path, capsys):
    head, configs = dry_run_configs(capsys, name, "--dataset", "digits", "--out", str(tmp_path / name))
    assert set(configs) == {r.name for r in E.get_experiment(name).runnable_rows}
    for row in E.get_experiment(name).runnable_rows:
        data = configs[row.name]["dataset"]
        recipe = build_config(None, row.config(0)).dataset
        # 16 px of a 32 px side is 4 of the digits' 8, 8 px is 2; no hole stays none; the policy is kept
        assert data["cutout"] == (RECIPE_HOLES[name][row.dataset] // 4 if recipe.cutout else 0), row.name
        assert (data["name"], data["policy"]) == ("digits", recipe.policy)
    holes = sorted({f"dataset.cutout={h // 4}" for h in RECIPE_HOLES[name].values()})
    assert all(f"{h}" in head for h in holes) and head.startswith(f"# {name}: ") and "scaled down (" in head
    # A hole the user gives is theirs: kept as given, on every row
    _, configs = dry_run_configs(capsys, name, "--dataset", "digits", "--set", "dataset.cutout=3",
                                 "--out", str(tmp_path / f"{name}-3"))  # fmt: skip
    assert {c["dataset"]["cutout"] for c in configs.values()} == {3}
    # The recipe's own images: nothing moves
    _, configs = dry_run_configs(capsys, name, "--epochs", "2", "--out", str(tmp_path / f"{name}-cifar"))
    assert {r: c["dataset"]["cutout"] for r, c in configs.items()} == {
        r.name: build_config(None, r.config(0)).dataset.cutout for r in E.get_experiment(name).runnable_rows
    }


def train_scaled_sam(tmp_path, rows: list[str]) -> dict[str, float]:
    """`wrn reproduce sam --dataset digits --epochs 2 --runs 1` of ``rows`` with WRN-10-1 in a real process,
    then its report: each row's test error, and the report's list of what was scaled."""
    from conftest import run_wrn

    out = tmp_path / "sam"
    done = run_wrn("reproduce", "sam", "--dataset", "digits", "--epochs", "2", "--runs", "1", "--rows",
                   ",".join(rows), "--set", "model.name=wrn-10-1", "--set", "dataset.workers=0", "--out", out,
                   timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    errors = {}
    for row in rows:
        records = [json.loads(x) for x in (out / row / "seed-0" / "metrics.jsonl").read_text().splitlines()]
        errors[row] = records[-1]["test_error"]
    report = run_wrn("report", out, "--out", tmp_path / "r")
    assert report.returncode == 0, report.stderr
    assert "Cutout (px) 16 → 4" in (tmp_path / "r" / "report.md").read_text()
    return errors


def test_a_scaled_grid_of_cutout_and_autoaugment_rows_trains_above_chance(tmp_path):
    # chance on the digits is 90% error; with the recipe's 16 px hole on the 8x8 images these ended at 90.28%
    rows = ["cifar10-wrn-28-10-sam-cutout", "cifar100-wrn-28-10-sam-autoaugment-sgd"]
    errors = train_scaled_sam(tmp_path, rows)
    assert all(err < 60 for err in errors.values()), errors


@pytest.mark.slow
def test_every_row_of_the_scaled_sam_grid_trains_above_chance(tmp_path):
    rows = [r.name for r in E.get_experiment("sam").runnable_rows]
    errors = train_scaled_sam(tmp_path, rows)
    assert all(err < 60 for err in errors.values()), errors
