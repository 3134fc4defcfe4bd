"""Run logging (metrics.jsonl + TensorBoard), training-curve plots, `wrn plot` and the epoch progress display."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import wrn.train.progress
from wrn.errors import ConfigError
from wrn.train.logging import RunLogger, read_metrics
from wrn.train.meter import EpochMeter
from wrn.train.plot import lr_drop_epochs, plot_run, plot_runs
from wrn.train.progress import EpochProgress, format_epoch_summary
from wrn.train.rundir import METRICS

SRC = Path(__file__).resolve().parents[1] / "src"


def spec_lr(epoch: int) -> float:
    """The paper's CIFAR schedule: 0.1, x0.2 at epochs 60, 120, 160 (1-indexed; epoch 60 runs at 0.02)."""
    return 0.1 * 0.2 ** sum(epoch >= m for m in (60, 120, 160))


def record(epoch: int, lr: float | None = None, error: float | None = None) -> dict:
    lr = spec_lr(epoch) if lr is None else lr
    error = 30.0 * math.exp(-epoch / 20) + 4.0 if error is None else error
    return {
        "epoch": epoch,
        "lr": lr,
        "train_loss": 1.5 * math.exp(-epoch / 15) + 0.01,
        "train_acc": 100.0 - error / 2,
        "test_loss": error / 25,
        "test_acc": 100.0 - error,
        "test_error": error,
        "n_parameters": 563930,
        "train_time": 41.5,
        "test_time": 3.25,
        "images_per_s": 1200.0,
    }


def make_run(run_dir: Path, epochs: int = 200, model: str | None = None, offset: float = 0.0) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    if model is not None:
        (run_dir / "config.yaml").write_text(f"model: {model}\ndataset: cifar10\n")
    lines = [
        json.dumps(record(e, error=30.0 * math.exp(-e / 20) + 4.0 + offset)) for e in range(1, epochs + 1)
    ]
    (run_dir / METRICS).write_text("\n".join(lines) + "\n")
    return run_dir


# ------------------------------------------------------------------------------------------------ logging
def test_metrics_round_trip(tmp_path):
    records = [record(e) for e in (1, 2, 3)]
    with RunLogger(tmp_path / "run") as log:
        for r in records[:2]:
            log.log_epoch(r)
        # Values may come straight from the device: 0-d tensors are written as plain numbers.
        log.log_epoch({**records[2], "train_loss": torch.tensor(records[2]["train_loss"])})
        # Each line is complete on disk as soon as log_epoch returns.
        assert (tmp_path / "run" / METRICS).read_text().count("\n") == 3
    back = read_metrics(tmp_path / "run")
    assert [r["epoch"] for r in back] == [1, 2, 3]
    assert back[:2] == records[:2]
    assert back[2]["train_loss"] == pytest.approx(records[2]["train_loss"])
    assert read_metrics(tmp_path / "run" / METRICS) == back


def test_resume_drops_later_epochs_and_torn_line(tmp_path):
    run = tmp_path / "run"
    with RunLogger(run) as log:
        for e in range(1, 6):
            log.log_epoch(record(e))
    with open(run / METRICS, "a") as f:
        f.write('{"epoch": 6, "lr": 0.1, "train_lo')  # killed mid-write
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2, 3, 4, 5]

    with RunLogger(run, resume_epoch=3) as log:
        assert [r["epoch"] for r in read_metrics(run)] == [1, 2, 3]
        log.log_epoch(record(4, error=9.5))
    back = read_metrics(run)
    assert [r["epoch"] for r in back] == [1, 2, 3, 4]
    assert back[3]["test_error"] == 9.5
    assert all(json.loads(line) for line in (run / METRICS).read_text().splitlines())
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_torn_line_repaired_before_appending(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / METRICS).write_text(json.dumps(record(1)) + '\n{"epoch": 2, "lr')
    with RunLogger(run) as log:
        log.log_epoch(record(2))
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2]


def test_read_metrics_errors(tmp_path):
    with pytest.raises(ConfigError, match="no metrics file at .*nothing"):
        read_metrics(tmp_path / "nothing")
    (tmp_path / METRICS).write_text('{"epoch": 1}\nnot json\n{"epoch": 3}\n')
    with pytest.raises(ConfigError, match="line 2"):
        read_metrics(tmp_path)


def test_disabled_logger_writes_nothing(tmp_path):
    with RunLogger(tmp_path / "rank1", enabled=False) as log:
        log.log_epoch(record(1))
        log.log_step(10, loss=0.5)
    assert not (tmp_path / "rank1").exists()


