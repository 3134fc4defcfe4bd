"""Start a run so that it dies with whoever started it: ``python -m wrn.reproduce.child PARENT_PID ARGS...``.

On Linux it asks the kernel (``prctl(PR_SET_PDEATHSIG, SIGTERM)``) to send SIGTERM to this process when its
parent dies, then replaces itself with ``python ARGS...`` (the setting survives ``exec``). A `wrn train` that
gets SIGTERM saves a checkpoint at its next step and exits, so a ``kill -9`` of `wrn reproduce` (or of the Ray
worker that started the run) leaves no orphan that keeps training, and loses only the current step.
The run's lock descriptor, inherited from the parent, stays open through the ``exec``.
"""

from __future__ import annotations

import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(128 + int(signal.SIGTERM))


def main(argv: list[str]) -> None:
    if len(argv) < 2 or not argv[0].isdigit():
        sys.exit("usage: python -m wrn.reproduce.child PARENT_PID ARGS...")
    die_with_parent(int(argv[0]))
    os.execv(sys.executable, [sys.executable, *argv[1:]])


if __name__ == "__main__":
    main(sys.argv[1:])
