"""``wrn reproduce robust``: the four robust presets beside RobustBench's entries, each run attacked by AutoAttack
once trained, inside the grid's own runner (a second child under the run's lock), so that a resumed grid skips
the attacks it has recorded."""

from __future__ import annotations

import json

import pytest

from conftest import forward_macs
from wrn.cli import main as wrn_main
from wrn.reproduce import experiments as E
from wrn.reproduce import grid as G
from wrn.train.compose import build_config

# RobustBench's model_info/DATASET/Linf/*.json: (file, clean accuracy %, AutoAttack accuracy %); TRADES-AWP on
# CIFAR-100 is not on RobustBench: its authors' AutoAttack table (csdongxian/AWP auto_attacks/README.md line 44)
_C10, _C100 = "model_info/cifar10/Linf/", "model_info/cifar100/Linf/"
ROBUSTBENCH = {
    "cifar10-wrn-34-10-pgd-at": (_C10 + "Madry2018Towards.json", 87.14, 44.04),
    "cifar10-wrn-34-20-pgd-at": (_C10 + "Rice2020Overfitting.json", 85.34, 53.42),
    "cifar10-wrn-34-10-trades": (_C10 + "Zhang2019Theoretically.json", 84.92, 53.08),
    "cifar10-wrn-34-10-trades-awp": (_C10 + "Wu2020Adversarial.json", 85.36, 56.17),
    "cifar10-wrn-28-10-dm-at": (_C10 + "Wang2023Better_WRN-28-10.json", 92.44, 67.31),  # their 20M-image run
    "cifar100-wrn-34-10-at-awp": (_C100 + "Wu2020Adversarial.json", 60.38, 28.86),
    "cifar100-wrn-34-10-trades-awp": ("csdongxian/AWP auto_attacks/README.md", 60.17, 28.80),
    "cifar100-wrn-28-10-dm-at": (
        _C100 + "Wang2023Better_WRN-28-10.json",
        72.58,
        38.83,
    ),  # their 50M-image run
}
TRAINING_EPS = {name: 8 / 255 for name in ROBUSTBENCH} | {"cifar10-wrn-34-10-trades": 0.031}
HELD_OUT = {
    "cifar10-wrn-34-10-pgd-at": 1000,
    "cifar10-wrn-34-20-pgd-at": 1000,
    "cifar10-wrn-28-10-dm-at": 1024,
    "cifar100-wrn-34-10-at-awp": 10000,  # the test set (--adv-holdout-rule awp)
    "cifar100-wrn-28-10-dm-at": 1024,
}
SCALED_HELD_OUT = {name: 100 for name in HELD_OUT} | {"cifar100-wrn-34-10-at-awp": 360}  # all 360 digits


def overrides(**record) -> G.Overrides:
    base = {"dataset": None, "data_dir": None, "epochs": None, "image_size": None, "set": []}
    values = {}
    if record.get("dataset"):
        values["dataset.name"] = record["dataset"]
    return G.Overrides((), values, {**base, **record})


def test_each_row_is_a_robust_preset_beside_its_robustbench_entry():
    exp = E.get_experiment("robust")
    assert exp.attack == "autoattack" and exp.default_runs == 1 and "RobustBench" in exp.source
    assert [r.name for r in exp.rows] == list(ROBUSTBENCH)
    for row in exp.rows:
        file, clean, robust = ROBUSTBENCH[row.name]
        assert row.preset == row.name and row.dataset == row.name.split("-")[0]
        assert row.paper_file == file
        assert (row.paper_clean, row.paper_robust) == (clean, robust)
        assert row.paper_error == pytest.approx(100 - clean)
        assert row.model == build_config(None, row.config(0)).model.name
    assert "TensorFlow" in exp.row("cifar10-wrn-34-10-pgd-at").note
    assert "20M generated images" in exp.row("cifar10-wrn-28-10-dm-at").note
    assert "50M generated images" in exp.row("cifar100-wrn-28-10-dm-at").note
    assert "test set" in exp.row("cifar100-wrn-34-10-at-awp").note


