"""SIGINT and SIGTERM during a run: a flag the loop reads between steps, so that what was trained is saved.

:func:`catch_early` is called first thing by ``wrn train`` (this module imports nothing heavy), so that a
signal during the start-up (imports, data loading, building) is kept until the run can save and stop. During
the start-up a second signal of either kind stops the process at once (nothing is trained yet, so nothing is
lost): a start-up that does not end is never beyond a signal's reach. Once the run trains, a second SIGINT
stops it at once; SIGTERM stays one flag however often it comes (a grid's run may get it twice: from its
orchestrator and on the orchestrator's death), so that the run saves.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

_pending: list[int] = []  # signals caught before a run's Signals took over
_original: dict[int, Any] = {}  # the handlers catch_early replaced


def _at_once(signum: int) -> None:
    """The second signal: stop now (the CLI exits with 128 + its number, as the first would have)."""
    from wrn.errors import Interrupted

    name = signal.Signals(signum).name
    raise Interrupted(f"{name} received a second time: stopped at once, without saving", signum)


def _early(signum, frame) -> None:
    if _pending:
        _at_once(signum)
    _pending.append(signum)


def catch_early() -> None:
    """Catch SIGINT and SIGTERM from now on; the next :class:`Signals` takes over what arrived."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.signal(sig, _early)
            if previous is not _early:
                _original[sig] = previous


def release_early() -> None:
    """Put back the handlers :func:`catch_early` replaced (where a run's Signals has not already)."""
    if threading.current_thread() is threading.main_thread():
        for sig, handler in _original.items():
            if signal.getsignal(sig) is _early:
                signal.signal(sig, handler)
    _pending.clear()


class Signals:
    """SIGINT / SIGTERM set a flag that the loop reads between steps; a second SIGINT stops at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.writing = False  # set by the run once it starts writing its files: the start-up is over
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        # a second Ctrl-C; before the run writes anything, a second signal of either kind; once it has, a
        # repeated SIGTERM (a grid's child gets two) stays one flag, so that the run saves
        if self.signum is not None and (signum == signal.SIGINT or not self.writing):
            _at_once(signum)
        self.signum = signum

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous = signal.signal(sig, self._handler)
                self._previous[sig] = _original.get(sig, signal.SIG_DFL) if previous is _early else previous
        if _pending:
            self.signum = _pending[0]
            _pending.clear()
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
