"""Inputs that made a command hang, misread them or end in a traceback, each made to happen through the real
command line: a pickle that stands for billions of values, FIFOs given as images, a model.json asking for a
network of 60 million layers or nesting its JSON thousands deep, 16-bit images, a link loop in an image
folder, class names that drive the terminal, sizes and names out of range, 'SAME'-padding models at odd sizes,
torchvision's resize, unfinished runs and files that are no checkpoint. Each test of a hang runs under a
deadline, so that it fails rather than hangs."""

from __future__ import annotations

import contextlib
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import wrn_here
from wrn.data.safe_pickle import UnsafePickleError, safe_load_pickle

CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class Hung(BaseException):
    """Raised by the deadline: a BaseException, so that no ``except Exception`` of the code under test eats it."""


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail instead of hanging: SIGALRM interrupts a blocking open() (of a FIFO) or a Python loop."""

    def expired(signum, frame):
        raise Hung(f"still running after {seconds} s: it hangs")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def one_error(capsys, *args, seconds: float = 60) -> str:
    """The command, in this process under a deadline: exit 2 and its error as the last line on stderr (after
    warnings, if any), no traceback; returns that line. Nothing reaches stdout."""
    with deadline(seconds):
        proc = wrn_here(capsys, *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert lines and "Traceback" not in proc.stderr, proc.stderr
    assert all(line.startswith("warning: ") for line in lines[:-1]), proc.stderr
    assert proc.stdout == ""
    return lines[-1]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished one-epoch digits run (wrn-10-1, 1-channel 8x8 images)."""
    from wrn.cli import main

    out = tmp_path_factory.mktemp("inputs") / "digits"
    argv = ["train", "--preset", "demo", "--model", "wrn-10-1", "--epochs", "1", "--no-progress"]
    assert main([*argv, "--out", str(out)]) == 0
    return out


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "digit.png"
    Image.new("L", (8, 8), 128).save(path)
    return path


# ------------------------------------------------------------------------------------------------ hangs


def laughs(levels: int, each: int) -> list:
    """A list nested ``levels`` deep, each level ``each`` references to the one below: a small pickle."""
    x: list = []
    for _ in range(levels):
        x = [x] * each
    return x


def test_a_pickle_that_stands_for_billions_of_values_is_refused_before_it_is_built(tmp_path, capsys):
    base = tmp_path / "data" / "cifar-10-batches-py"
    base.mkdir(parents=True)
    bomb = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": laughs(17, 12)}, protocol=2)
    assert len(bomb) < 10_000  # 12**17 values in a few kilobytes
    for name in CIFAR10_FILES:
        (base / name).write_bytes(bomb)
    out = tmp_path / "run"
    args = ["--dataset", "cifar10", "--data-dir", tmp_path / "data", "--no-verify", "--model", "wrn-10-1"]
    start = time.perf_counter()
    err = one_error(capsys, "train", *args, "--epochs", "1", "--out", out, "--no-progress", seconds=60)
    assert "data_batch_1 nests its values deeper than 16 levels" in err and "delete it" in err
    assert time.perf_counter() - start < 30 and not out.exists()
    # as wide as the pickle may be and 6 deep: the count of values stops it
    (base / "test_batch").write_bytes(pickle.dumps({b"data": 1, b"labels": laughs(6, 12)}, protocol=2))
    with deadline(30), pytest.raises(UnsafePickleError, match="stands for more than 1,000,000 values"):
        safe_load_pickle(base / "test_batch")


def test_a_tuple_nested_too_deep_to_hash_is_refused_not_a_crash(tmp_path):
    path = tmp_path / "batch"  # a dict keyed by a tuple 200,000 deep: hashing it overflowed the C stack
    path.write_bytes(
        pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.EMPTY_TUPLE + pickle.TUPLE1 * 200_000 + pickle.NONE
        + pickle.SETITEM + pickle.STOP
    )  # fmt: skip
    code = (
        "import sys\nfrom wrn.data.safe_pickle import safe_load_pickle\n"
        "try:\n    safe_load_pickle(sys.argv[1])\nexcept Exception as exc:\n    print(exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc  # not -11, a segmentation fault
    assert "nests its values deeper than 16 levels" in proc.stdout


# ------------------------------------------------------------------------------------------- tracebacks


def test_a_name_too_long_for_the_file_system_is_one_sentence_for_every_command(run, capsys, image, tmp_path):
    from wrn.reproduce import grid as G

    long = tmp_path / ("x" * 256)
    grid = tmp_path / "grid"
    over = G.Overrides(("--dataset", "digits"), {"dataset.name": "digits"}, {"dataset": "digits"})
    G.write_experiment(G.make_plan("table4", grid, 1, over), None)
    commands = [
        ["train", "--preset", "demo", "--epochs", "1", "--out", long],
        ["export", run, long / "m.pt2"],
        ["export", run, f"{long}.pt2"],
        ["convert", "xternalz", run / "checkpoint.pt", long],
        ["convert", "xternalz", f"{long}.pt", tmp_path / "converted"],
        ["predict", run, f"{long}.png"],
        ["eval", long],
        ["plot", run, "--out", f"{long}.png"],
        ["reproduce", "table4", "--dataset", "digits", "--dry-run", "--out", long],
        ["report", grid, "--out", long],
    ]
    for command in commands:
        err = one_error(capsys, *command)
        assert (
            "has a name of 2" in err and "bytes ('xxxxxxxxxxxxxxxxxxxxxxxx...'), longer than the 255" in err
        ), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digit.png", "grid"]
