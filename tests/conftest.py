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
LONG_FILES = ("test_reproduce", "test_grid_runner", "test_train_runs", "test_train_resume", "test_train_cli",
              "test_train_recipes_modern", "test_export_predict", "test_train_ddp", "test_train_faults",
              "test_data_policies", "test_train_optim_modern")  # fmt: skip


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
