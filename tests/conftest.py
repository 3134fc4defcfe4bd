"""Shared test settings: slow checks run in full only with WRN_SLOW=1 (CI runs their short versions)."""

import functools
import http.server
import os
import threading

import pytest
import torch

# One thread per pytest-xdist worker (two workers share two cores), else at most two.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))


# The files whose tests start real processes (trainings, grids, torchrun, Ray), the longest first: they are handed
# out to the pytest-xdist workers before the quick ones, so that no worker waits idle at the end for the other.
LONG_FILES = ("test_reproduce", "test_grid_runner", "test_reproduce_robust", "test_train_adversarial",
              "test_train_resume", "test_train_fixmatch", "test_train_runs", "test_train_cli",
              "test_train_recipes_modern", "test_export_predict", "test_train_ddp", "test_train_dm_at",
              "test_train_faults", "test_data_policies", "test_data_aux", "test_train_optim_modern",
              "test_attacks")  # fmt: skip


def pytest_collection_modifyitems(config, items):
    order = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: order.get(item.path.stem, len(order)))  # stable: the order within a file kept
    if os.environ.get("WRN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="long check: run with WRN_SLOW=1 (a short version runs by default)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        """Keep the test output free of one access-log line per request."""


@pytest.fixture
def http_server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving ``tmp_path/served``: (folder, base URL, server)."""
    served = tmp_path / "served"
    served.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(served))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()
    server.server_close()


# ------------------------------------------------------------------------------------------ the real CLI
# The environment of a `wrn` subprocess: one thread, so that parallel work on a small machine stays fair.
WRN_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_wrn(*args: str, cwd=None, env: dict | None = None, timeout: float = 300):
    """``python -m wrn ARGS`` in a new process: the CompletedProcess, text output captured."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "wrn", *map(str, args)],
        env={**WRN_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def printed_config(capsys, preset: str) -> dict:
    """``wrn train --preset PRESET --print-config`` through the real command line, read back as YAML."""
    import yaml

    proc = wrn_here(capsys, "train", "--preset", preset, "--print-config", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def wrn_here(capsys, *args: str):
    """The real command line (``wrn.cli.main``) in this process, its output read with pytest's ``capsys``: an
    object with ``returncode``, ``stdout`` and ``stderr`` as :func:`run_wrn` gives them, without the start-up
    of a new Python and torch. For commands that need no process of their own."""
    from types import SimpleNamespace

    from wrn.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


def start_wrn(*args: str, env: dict | None = None, **popen):
    """``python -m wrn ARGS`` started in the background: the Popen (stdout and stderr piped, text)."""
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "wrn", *map(str, args)],
        env={**WRN_ENV, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def calibrate_bn_(model: torch.nn.Module, gen: torch.Generator, skip=()) -> torch.nn.Module:
    """A network as after training: random BN affine parameters (except the BNs named in ``skip``, left at
    their initial 1 and 0 as a BN that never gets a gradient), then running statistics that are those of one
    random batch, so that eval-mode activations keep a sane scale. Returns the model in eval mode."""
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                if name not in skip:
                    m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                    m.bias.copy_((torch.rand(m.num_features, generator=gen) - 0.5) * 0.4)
                m.reset_running_stats()
                m.momentum = None  # cumulative average: after one batch, exactly its statistics
        model.train()
        model(torch.rand(8, 3, 32, 32, generator=gen))
    return model.eval()


def rel_diff(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """max |ours - reference| relative to max |reference|."""
    return ((ours - reference).abs().max() / reference.abs().max()).item()


# ------------------------------------------------------------------------------------------ run folders and pages
TIMING_KEYS = (
    "train_time",
    "test_time",
    "images_per_s",
    "holdout_time",
)  # what differs between two runs of the same steps


def metrics(run_dir, timings: bool = True) -> list[dict]:
    """The records of a run's metrics.jsonl (``timings=False``: without the wall-clock figures)."""
    import json
    from pathlib import Path

    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return records if timings else [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def snapshot(folder) -> dict[str, tuple[int, str]]:
    """Every file under ``folder``: its path relative to it -> (mtime in ns, sha256 of its bytes). Equal
    snapshots mean nothing was written, not even the same bytes again. A run's ``.lock`` is left out: it says
    which process holds the run, and each one that takes it writes its PID there."""
    import hashlib
    from pathlib import Path

    folder = Path(folder)
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def md_table(text: str, heading: str, which: int = 0) -> tuple[list[str], list[list[str]]]:
    """Header and rows of table ``which`` of the Markdown section whose heading starts with ``heading``."""
    import re

    section = re.split(r"\n(?=## )", text)
    body = next(s for s in section if s.startswith(f"## {heading}"))
    tables = re.findall(r"((?:^\|.*\|\n)+)", body + "\n", re.M)
    lines = tables[which].strip().splitlines()
    split = [[c.strip() for c in re.split(r"(?<!\\) \| ", ln.strip()[2:-2])] for ln in lines]
    return split[0], split[2:]


def randomize_bn_(model: torch.nn.Module) -> torch.nn.Module:
    """BN running statistics and biases as after training (from torch's global generator), in place."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


def one_line_error(capsys, *argv: str) -> str:
    """The real command line in this process refusing ``argv``: exit code 2 and one line ``wrn CMD: error:
    ...`` on stderr, no traceback; returns the line."""
    from wrn.cli import main

    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"wrn {argv[0]}: error: ") and "Traceback" not in err, err
    return err


def forward_macs(name: str, size: int = 32) -> int:
    """The multiply-adds of one image's forward pass through the model ``name`` (10 classes, 3 channels),
    counted by torch's FLOP counter on a real model: independent of the model table's own count."""
    from torch.utils.flop_counter import FlopCounterMode

    import wrn

    model = wrn.create_model(name).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() // 2


# A `python -m wrn` that kills itself (SIGKILL) at the N-th call of os.replace/os.rename ("rename") or os.fsync
# ("fsync"): a kill at an exact point of the writes, as `strace -e inject=rename:signal=SIGKILL:when=N` makes
# it. With N = 0 it runs to its end and prints "calls rename=R fsync=F" last on stderr.
_KILL_AT = """
import atexit, os, signal, sys
kind, at = sys.argv[1], int(sys.argv[2])
counts = {"rename": 0, "fsync": 0}
def counted(name, real):
    def call(*args, **kwargs):
        counts[name] += 1
        if name == kind and counts[name] == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call
os.replace, os.rename = counted("rename", os.replace), counted("rename", os.rename)
os.fsync = counted("fsync", os.fsync)
atexit.register(lambda: print(f"calls rename={counts['rename']} fsync={counts['fsync']}", file=sys.stderr))
from wrn.cli import main
sys.argv = ["wrn", *sys.argv[3:]]
sys.exit(main(sys.argv[1:]))
"""


def checkpoint_step(run_dir) -> int:
    """The steps a run's checkpoint holds, -1 before its first one."""
    from wrn.errors import CheckpointError
    from wrn.train import checkpoint as ckpt

    try:
        return ckpt.load(run_dir)["global_step"]
    except CheckpointError:  # not written yet
        return -1


def kill_9_at_step(run_dir, target: int, *args: str, pause: float = 0.0) -> None:
    """Start ``wrn ARGS`` (training ``run_dir``) and kill it with SIGKILL once its checkpoint holds ``target``
    steps or more, ``pause`` seconds later (somewhere in a step or a checkpoint write)."""
    import signal
    import time

    proc = start_wrn(*args)
    deadline = time.monotonic() + 120
    while checkpoint_step(run_dir) < target and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(pause)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.communicate()


def assert_same_weights(a, b) -> None:
    """The ``model.safetensors`` of run (or model) folders ``a`` and ``b`` are bitwise equal."""
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def assert_resume_is_bitwise(tmp_path, args: list, target: int, best: bool = False):
    """``wrn ARGS`` straight through, and again killed with SIGKILL at step ``target`` then ``--resume``d: the
    same weights (and ``best/``'s), the same records. Returns the resumed run's folder."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    proc = start_wrn(*args, "--out", str(straight))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    kill_9_at_step(killed, target, *args, "--out", str(killed))
    assert 0 < checkpoint_step(killed)
    proc = start_wrn("train", "--resume", str(killed), "--no-progress")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "continuing" in out
    assert_same_weights(straight, killed)
    if best:
        assert_same_weights(straight / "best", killed / "best")
    assert metrics(straight, timings=False) == metrics(killed, timings=False)
    return killed


def run_wrn_killed_at(kind: str, n: int, *args: str, timeout: float = 300):
    """``wrn ARGS`` in a new process killed at the ``n``-th ``kind`` call ("rename" or "fsync"; 0: never)."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-c", _KILL_AT, kind, str(n), *map(str, args)],
        env=WRN_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ------------------------------------------------------------------------------------------ a finished run
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished one-epoch digits run (wrn-10-1, 1-channel 8x8 images), one per test module."""
    from wrn.cli import main

    out = tmp_path_factory.mktemp("digits") / "digits"
    argv = ["train", "--preset", "demo", "--model", "wrn-10-1", "--epochs", "1", "--no-progress"]
    assert main([*argv, "--out", str(out)]) == 0
    return out


@pytest.fixture
def copy(run, tmp_path):
    """A copy of the module's run, to damage."""
    import shutil
    from pathlib import Path

    return Path(shutil.copytree(run, tmp_path / "copy"))


@pytest.fixture
def image(tmp_path):
    """An 8x8 gray image file, the digits' size."""
    from PIL import Image

    path = tmp_path / "digit.png"
    Image.new("L", (8, 8), 128).save(path)
    return path


def mounted(tmp_path, *args: str):
    """``mount ARGS DIR`` on a new folder (unmounted at the end of the test), or skip where mount is refused."""
    import subprocess

    point = tmp_path / f"mnt{len(list(tmp_path.glob('mnt*')))}"
    point.mkdir()
    proc = subprocess.run(["mount", *args, str(point)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"mount {' '.join(args)} refused here ({proc.stderr.strip()}); run as root to test it")
    return point


@pytest.fixture
def mounts():
    """The mount points a test made: unmounted (lazily) at its end."""
    points: list = []
    yield points
    import subprocess

    for point in reversed(points):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def small_tmpfs(tmp_path, mounts):
    """A 1 MiB tmpfs (unmounted at the end of the test), or skip."""
    point = mounted(tmp_path, "-t", "tmpfs", "-o", "size=1m", "tmpfs")
    mounts.append(point)
    return point


def read_only(tmp_path, mounts, source):
    """A read-only bind mount of the folder ``source`` (unmounted at the end of the test), or skip."""
    import subprocess

    point = mounted(tmp_path, "--bind", str(source))
    mounts.append(point)
    if subprocess.run(["mount", "-o", "remount,bind,ro", str(point)], capture_output=True).returncode:
        pytest.skip("a read-only remount of a bind mount is refused here; run as root to test it")
    return point


@pytest.fixture
def scripted(monkeypatch):
    """Makes :func:`apply_policy` draw given values: its coins and signs (``_uniform``, also the one
    autoaugment's ``_paper_sign`` calls) and Cutout's centre (``_randint``)."""

    class Script:
        uniforms: list[float] = []
        randints: list[int] = []

        def uniform(self) -> float:
            return self.uniforms.pop(0)

        def randint(self, n: int) -> int:
            value = self.randints.pop(0)
            assert 0 <= value < n
            return value

    from wrn.data import autoaugment, fixmatch_augment

    script = Script()
    monkeypatch.setattr(autoaugment, "_uniform", script.uniform)
    monkeypatch.setattr(fixmatch_augment, "_uniform", script.uniform)
    monkeypatch.setattr(fixmatch_augment, "_randint", script.randint)
    return script


def ra_reference(script, images, params, cutout, side=None):
    """FixMatchRA's per-image code (``apply_policy``) on each of ``images`` with the draws that give it the
    batched ``params`` (``script``: the :func:`scripted` fixture), stacked: (images, emptied masks)."""
    from wrn.data.fixmatch_augment import apply_policy
    from wrn.data.fixmatch_batched import policy_draws

    outs, masks = [], []
    for i in range(len(params)):
        policy, script.uniforms, script.randints = policy_draws(params, i, cutout)
        out, mask = apply_policy(images[i], policy, cutout, side)
        assert script.uniforms == [] and script.randints == []  # every value drawn, as the parameters say
        outs.append(out)
        masks.append(mask)
    return torch.stack(outs), torch.stack(masks)