def test_tensorboard_scalars_and_resume(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    with RunLogger(run) as log:
        for e in range(1, 6):
            log.log_epoch(record(e, error=float(e)))
        log.log_step(100, loss=torch.tensor(0.75))
    with RunLogger(run, resume_epoch=3) as log:
        log.log_epoch(record(4, error=40.0))

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss/train", "loss/test", "accuracy/train", "accuracy/test", "error/test", "lr"} <= tags
    assert "speed/images_per_s" in tags and "epoch" not in tags
    errors = acc.Scalars("error/test")
    assert [ev.step for ev in errors] == [1, 2, 3, 4]  # epochs 4 and 5 of the first run are purged
    assert [ev.value for ev in errors] == pytest.approx([1.0, 2.0, 3.0, 40.0])
    assert acc.Scalars("lr")[0].value == pytest.approx(0.1)

    steps = EventAccumulator(str(run / "tensorboard" / "steps"))
    steps.Reload()
    (ev,) = steps.Scalars("step/loss")
    assert (ev.step, ev.value) == (100, pytest.approx(0.75))


# ------------------------------------------------------------------------------------------------ plots
def test_lr_drop_epochs():
    assert lr_drop_epochs([record(e) for e in range(1, 201)]) == [60, 120, 160]
    svhn = [{"epoch": e, "lr": 0.01 * 0.1 ** sum(e >= m for m in (80, 120))} for e in range(1, 161)]
    assert lr_drop_epochs(svhn) == [80, 120]
    assert lr_drop_epochs([{"epoch": e, "lr": 0.1} for e in range(1, 10)]) == []
    # A warm-up (lr rising) is not a drop; a record without lr is skipped.
    assert lr_drop_epochs(
        [{"epoch": 1, "lr": 0.02}, {"epoch": 2, "lr": 0.1}, {"epoch": 3}, {"epoch": 4, "lr": 0.02}]
    ) == [4]


def _assert_png(path: Path, size=(750, 1200)):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[:2] == size
    assert image[..., :3].std() > 0.05  # not a blank canvas
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_plot_run_writes_png(tmp_path):
    run = make_run(tmp_path / "wrn-40-1", model="wrn-40-1")
    path = plot_run(run)
    assert path == run / "curves.png"
    _assert_png(path)
    # Without test_error the error comes from test_acc; without config.yaml the folder names the plot.
    bare = tmp_path / "bare"
    bare.mkdir()
    rows = [{k: v for k, v in record(e).items() if k != "test_error"} for e in range(1, 30)]
    (bare / METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    _assert_png(plot_run(bare, out=tmp_path / "out" / "bare.png"))


def test_plot_runs_and_empty_run(tmp_path):
    thin = make_run(tmp_path / "thin", model="wrn-40-1", offset=2.7)
    wide = make_run(tmp_path / "wide", model="wrn-28-10")
    _assert_png(plot_runs([thin, wide], tmp_path / "both.png"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / METRICS).write_text("")
    with pytest.raises(ConfigError, match="no epochs yet"):
        plot_run(empty)


def _dotted_lines(ax) -> list[tuple[float, str]]:
    from matplotlib.colors import to_hex

    return sorted(
        (line.get_xdata()[0], to_hex(line.get_color())) for line in ax.lines if line.get_linestyle() == ":"
    )


def test_figures_read_well_for_one_run_and_several(tmp_path):
    from wrn.train.plot import COLOURS, draw_run, draw_runs

    short = make_run(tmp_path / "short", epochs=3, model="wrn-16-4")
    (short / METRICS).write_text(
        "".join(json.dumps(record(e, lr=0.1 if e < 3 else 0.02)) + "\n" for e in (1, 2, 3))
    )
    long = make_run(tmp_path / "long", epochs=200, model="wrn-28-10")
    one, several = draw_run(short), draw_runs([short, long])
    for fig in (one, several):
        ax_loss, ax_err = fig.axes
        fig.canvas.draw()
        ticks = [t for t in ax_loss.get_xticks() if ax_loss.get_xlim()[0] <= t <= ax_loss.get_xlim()[1]]
        assert all(float(t).is_integer() for t in ticks)  # whole epochs only
        assert ax_loss.get_yscale() == "log"  # the same loss scale for one run and several
        # one grid: vertical lines on the epochs, horizontal ones on the test error's ticks only
        assert not any(line.get_visible() for line in ax_loss.get_ygridlines())
        assert any(line.get_visible() for line in ax_err.get_ygridlines())
        assert not any(line.get_visible() for line in ax_err.get_xgridlines())
    # each run's lr drops in its own colour, at its own epochs (nudged apart by a few hundredths)
    drops = _dotted_lines(several.axes[0])
    assert [c for _, c in drops] == [COLOURS[0].lower()] + [COLOURS[1].lower()] * 3
    assert [round(x) for x, _ in drops] == [3, 60, 120, 160]


@pytest.mark.parametrize("suffix, magic", [(".svg", b"<?xml"), (".pdf", b"%PDF"), (".png", b"\x89PNG")])
def test_plots_in_every_format(tmp_path, suffix, magic):
    run = make_run(tmp_path / "run", epochs=20, model="wrn-40-1")
    assert plot_run(run, out=tmp_path / f"c{suffix}").read_bytes().startswith(magic)
    result = _wrn("run", "--out", f"cli{suffix}", cwd=tmp_path)
    assert result.returncode == 0 and (tmp_path / f"cli{suffix}").read_bytes().startswith(magic)
    refused = _wrn("run", "--out", "c.jpg", cwd=tmp_path)
    assert refused.returncode == 2 and ".png, .svg, .pdf" in refused.stderr


def _wrn(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "wrn", "plot", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_plot_two_runs(tmp_path):
    make_run(tmp_path / "thin", epochs=40, model="wrn-40-1", offset=2.7)
    make_run(tmp_path / "wide", epochs=40, model="wrn-28-10")
    result = _wrn("thin", "wide", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _assert_png(tmp_path / "curves.png")
    assert not (tmp_path / "thin" / "curves.png").exists()


def test_cli_plot_run_without_metrics(tmp_path):
    (tmp_path / "empty-run").mkdir()
    result = _wrn("empty-run", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "empty-run" in lines[0] and "metrics.jsonl" in lines[0]


# ------------------------------------------------------------------------------------------------ progress
def _meter_feed(meter, batch: int, loss: float, correct: int) -> None:
    """One batch of ``batch`` images with mean loss ``loss`` and ``correct`` right, through the meter."""
    labels = torch.zeros(batch, dtype=torch.long)
    logits = torch.zeros(batch, 2)
    logits[correct:, 1] = 1.0  # the first ``correct`` predict class 0 (right), the rest class 1
    meter.update(torch.tensor(loss), logits, labels)


def test_progress_plain_lines_read_the_meter_and_sync_only_when_printing(monkeypatch):
    reads = []
    real_tolist = torch.Tensor.tolist

    def counting_tolist(self):
        reads.append(1)
        return real_tolist(self)

    quick = io.StringIO()
    meter = EpochMeter(torch.device("cpu"))
    with EpochProgress(meter, 10, desc="epoch 1/2", stream=quick) as progress:
        for _ in range(10):
            _meter_feed(meter, 8, 1.0, 4)
            progress.update()
    assert quick.getvalue() == ""  # an epoch of a few seconds prints no intermediate line
    monkeypatch.setattr(wrn.train.progress, "PLAIN_QUARTERS_AFTER_S", 0.0)
    monkeypatch.setattr(torch.Tensor, "tolist", counting_tolist)
    stream = io.StringIO()  # not a terminal
    total, batch = 100, 8
    losses = [2.0 - 1.5 * i / (total - 1) for i in range(total)]
    correct = [i % (batch + 1) for i in range(total)]
    meter = EpochMeter(torch.device("cpu"))
    with EpochProgress(meter, total, desc="epoch 3/200", stream=stream) as progress:
        for i in range(total):
            _meter_feed(meter, batch, losses[i], correct[i])
            progress.update()
    result = progress.close()

    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and all(line.startswith("epoch 3/200:") for line in lines)
    assert "25%" in lines[0] and "loss" in lines[0] and "acc" in lines[0] and "img/s" in lines[0]
    first_quarter = sum(losses[:25]) / 25
    assert f"loss {first_quarter:.4f}" in lines[0]
    assert result["images"] == total * batch
    assert result["loss"] == pytest.approx(sum(losses) / total, rel=1e-6)
    assert result["acc"] == pytest.approx(100.0 * sum(correct) / (total * batch))
    assert result["seconds"] > 0 and result["images_per_s"] > 0
    assert len(reads) == len(lines) + 1  # one read-back per printed line and one at the end, never per step


def test_progress_disabled_and_terminal():
    quiet = io.StringIO()
    meter = EpochMeter(torch.device("cpu"))
    with EpochProgress(meter, 4, enabled=False, stream=quiet) as progress:
        for _ in range(4):
            _meter_feed(meter, 2, 1.0, 1)
            progress.update()
    assert quiet.getvalue() == ""
    assert progress.close() == {**progress.close(), "loss": 1.0, "acc": 50.0, "images": 8}

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    meter = EpochMeter(torch.device("cpu"))
    with EpochProgress(meter, 3, desc="epoch 1/2", stream=term) as progress:
        for _ in range(3):
            _meter_feed(meter, 4, 1.0, 3)
            progress.update()
    assert "epoch 1/2" in term.getvalue() and "loss=1.0000" in term.getvalue()
    assert progress.close()["acc"] == pytest.approx(75.0)


def test_a_zero_width_terminal_gets_plain_lines(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setenv("COLUMNS", "0")
    term = Terminal()
    meter = EpochMeter(torch.device("cpu"))
    with EpochProgress(meter, 3, desc="epoch 1/2", stream=term) as progress:
        for _ in range(3):
            _meter_feed(meter, 4, 1.0, 3)
            progress.update()
    assert not progress.is_tty and "\r" not in term.getvalue()  # no bar: the plain lines of a log
    monkeypatch.setenv("COLUMNS", "120")
    with EpochProgress(EpochMeter(torch.device("cpu")), 3, desc="epoch 1/2", stream=Terminal()) as wide:
        wide.update()
    assert wide.is_tty


def test_format_epoch_summary():
    line = format_epoch_summary(
        12,
        200,
        {
            "epoch": 12,
            "lr": 0.1,
            "train_loss": 0.4321,
            "train_acc": 85.12,
            "test_loss": 0.5123,
            "test_acc": 85.8,
            "test_error": 14.2,
            "images_per_s": 1234.4,
            "train_time": 45.08,
            "test_time": 3.21,
        },
    )
    assert line == (
        "epoch  12/200  lr 0.1000  train loss 0.4321 acc 85.12%  test loss 0.5123 error 14.20%  1234 img/s  "
        "train 45.1s test 3.2s"
    )
    assert (
        format_epoch_summary(1, 9, {"lr": 0.0002, "test_acc": 90.0})
        == "epoch 1/9  lr 2.00e-04  test error 10.00%"
    )
    assert format_epoch_summary(3, 90, {"test_error": 24.1, "test_top5_error": 7.25}) == (
        "epoch  3/90  test error 24.10% top-5 error 7.25%"
    )
    # --ema: the average's error beside the plain one, or alone (--eval-models ema)
    ema = {"test_error": 5.5, "ema_test_loss": 0.2, "ema_test_acc": 95.9, "ema_test_error": 4.1}
    assert format_epoch_summary(2, 9, ema) == "epoch 2/9  test error 5.50%  EMA error 4.10%"
    assert format_epoch_summary(2, 9, {"ema_test_error": 4.1}) == "epoch 2/9  EMA error 4.10%"


@pytest.mark.parametrize("rule, which", [("rice", "200 held-out images"), ("awp", "first 200 test images")])
def test_an_adversarial_runs_curves_say_what_the_loss_is_and_draw_the_robust_error(tmp_path, rule, which):
    """--adv: the training loss is the attacked images'; with --adv-holdout the robust error of the images the
    best epoch is picked on is drawn beside the test error, the best epoch named."""
    from wrn.train.plot import draw_run

    run = make_run(tmp_path / "adv", epochs=4)
    (run / "config.yaml").write_text(
        "model:\n  name: wrn-10-1\ndataset:\n  name: digits\n"
        f"adv:\n  method: pgd\n  holdout: 200\n  holdout_rule: {rule}\n"
    )
    accs = [20.0, 35.0, 31.0, 33.0]
    (run / METRICS).write_text(
        "".join(
            json.dumps(
                {
                    **record(e),
                    "train_loss": loss,
                    "holdout_robust_acc": a,
                    "holdout_best_epoch": 2 if e > 1 else 1,
                }
            )
            + "\n"
            for e, a, loss in zip((1, 2, 3, 4), accs, (1.6, 0.9, 0.6, 0.45), strict=True)
        )
    )
    ax_loss, ax_err = draw_run(run).axes
    labels = [t.get_text() for t in ax_err.get_legend().get_texts()]
    assert labels[1] == "train loss (pgd: its attacked images)"
    assert labels[2] == f"robust error, {which} (best: epoch 2)"
    robust = next(line for line in ax_err.get_lines() if line.get_label() == labels[2])
    assert list(robust.get_ydata()) == [100.0 - a for a in accs] and ax_err.get_ylabel() == "error, %"
    ax_loss.figure.canvas.draw()  # the loss axis's labels as plain numbers: 0.6, not 6e-01 or 6 x 10^-1
    shown = [
        t.get_text() for t in ax_loss.get_yticklabels(minor=True) + ax_loss.get_yticklabels() if t.get_text()
    ]
    assert shown and all(float(t) > 0 and "e" not in t and "times" not in t for t in shown), shown
    plain = draw_run(make_run(tmp_path / "plain", epochs=4))
    assert [t.get_text() for t in plain.axes[1].get_legend().get_texts()][1] == "train loss"
