"""What a run folder says and how `wrn train` treats an existing one: the schedule it prints, the fully resolved
config.yaml with its provenance, runs killed before their first checkpoint, finished runs, edited configs."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from conftest import metrics, one_line_error, snapshot, wrn_here
from conftest import run_wrn as wrn_cli

SMALL = ["--preset", "demo", "--model", "wrn-10-1", "--no-progress"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished 2-epoch run, shared by the tests that only read it or must leave it unchanged."""
    run = tmp_path_factory.mktemp("runs") / "done"
    proc = wrn_cli("train", *SMALL, "--epochs", "2", "--out", str(run))
    assert proc.returncode == 0, proc.stderr
    return run, proc


def test_the_header_prints_the_scaled_schedule(finished):
    _, proc = finished
    # the demo's 15, 22, 27 of 30 epochs, scaled to a 2-epoch run: one drop, at epoch 2; the package placed
    # it, so no warning about it (only milestones the user gives are warned about)
    assert "lr 0.1, x0.2 at epochs 2 of 2" in proc.stdout
    assert "milestone" not in proc.stderr
    assert re.search(
        r"\(1 thread\)|\(\d+ threads\)", proc.stdout
    )  # the header says how many CPU threads train


def test_config_yaml_holds_every_value_that_ran_and_what_ran_it(finished):
    run, _ = finished
    config = yaml.safe_load((run / "config.yaml").read_text())
    nulls = [
        f"{section}.{key}"
        for section, values in config.items()
        if isinstance(values, dict)
        for key, value in values.items()
        # None is a value there: "off", the network's own initialisation, no starting weights, no generated
        # data, the data set's own training split, every image labelled, the network's BN momentum from the
        # first step; and the attack's budget of adversarial training when it is off (resolve fills it in
        # otherwise)
        if value is None
        and key
        not in (
            "checkpoint_every_steps",
            "init",
            "init_from",
            "aux_data",
            "train_split",
            "labels",
            "bn_momentum_first",
        )
        and not (section == "adv" and config["adv"]["method"] == "none")
    ]
    assert nulls == []
    assert config["model"]["dropout"] == 0.0
    assert config["optim"]["eval_batch_size"] == 128  # twice the training batch of 64
    assert config["dataset"]["image_size"] == 8
    assert config["schedule"]["milestones"] == [2]
    assert config["run"]["eval_amp"] == "off"
    import torch

    import wrn

    prov = config["provenance"]
    assert (prov["wrn"], prov["torch"]) == (wrn.__version__, torch.__version__)
    # the fixture's command, as typed: python -m wrn train ...
    assert (
        prov["command"]
        == f"python -m wrn train --preset demo --model wrn-10-1 --no-progress --epochs 2 --out {run}"
    )
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {(r["train_precision"], r["test_precision"]) for r in records} == {("fp32", "fp32")}
    assert "test_top5" not in records[-1]  # 10 classes: top-1 only


def test_resume_of_a_finished_run_says_so_and_changes_nothing(finished):
    run, _ = finished
    before = snapshot(run)
    proc = wrn_cli("train", "--resume", str(run))
    assert proc.returncode == 0, proc.stderr
    assert "is complete: 2 of 2 epochs trained" in proc.stdout
    assert f"wrn train --resume {run} --epochs N" in proc.stdout
    assert "continuing" not in proc.stdout
    assert snapshot(run) == before


