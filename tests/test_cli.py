"""The command line as a demanding user meets it: help and version, unknown options, did-you-mean, --set, the
provenance of --preset/extends, --print-config, top-5 on a data set of many classes, small messages.

Most cases run in-process through ``wrn.cli.main`` (the entry point of the ``wrn`` script) to stay fast; the
ones that must see a real process (exit codes of argparse, training) run ``python -m wrn``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import one_line_error
from conftest import run_wrn as wrn_cli
from wrn.cli import main


def test_wrn_alone_prints_the_help_and_version_prints_the_version():
    import wrn

    alone = wrn_cli()
    assert alone.returncode == 0 and alone.stdout.startswith("usage: wrn") and "COMMAND" in alone.stdout
    assert "reproduce" in alone.stdout and "bench" in alone.stdout and "predict" in alone.stdout
    version = wrn_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"wrn {wrn.__version__}"


@pytest.mark.parametrize(
    "argv, usage, hint",
    [
        (["train", "--lrr", "0.1"], "usage: wrn train", "did you mean --lr?"),
        (
            ["train", "--preset", "demo", "--epoch", "1"],
            "usage: wrn train",
            "did you mean --epochs?",
        ),  # no prefixes
        (["models", "--filtr", "x"], "usage: wrn models", "did you mean --filter?"),
        (["eval", "run", "--bach-size", "4"], "usage: wrn eval", "did you mean --batch-size?"),
    ],
)
def test_unknown_options_get_their_command_s_usage_and_the_closest_option(argv, usage, hint):
    proc = wrn_cli(*argv)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    first, second = proc.stderr.splitlines()  # the sentence first, then one short usage line
    assert first.startswith(usage.replace("usage: ", "") + ": error:") and hint in first
    assert second.startswith(usage) and "--help" in second
    assert "usage: wrn [-h]" not in proc.stderr  # not the top-level usage


def test_did_you_mean_for_presets_and_config_keys_by_similarity(capsys, tmp_path):
    err = one_line_error(capsys, "train", "--preset", "cifar100-wrn-28-1O")
    assert "did you mean cifar100-wrn-28-10" in err
    err = one_line_error(capsys, "train", "--preset", "demo", "--set", "optim.wieght_decay=0")
    assert "unknown config key 'optim.wieght_decay' (did you mean optim.weight_decay?)" in err
    assert "docs/" not in err and "src/" not in err  # pointers to what the user has, not to the source tree


def test_set_and_its_option_together_are_refused_and_set_takes_lists(capsys, tmp_path):
    err = one_line_error(capsys, "train", "--preset", "demo", "--set", "optim.lr=0.05", "--lr", "0.2")
    assert "--set optim.lr=... and --lr both set optim.lr" in err
    assert main(["train", "--preset", "demo", "--set", "schedule.milestones=5,10", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["schedule"]["milestones"] == [5, 10]


def test_print_config_shows_what_would_run_and_starts_nothing(capsys, tmp_path):
    out = tmp_path / "never"
    argv = ["train", "--preset", "cifar10-wrn-28-10", "--epochs", "10", "--out", str(out), "--print-config"]
    assert main(argv) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["schedule"]["milestones"] == [4, 7, 9] and printed["model"]["dropout"] == 0.0
    assert printed["run"]["device"] in ("cpu", "cuda") and printed["run"]["amp"] in ("off", "bf16")
    assert not out.exists()


def test_preset_and_extends_conflict_and_a_preset_key_acts_as_extends(capsys, tmp_path):
    other = tmp_path / "my.yaml"
    other.write_text("extends: demo\n")
    err = one_line_error(capsys, "train", "--preset", "cifar10-wrn-16-4", "--config", str(other))
    assert "--preset cifar10-wrn-16-4 and the config file's 'extends: demo' name two different recipes" in err
    keyed = tmp_path / "keyed.yaml"
    keyed.write_text("preset: demo\noptim:\n  lr: 0.05\n")
    assert main(["train", "--config", str(keyed), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["preset"], printed["dataset"]["name"], printed["optim"]["lr"]) == ("demo", "digits", 0.05)


def test_fp16_on_a_cpu_suggests_off(capsys):
    err = one_line_error(capsys, "train", "--preset", "demo", "--amp", "fp16", "--device", "cpu")
    assert err == (
        "wrn train: error: --amp fp16 needs a CUDA GPU but the device is 'cpu'; use --amp off (fp32: on most "
        "CPUs bf16 is slower than fp32)"
    )


def test_a_missing_data_set_says_download_as_the_command_line_spells_it(capsys, tmp_path):
    err = one_line_error(capsys, "train", "--preset", "cifar10-wrn-16-4", "--data-dir", str(tmp_path / "no"))
    assert "--download" in err and "download=True in Python" in err


def test_a_failed_download_from_the_command_line_leaves_no_folder(capsys, tmp_path, http_server, monkeypatch):
    from wrn.data import registry
    from wrn.data.registry import RemoteFile

    served, base, _ = http_server
    (served / "cifar-10-python.tar.gz").write_bytes(b"not the archive")
    url = f"{base}/cifar-10-python.tar.gz"
    monkeypatch.setitem(registry.ARCHIVES, "cifar10", RemoteFile(url, "cifar-10-python.tar.gz", "0" * 32))
    root = tmp_path / "deep" / "data"
    assert main(["data", "download", "cifar10", "--root", str(root)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the download's progress bar
    assert last.startswith("wrn data: error: ") and url in last and "md5" in last
    assert not (tmp_path / "deep").exists()


def test_the_help_lists_every_experiment_and_every_checkpoint_format(capsys):
    """The lists come from their registries: an experiment or a format added shows in the help."""
    from wrn.models.checkpoints import FORMATS
    from wrn.reproduce.experiments import EXPERIMENTS

    def helped(*argv: str) -> str:
        with pytest.raises(SystemExit) as done:
            main([*argv, "--help"])
        assert done.value.code == 0
        return " ".join(capsys.readouterr().out.split())

    assert "robustness" in FORMATS and {"cutout", "autoaugment", "sam"} <= set(EXPERIMENTS)
    assert f"convert import a checkpoint of other code: {', '.join(FORMATS)}" in helped()
    assert f"EXPERIMENT {', '.join(EXPERIMENTS)}, or list (which describes them)" in helped("reproduce")


def test_a_warning_of_torch_shows_once_however_often_it_is_given(tmp_path):
    """More loader workers than cores: torch warns from two places of each DataLoader (and builds one per
    epoch for the per-image policy); `wrn train` shows it on one line, once."""
    import os
    import subprocess
    import sys

    from conftest import WRN_ENV

    one_core = min(os.sched_getaffinity(0))
    done = subprocess.run(
        [sys.executable, "-m", "wrn", "train", "--preset", "demo", "--model", "wrn-10-1", "--epochs", "2",
         "--policy", "autoaugment", "--workers", "2", "--no-progress", "--out", str(tmp_path / "run")],
        env=WRN_ENV, capture_output=True, text=True, timeout=300,
        preexec_fn=lambda: os.sched_setaffinity(0, {one_core}),  # 2 workers for 1 core
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if "This DataLoader will create 2 worker processes" in ln]
    assert len(lines) == 1 and lines[0].startswith("warning: "), done.stderr


def test_convert_names_its_format_argument_alike_in_help_and_errors():
    helped = wrn_cli("convert", "--help")
    usage = " ".join(helped.stdout.split("\n\n")[0].split())
    assert usage.startswith("usage: wrn convert [-h] [--weights {ema,model}] [--act {silu,relu}]")
    assert "[--dataset {cifar10,cifar100,svhn}] [--dropout DROPOUT] [--force]" in usage
    assert "FORMAT SRC OUT_DIR" in helped.stdout
    wrong = wrn_cli("convert", "keras", "a", "b")
    assert wrong.returncode == 2 and "argument FORMAT: invalid choice: 'keras'" in wrong.stderr


def test_python_train_is_quiet_and_returns_the_model_in_eval_mode(tmp_path, capfd):
    from wrn.train import build_config, train

    cfg = build_config("demo", overrides={"model.name": "wrn-10-1", "schedule.epochs": 1})
    result = train(cfg, tmp_path / "quiet")
    assert result.model.training is False
    captured = capfd.readouterr()
    assert captured.out == ""  # nothing printed unless asked (verbose=True prints what `wrn train` prints)


def test_one_epoch_is_singular_and_top5_is_reported_for_many_classes(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "many"
    for split in ("train", "val"):
        for c in range(12):  # more than 10 classes: top-5 is reported
            folder = root / split / f"c{c:02d}"
            folder.mkdir(parents=True)
            for i in range(3 if split == "train" else 1):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    run = tmp_path / "run"
    args = [
        "train",
        "--model",
        "wrn-10-1",
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(root),
        "--epochs",
        "1",
    ]
    proc = wrn_cli(*args, "--batch-size", "8", "--no-progress", "--out", str(run))
    assert proc.returncode == 0, proc.stderr
    assert "1 epoch of 4 steps" in proc.stdout and "1 epochs" not in proc.stdout
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 <= record["test_top5_error"] <= record["test_error"] <= 100
    assert record["test_top5"] == pytest.approx(100 - record["test_top5_error"])
    assert f"top-5 error {record['test_top5_error']:.2f}%" in proc.stdout
    evaluated = wrn_cli("eval", str(run))
    assert evaluated.returncode == 0 and f"top-5 error {record['test_top5_error']:.2f}%" in evaluated.stdout
    config = yaml.safe_load((run / "config.yaml").read_text())
    # the size the folder's images were read at: what the data gave, in the provenance; the user's section as given
    assert config["provenance"]["image_size"] == 8 and config["dataset"]["image_size"] is None