def test_each_run_is_attacked_at_its_training_eps_with_the_weights_robustbench_lists(tmp_path):
    plan = G.make_plan("robust", tmp_path / "g", 2, overrides())
    assert plan.attack == {"attack": "autoattack", "norm": "linf", "eps": "training eps"}
    for spec in plan.runs:
        args = list(spec.attack)
        assert args[:4] == ["eval", args[1], "--attack", "autoattack"]
        assert float(args[args.index("--eps") + 1]) == pytest.approx(TRAINING_EPS[spec.row.name])
        assert "--n" not in args  # every test image on CIFAR-10
        held = plan.resolved[spec.key].adv.holdout
        assert held == HELD_OUT.get(spec.row.name, 0)
        assert args[1] == str(spec.dir / "best" if held else spec.dir)
        assert args[args.index("--out") + 1] == str(spec.record_path)
    eps = {s.row.name: s.attack_record for s in plan.runs}
    assert eps["cifar10-wrn-34-10-trades"] == "robust-autoattack-linf-0.031.json"
    assert eps["cifar10-wrn-34-10-trades-awp"] == "robust-autoattack-linf-8_255.json"


def test_a_scaled_grid_holds_out_fewer_images_and_attacks_a_few(tmp_path):
    plan = G.make_plan("robust", tmp_path / "g", 1, overrides(dataset="digits", epochs=1))
    assert "adv.holdout=100" in plan.scaled and plan.attack["n"] == G.SCALED_ATTACK_IMAGES
    for spec in plan.runs:
        cfg = plan.resolved[spec.key]
        assert cfg.adv.holdout == SCALED_HELD_OUT.get(spec.row.name, 0)
        assert float(cfg.adv.eps or 0.031) == pytest.approx(TRAINING_EPS[spec.row.name])  # pixels in [0, 1]
        assert spec.attack[spec.attack.index("--n") + 1] == str(G.SCALED_ATTACK_IMAGES)
    given = overrides(dataset="digits", set=["adv.holdout=50"])
    given.values["adv.holdout"] = 50
    plan = G.make_plan("robust", tmp_path / "h", 1, given, rows=["cifar10-wrn-34-10-pgd-at"])
    assert plan.resolved["cifar10-wrn-34-10-pgd-at/seed-0"].adv.holdout == 50  # as given


def test_gpu_hours_count_the_attacks_passes_in_training():
    """A step of PGD-AT with K = 10 attack steps costs 11 plain steps, TRADES 12, TRADES + AWP 13: the ratio of
    a run's FLOPs to those of the same preset without --adv (the test passes cost the same in both)."""
    exp = E.get_experiment("robust")
    plain_off = (("adv.method", "none"), ("adv.eps", None), ("adv.steps", None), ("adv.step_size", None),
                 ("adv.holdout", 0), ("adv.awp", 0.0), ("adv.awp_warmup", None), ("adv.trades_beta", 6.0),
                 ("adv.holdout_rule", "rice"))  # fmt: skip
    for row, passes in zip(exp.rows, (11, 11, 12, 13, 12, 12, 13, 12), strict=True):
        plain = E.Row(row.name + "-plain", row.label, row.model, row.dataset, None, preset=row.preset,
                      settings=plain_off)  # fmt: skip
        epochs = build_config(None, row.config(0)).schedule.epochs
        macs = forward_macs(row.model)
        train, test = 6 * macs * 50_000, 2 * macs * 10_000
        # AT-AWP's best epoch on the 10,000 test images: PGD-20 and the pass of its loss, after every epoch
        chosen_on_test = 6 * macs * 10_000 * 21 if row.name == "cifar100-wrn-34-10-at-awp" else 0
        assert E.run_flops(row) == pytest.approx(epochs * (passes * train + chosen_on_test + test))
        assert E.run_flops(row) / E.run_flops(plain) == pytest.approx(
            (passes * train + chosen_on_test + test) / (train + test)
        )
        assert E.gpu_hours(row) / E.gpu_hours(plain) == pytest.approx(E.run_flops(row) / E.run_flops(plain))
    assert E.forward_macs("wrn-34-20") == forward_macs("wrn-34-20")


