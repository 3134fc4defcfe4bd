"""``wrn train`` / ``wrn eval`` / ``wrn presets`` through the real command line (subprocesses)."""

from __future__ import annotations

import json
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import one_line_error, wrn_here
from conftest import run_wrn as wrn_cli

# One thread per process: the tests run several at once on small machines.


# name -> (arguments, words the message must contain). "{tmp}" is a fresh directory per session.
BAD_INPUTS = {
    "unknown-preset": (["train", "--preset", "cifar10-wrn-99-1"], "unknown preset 'cifar10-wrn-99-1'"),
    "unknown-option": (
        ["train", "--preset", "demo", "--frobnicate", "3"],
        "unrecognized arguments: --frobnicate",
    ),
    "unknown-model": (
        ["train", "--preset", "demo", "--model", "vgg-16", "--out", "{tmp}/unknown-model"],
        "unknown model 'vgg-16'",
    ),
    "epochs-zero": (["train", "--preset", "demo", "--epochs", "0"], "schedule.epochs = 0"),
    "lr-zero": (["train", "--preset", "demo", "--lr", "0"], "optim.lr = 0"),
    "batch-size-zero": (["train", "--preset", "demo", "--batch-size", "0"], "optim.batch_size = 0"),
    "dropout-one": (["train", "--preset", "demo", "--dropout", "1"], "model.dropout = 1"),
    "fp16-on-cpu": (
        ["train", "--preset", "demo", "--amp", "fp16", "--device", "cpu"],
        "fp16 needs a CUDA GPU",
    ),
    "resume-no-checkpoint": (["train", "--resume", "{tmp}/empty"], "holds no checkpoint.pt"),
    "resume-corrupt": (["train", "--resume", "{tmp}/corrupt"], "is corrupt or not a training checkpoint"),
    "absent-dataset": (
        ["train", "--preset", "cifar10-wrn-16-4", "--data-dir", "{tmp}/nodata", "--out", "{tmp}/absent-out"],
        "does not exist",
    ),
    "existing-out": (["train", "--preset", "demo", "--out", "{tmp}/existing"], "already exists"),
}
# More bad input, checked in-process through the same entry point (wrn.cli.main) to keep the suite fast.
MORE_BAD_INPUTS = {
    "unknown-dataset": (["train", "--preset", "demo", "--dataset", "mnist"], "dataset.name = 'mnist'"),
    "lr-negative": (["train", "--preset", "demo", "--lr", "-0.1"], "optim.lr = -0.1"),
    "dropout-negative": (["train", "--preset", "demo", "--dropout", "-0.2"], "model.dropout = -0.2"),
    "resume-missing-dir": (["train", "--resume", "{tmp}/nowhere"], "is not a directory"),
    "resume-with-changes": (["train", "--resume", "{tmp}/corrupt", "--lr", "0.5"], "--lr cannot be used"),
    "nothing-to-train": (["train", "--epochs", "3"], "--preset"),
    "bad-checkpoint-every": (
        ["train", "--preset", "demo", "--checkpoint-every", "soon"],
        "--checkpoint-every",
    ),
    "bad-set": (["train", "--preset", "demo", "--set", "optim.lr"], "KEY=VALUE"),
    "eval-missing": (["eval", "{tmp}/nowhere"], "nowhere does not exist"),
    "eval-empty": (["eval", "{tmp}/empty"], "holds neither model.safetensors"),
    "eval-bad-dataset": (["eval", "{tmp}/corrupt", "--dataset", "mnist"], "dataset.name = 'mnist'"),
    "presets-unknown": (["presets", "nope"], "unknown preset 'nope'"),
    "lr-boolean": (
        ["train", "--preset", "demo", "--lr", "true"],
        "optim.lr = 'true' is invalid: input should be a valid number, unable to parse string as a number",
    ),
    "batch-size-boolean": (
        ["train", "--preset", "demo", "--batch-size", "yes"],
        "optim.batch_size = 'yes' is invalid: input should be a valid integer, unable to parse string as an integer",
    ),
    "sync-bn-on-cpu": (["train", "--preset", "demo", "--sync-bn", "--device", "cpu"], "--sync-bn needs CUDA"),
}


def _make_bad_dirs(tmp: Path) -> None:
    (tmp / "empty").mkdir()
    (tmp / "corrupt").mkdir()
    (tmp / "corrupt" / "checkpoint.pt").write_bytes(b"PK\x03\x04 this is not a checkpoint")
    (tmp / "existing").mkdir()
    (tmp / "existing" / "notes.txt").write_text("keep me")


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    _make_bad_dirs(tmp)
    before = {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file()}

    def one(item):
        name, (args, _) = item
        # Run from tmp: a case that wrongly started training would leave runs/ there, which `after` shows.
        return name, wrn_cli(*[a.replace("{tmp}", str(tmp)) for a in args], cwd=tmp)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(pool.map(one, BAD_INPUTS.items()))
    after = {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file()}
    return results, before, after, tmp


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_gives_one_sentence_and_exit_code_2(name, bad_input_results):
    results, *_ = bad_input_results
    proc = results[name]
    words = BAD_INPUTS[name][1]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert words in proc.stderr
    # argparse's mistakes: the sentence first, then one short usage line
    last = proc.stderr.strip().splitlines()[0 if name == "unknown-option" else -1]
    assert last.startswith("wrn") and words in last
    assert proc.stderr.strip().count("\n") == (name == "unknown-option"), proc.stderr