def test_a_run_killed_before_its_first_checkpoint_starts_afresh(tmp_path, capsys):
    from wrn.cli import main

    run = tmp_path / "early"
    run.mkdir()
    assert main(["presets", "demo"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    data["model"]["name"] = "wrn-10-1"
    data["schedule"]["epochs"] = 1
    data["run"]["progress"] = False
    (run / "config.yaml").write_text(yaml.safe_dump(data))
    (run / "tensorboard").mkdir()
    (run / ".checkpoint.pt.abc12345.tmp").write_bytes(b"torn")
    resumed = wrn_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert "never reached its first checkpoint: starting it afresh" in resumed.stdout
    assert (run / "model.safetensors").is_file() and not (run / ".checkpoint.pt.abc12345.tmp").exists()
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["name"] == "wrn-10-1"

    again = tmp_path / "again"
    again.mkdir()
    (again / "config.yaml").write_text(yaml.safe_dump(data))
    out = wrn_cli("train", *SMALL, "--epochs", "1", "--out", str(again))
    assert out.returncode == 0, out.stderr
    assert len((again / "metrics.jsonl").read_text().splitlines()) == 1


def test_edits_to_config_yaml_are_named_ignored_and_kept_aside(tmp_path):
    run = tmp_path / "run"
    assert wrn_cli("train", *SMALL, "--epochs", "1", "--out", str(run)).returncode == 0
    text = (run / "config.yaml").read_text()
    edited = text.replace("lr: 0.1", "lr: 0.5").replace("epochs: 1\n", "epochs: 3\n")
    assert edited != text
    (run / "config.yaml").write_text(edited)
    proc = wrn_cli("train", "--resume", str(run), "--epochs", "2")
    assert proc.returncode == 0, proc.stderr
    warning = [line for line in proc.stderr.splitlines() if "was edited" in line]
    assert len(warning) == 1
    assert (
        "optim.lr, schedule.epochs" in warning[0] and "ignored" in warning[0] and "--epochs N" in warning[0]
    )
    assert (run / "config.edited.yaml").read_text() == edited  # the user's file is kept
    now = yaml.safe_load((run / "config.yaml").read_text())
    assert (now["optim"]["lr"], now["schedule"]["epochs"]) == (0.1, 2)  # what ran
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records] == [0.1, 0.1]


def test_eval_names_a_channel_mismatch_and_takes_a_split(finished, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    def wrn_eval(*args):  # in this process: five start-ups of torch saved
        return wrn_here(capsys, "eval", *args)

    run, _ = finished
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(10):
            folder = tmp_path / "rgb" / split / f"class{c}"
            folder.mkdir(parents=True)
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / "0.png")
    proc = wrn_eval(str(run), "--dataset", "imagefolder", "--data-dir", str(tmp_path / "rgb"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "takes grayscale (1 channel) images but imagefolder" in proc.stderr
    assert "gives RGB (3 channels) ones" in proc.stderr and proc.stderr.count("\n") == 1

    test = json.loads(wrn_eval(str(run), "--json").stdout)
    on_train = json.loads(wrn_eval(str(run), "--split", "train", "--json").stdout)
    assert (test["split"], test["n"]) == ("test", 360) and (on_train["split"], on_train["n"]) == (
        "train",
        1437,
    )
    fetched = wrn_eval(str(run), "--download", "--data-dir", str(tmp_path / "d"), "--json")
    assert fetched.returncode == 0, fetched.stderr  # the digits need no download: the flags are accepted
    assert json.loads(fetched.stdout)["acc"] == test["acc"]
    bad = wrn_eval(str(run), "--split", "extra")
    assert bad.returncode == 2 and "digits has no split 'extra'; choose one of train, test" in bad.stderr


def test_extending_a_run_keeps_the_milestones_it_started_with(tmp_path):
    run = tmp_path / "run"
    assert wrn_cli("train", *SMALL, "--epochs", "3", "--out", str(run)).returncode == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["schedule"]["milestones"] == [
        2,
        3,
    ]  # 15,22,27 of 30
    proc = wrn_cli("train", "--resume", str(run), "--epochs", "5")
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load((run / "config.yaml").read_text())["schedule"]
    assert (config["epochs"], config["milestones"]) == (5, [2, 3])  # not moved to 0.5, 0.73, 0.9 of 5
    lrs = [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([0.1, 0.02, 0.004, 0.004, 0.004])


def test_init_from_starts_a_run_from_a_finished_run_s_weights(finished, tmp_path, capsys):
    """--init-from: a fine-tuning run at a negligible lr starts where the finished run ended (its first epoch's
    training loss is the finished run's last, not a fresh network's 2.3), and says so in its config."""
    from wrn.cli import main

    done, _ = finished
    first = metrics(done)[-1]
    out = tmp_path / "tuned"
    args = ["train", *SMALL, "--epochs", "1", "--lr", "1e-9", "--init-from", str(done), "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    (tuned,) = metrics(out)
    assert tuned["train_loss"] < 0.6  # a fresh network's first epoch: about 2 (the finished run's own, below)
    assert metrics(done)[0]["train_loss"] > 1.0
    assert abs(tuned["test_error"] - first["test_error"]) < 3.0, (tuned, first)
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["init_from"] == str(done)


def test_init_from_keeps_the_network_and_replaces_the_classifier_for_other_classes(finished, capsys):
    import torch

    import wrn
    from wrn.train.build import load_initial_weights
    from wrn.train.compose import build_config

    done, _ = finished
    cfg = build_config("demo", overrides={"model.name": "wrn-10-1", "model.init_from": str(done)})
    model = wrn.create_model("wrn-10-1", num_classes=3, in_channels=1)
    head = model.fc.weight.detach().clone()
    load_initial_weights(model, cfg)
    theirs = wrn.load_model(done).state_dict()
    ours = model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in theirs.items() if not k.startswith("fc."))
    assert ours["fc.weight"].shape == (3, 64) and torch.equal(ours["fc.weight"], head)  # its own, fresh
    err = one_line_error(
        capsys, "train", *SMALL, "--model", "wrn-16-1", "--init-from", done, "--out", done.parent / "x"
    )
    assert err == (
        f"wrn train: error: --init-from {done} holds a wrn-10-1 (blocks_per_group 1, depth 10), not this run's "
        "wrn-16-1 (blocks_per_group 2, depth 16); give --model wrn-10-1 or weights of a wrn-16-1"
    )