def test_reproduce_list_gives_the_robust_gpu_hours(capsys):
    assert wrn_main(["reproduce", "list"]) == 0
    out = capsys.readouterr().out
    line = next(ln.split() for ln in out.splitlines() if ln.startswith("robust "))
    exp = E.get_experiment("robust")
    assert int(line[1]) == 8 and float(line[4].replace(",", "")) == pytest.approx(
        E.experiment_gpu_hours(exp), abs=0.5
    )
    assert "K + 1 with PGD-AT, K + 2 with TRADES" in out


def test_the_scaled_grid_trains_attacks_reports_and_attacks_nothing_again(tmp_path, capsys, monkeypatch):
    """`wrn reproduce robust --dataset digits --epochs 1 --runs 1` with WRN-10-1, of a row that keeps its best
    epoch (PGD-AT) and one that does not (TRADES, eps 0.031): each run trained then attacked by AutoAttack (10
    images here), the report beside RobustBench's, and a rerun that neither trains nor attacks; a record
    removed is the only attack a rerun makes."""
    pytest.importorskip("pyautoattack")
    monkeypatch.setattr(G, "SCALED_ATTACK_IMAGES", 10)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # AutoAttack's many small steps: threads only get in the way
    rows = {"cifar10-wrn-34-10-pgd-at": "8/255", "cifar10-wrn-34-10-trades": "0.031"}
    out = tmp_path / "robust"
    cmd = ["reproduce", "robust", "--dataset", "digits", "--epochs", "1", "--runs", "1", "--rows", ",".join(rows),
           "--set", "model.name=wrn-10-1", "--set", "dataset.workers=0", "--out", str(out)]  # fmt: skip
    assert wrn_main(cmd) == 0, capsys.readouterr().out
    said = capsys.readouterr().out
    assert said.count(" attack cifar10-") == 2 and "2 of 2 runs done" in said
    assert said.count("; AutoAttack: clean ") == 2 and "% of 10 images" in said
    records = {}
    for name, eps in rows.items():
        run = out / name / "seed-0"
        (record,) = run.glob("robust-autoattack-linf-*.json")
        data = json.loads(record.read_text())
        assert data["n_points"] == 10 and float(data["autoattack_acc"]) <= float(data["clean_acc"])
        assert data["eps"] == eps
        log = (out / "logs" / f"{name}-seed-0.log").read_text()
        assert (f"eval {run / 'best'} --attack" in log) == ("pgd-at" in name)
        records[name] = (record, record.stat().st_mtime_ns)

    assert wrn_main(["report", str(out), "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    html = (tmp_path / "r" / "report.html").read_text()
    for head in (
        "RobustBench clean (%)",
        "ours clean (%)",
        "RobustBench AutoAttack (%)",
        "ours AutoAttack (%)",
    ):
        assert head in md and f'data-label="{head}"' in html  # a card of "column: value" lines on a phone
    pgd = next(ln for ln in md.splitlines() if ln.startswith("| WRN-34-10 + PGD-AT"))
    assert "87.14" in pgd and "44.04" in pgd and "best epoch (RUN/best)" in pgd and "| 10 |" in pgd
    trades = next(ln for ln in md.splitlines() if ln.startswith("| WRN-34-10 + TRADES |"))
    assert "84.92" in trades and "53.08" in trades and "last epoch" in trades and "0.031" in trades
    assert "held-out images for early stopping 1000 → 100" in md
    assert "AutoAttack's test images all → the first 10" in md
    assert "Zhang2019Theoretically.json" in md and "TensorFlow" in md

    capsys.readouterr()
    assert wrn_main(cmd) == 0
    again = capsys.readouterr().out
    assert " attack " not in again and " start " not in again and "0 trained now" in again
    assert all(r.stat().st_mtime_ns == t for r, t in records.values())

    records["cifar10-wrn-34-10-trades"][0].unlink()  # a grid killed between training and its attack
    assert wrn_main(cmd) == 0
    last = capsys.readouterr().out
    assert last.count(" attack ") == 1 and " start " not in last and " resume " not in last
    assert "(0 trained now, 1 trained before and attacked now, 1 before)" in last
    assert records["cifar10-wrn-34-10-trades"][0].is_file()
    assert records["cifar10-wrn-34-10-pgd-at"][0].stat().st_mtime_ns == records["cifar10-wrn-34-10-pgd-at"][1]


def test_a_grid_that_attacks_without_the_attack_package_is_refused_before_it_trains(
    tmp_path, capsys, monkeypatch
):
    """Without pyautoattack the grid would train every run and only then fail each attack: it is refused
    first, in one sentence, and nothing is written."""
    import importlib.util

    from conftest import one_line_error

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pyautoattack" else real(name, *a)
    )
    out = tmp_path / "grid"
    line = one_line_error(capsys, "reproduce", "robust", "--dataset", "digits", "--epochs", "1", "--runs", "1",
                          "--out", str(out))  # fmt: skip
    assert "needs the pyautoattack package" in line and "pip install 'wrn[robust]'" in line
    assert not out.exists()


def test_the_dm_row_reads_their_generated_images_from_where_the_grid_starts(tmp_path, monkeypatch):
    """The DM-AT row's file of generated images is the preset's edm_data/cifar10/1m.npz under the folder the grid
    starts in, made absolute (runs start elsewhere); a grid whose runs need it refuses to start without it, in
    one sentence naming where to get it; the file's place is no difference from the recipe in the report."""
    from wrn.errors import DataError
    from wrn.reproduce.collect import _same

    monkeypatch.chdir(tmp_path)
    name = "cifar10-wrn-28-10-dm-at"
    everything = G.make_plan("robust", tmp_path / "g", 1, overrides())
    files = {s.row.name: everything.resolved[s.key].dataset.aux_data for s in everything.runs}
    assert {k: v for k, v in files.items() if v} == {
        name: str(tmp_path / "edm_data" / "cifar10" / "1m.npz"),
        "cifar100-wrn-28-10-dm-at": str(tmp_path / "edm_data" / "cifar100" / "1m.npz"),
    }
    plan = G.make_plan("robust", tmp_path / "g", 1, overrides(), rows=["cifar10-*"])
    want = tmp_path / "edm_data" / "cifar10" / "1m.npz"
    assert not plan.scaled
    with pytest.raises(
        DataError, match=f"row {name} trains on generated images and {want} does not exist"
    ) as e:
        G.check_generated(plan)
    assert "DM-Improves-AT/resolve/main/cifar10/1m.npz" in str(e.value)
    c100 = G.make_plan("robust", tmp_path / "g", 1, overrides(), rows=["cifar100-wrn-28-10-dm-at"])
    with pytest.raises(DataError, match="DM-Improves-AT/resolve/main/cifar100/1m.npz"):
        G.check_generated(c100)
    G.check_generated(G.make_plan("robust", tmp_path / "g", 1, overrides(), rows=["*trades"]))  # not needed
    want.parent.mkdir(parents=True)
    want.write_bytes(b"")
    G.check_generated(plan)
    assert _same("dataset.aux_data", "edm_data/cifar10/1m.npz", str(want))
    assert not _same(
        "dataset.aux_data", "edm_data/cifar10/1m.npz", str(tmp_path / "edm_data/cifar100/1m.npz")
    )
    assert not _same("dataset.aux_data", "edm_data/cifar10/1m.npz", None)
    # a run trained already, waiting for its attack, reads no generated image
    monkeypatch.setattr(G.RunDir, "state", lambda self: "done")
    G.check_generated(c100)


def test_a_scaled_grid_trains_the_dm_row_without_cifar_images_unless_given_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = "cifar10-wrn-28-10-dm-at"
    plan = G.make_plan("robust", tmp_path / "g", 1, overrides(dataset="digits"), rows=[name])
    assert plan.resolved[f"{name}/seed-0"].dataset.aux_data is None
    assert "dataset.aux_data=None" in plan.scaled
    G.check_generated(plan)
    given = overrides(dataset="digits", set=["dataset.aux_data=digits.npz"])
    given.values["dataset.aux_data"] = "digits.npz"
    plan = G.make_plan("robust", tmp_path / "h", 1, given, rows=[name])
    assert plan.resolved[f"{name}/seed-0"].dataset.aux_data == "digits.npz"
