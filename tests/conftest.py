"""Shared test settings: slow checks run in full only with WRN_SLOW=1 (CI runs their short versions)."""

import functools
import http.server
import os
import threading

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
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