def test_bad_input_overwrites_and_creates_nothing(bad_input_results):
    _, before, after, tmp = bad_input_results
    assert before == after
    assert not (tmp / "unknown-model").exists()
    assert not (tmp / "absent-out").exists()


@pytest.mark.parametrize("name", list(MORE_BAD_INPUTS))
def test_more_bad_input_in_process(name, tmp_path, capsys):
    from wrn.cli import main

    _make_bad_dirs(tmp_path)
    args, words = MORE_BAD_INPUTS[name]
    assert main([a.replace("{tmp}", str(tmp_path)) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and err.count("\n") == 0, err
    assert err.startswith(f"wrn {args[0]}: error: ")


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_demo_end_to_end_short(tmp_path):
    """A short demo: 2 epochs of WRN-16-4 on the digits reach >= 95%; every file of the run is readable."""
    run = tmp_path / "demo"
    proc = wrn_cli("train", "--preset", "demo", "--epochs", "2", "--out", str(run))
    assert proc.returncode == 0, proc.stderr
    assert "done: test error" in proc.stdout

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    keys = {"epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "test_error", "n_parameters"}
    keys |= {"train_time", "test_time", "images_per_s"}
    assert keys <= set(records[-1])
    assert records[-1]["test_acc"] >= 95.0
    assert records[-1]["test_error"] == pytest.approx(100 - records[-1]["test_acc"])
    # WRN-16-4 (2,748,890 for RGB, docs/models.md) with a 1-channel stem: 2 * 16 * 3 * 3 fewer weights.
    assert records[-1]["n_parameters"] == 2_748_890 - 2 * 16 * 9

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    event_dirs = {p.parent for p in run.rglob("events.out.tfevents.*")}
    scalars = {}
    for d in event_dirs:
        acc = EventAccumulator(str(d))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars[tag] = [e.value for e in acc.Scalars(tag)]
    assert any(len(v) == 2 for v in scalars.values())
    assert _png_size(run / "curves.png")[0] > 100

    import yaml

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (
        config["preset"] == "demo" and config["run"]["device"] == "cpu" and config["schedule"]["epochs"] == 2
    )

    import wrn

    model = wrn.load_model(run)
    assert model.config["name"] == "wrn-16-4"

    proc = wrn_cli("eval", str(run), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["acc"] == pytest.approx(records[-1]["test_acc"])
    assert result["n"] == 360


def test_presets_lists_every_recipe():
    proc = wrn_cli("presets")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    names = [line.split()[0] for line in lines]
    assert names[0] == "demo"
    for name in ("cifar10-wrn-28-10", "cifar10-wrn-28-10-dropout", "cifar100-wrn-40-4-zca"):
        assert name in names
    for name in ("svhn-wrn-16-8-dropout", "imagenet-wrn-50-2", "cifar100-wrn-40-10-dropout"):
        assert name in names
    assert all(len(line.split(None, 1)) == 2 for line in lines)
    shown = wrn_cli("presets", "svhn-wrn-16-8-dropout")
    assert "dropout: 0.4" in shown.stdout and "lr: 0.01" in shown.stdout


@pytest.mark.slow
def test_full_demo_reaches_97_percent_in_under_two_minutes(tmp_path):
    """The documented first run: `wrn train --preset demo` (the short version above runs by default)."""
    run = tmp_path / "demo"
    proc = wrn_cli(
        "train",
        "--preset",
        "demo",
        "--out",
        str(run),
        timeout=600,
        env={"OMP_NUM_THREADS": str(os.cpu_count() or 1)},
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["test_acc"] >= 97.0
    assert sum(r["train_time"] for r in records) < 120.0
    assert (run / "curves.png").is_file()


def test_a_repacked_cifar_copy_trains_only_with_no_verify(tmp_path):
    from test_data_files import make_cifar10

    make_cifar10(tmp_path / "data", per_batch=4)  # the real format, but not the original bytes
    args = [
        "train",
        "--preset",
        "cifar10-wrn-16-4",
        "--model",
        "wrn-10-1",
        "--data-dir",
        str(tmp_path / "data"),
    ]
    args += ["--epochs", "1", "--batch-size", "4", "--no-progress"]
    refused = wrn_cli(*args, "--out", str(tmp_path / "refused"))
    assert refused.returncode == 2 and "md5" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "refused").exists()
    trained = wrn_cli(*args, "--no-verify", "--out", str(tmp_path / "run"))
    assert trained.returncode == 0, trained.stderr
    assert "md5 checks of the cifar10 files" in trained.stderr and "verify=False" in trained.stderr
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "verify: false" in config and (tmp_path / "run" / "model.safetensors").is_file()


def test_resume_refuses_fewer_epochs_than_done_and_a_new_dataset_gets_its_own_defaults(tmp_path):
    from wrn.train import build_config, train
    from wrn.train.resolve import resolve

    run = tmp_path / "run"
    cfg = build_config(
        "demo", overrides={"model.name": "wrn-10-1", "schedule.epochs": 2, "run.progress": False}
    )
    train(cfg, run)
    proc = wrn_cli("train", "--resume", str(run), "--epochs", "1")
    assert proc.returncode == 2 and "fewer than the 2 epochs" in proc.stderr
    assert "epochs: 2" in (run / "config.yaml").read_text()
    switched = resolve(build_config("demo", overrides={"dataset.name": "cifar10"}))
    assert (switched.dataset.augment, switched.dataset.normalization) == ("flip-crop", "cifar10")
    kept = resolve(build_config("demo", overrides={"dataset.name": "cifar10", "dataset.augment": "crop"}))
    assert kept.dataset.augment == "crop"
    (tmp_path / "c.yaml").write_text("dataset:\n  name: cifar10\n")
    from_file = resolve(build_config("demo", tmp_path / "c.yaml"))
    assert (from_file.dataset.augment, from_file.dataset.normalization) == ("flip-crop", "cifar10")


def test_values_that_overflowed_and_machines_overrun_are_one_sentence(capsys, tmp_path):
    """Each printed a traceback or forked until memory ran out: now --print-config and wrn train refuse them."""
    cases = {
        ("--lr", "4e38"): "optim.lr = 4e+38 is invalid: input should be less than or equal to 1000000",
        ("--weight-decay", "1e308"): "optim.weight_decay = 1e+308 is invalid: input should be less than or equal "
        "to 1000000",
        ("--cutout", "99999999999999999999999"): "dataset.cutout = 99999999999999999999999 is invalid: input "
        "should be less than or equal to 4096",
        ("--workers", "100000"): "dataset.workers = 100000 is invalid: input should be less than or equal to 1024",
    }  # fmt: skip
    for argv, said in cases.items():
        err = one_line_error(capsys, "train", "--preset", "demo", *argv, "--print-config")
        assert err == f"wrn train: error: {said}"
    import os

    cores, many = os.cpu_count() or 1, max(16, 8 * (os.cpu_count() or 1)) + 1
    if many <= 1024:
        err = one_line_error(capsys, "train", "--preset", "demo", "--workers", str(many), "--print-config")
        assert err == (
            f"wrn train: error: --workers {many} is more loader processes than this machine runs well "
            f"({cores} CPU cores); give at most {many - 1}"
        )
    listed = tmp_path / "list-key.yaml"
    listed.write_text("extends: demo\n? [a, b]\n: 1\n")
    err = one_line_error(capsys, "train", "--config", listed, "--print-config")
    assert (
        err == f"wrn train: error: config file {str(listed)!r}: the key ['a', 'b'] (line 2) is not a name; "
        "write each key as a word"
    )


def test_a_switch_to_a_data_set_of_its_own_size_forgets_the_recipe_s_image_size(capsys, tmp_path):
    """ImageNet's 224 no longer reaches the 8x8 digits: neither wrn train nor a grid start what then fails."""
    import yaml

    proc = wrn_here(capsys, "train", "--preset", "imagenet-wrn-50-2", "--dataset", "digits", "--print-config")
    assert proc.returncode == 0 and yaml.safe_load(proc.stdout)["dataset"]["image_size"] == 8
    proc = wrn_here(
        capsys, "reproduce", "table7", "--dataset", "digits", "--dry-run", "--out", tmp_path / "t7"
    )
    assert proc.returncode == 0, proc.stderr
    assert "image_size: null" in proc.stdout and "image_size: 224" not in proc.stdout
    err = one_line_error(capsys, "train", "--preset", "demo", "--image-size", "224", "--print-config")
    assert err == (
        "wrn train: error: --image-size 224 applies to image folders and ImageNet; the digits images are 8x8: "
        "leave it out"
    )


def test_a_run_folder_killed_while_its_config_was_written_starts_afresh(capsys, tmp_path):
    """Only a temporary of config.yaml: 'unstarted' for every command, so wrn train --out takes it (before:
    the grid called it unstarted, wrn train refused it as not empty, and the grid could not continue)."""
    from wrn.train.rundir import RunDir

    run = tmp_path / "killed"
    run.mkdir()
    (run / ".config.yaml.a1B2c3D4.tmp").write_text("preset: de")
    assert RunDir(run).state() == "unstarted"
    args = [
        "train",
        "--preset",
        "demo",
        "--model",
        "wrn-10-1",
        "--epochs",
        "1",
        "--no-progress",
        "--out",
        run,
    ]
    assert wrn_here(capsys, *args).returncode == 0
    assert RunDir(run).state() == "done" and not (run / ".config.yaml.a1B2c3D4.tmp").exists()
