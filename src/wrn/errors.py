"""User-facing errors.

A :class:`WRNError` is a user's mistake (bad name, bad value, missing or corrupt file). Its message is one
sentence that names the problem and the fix. The command line prints it and exits with code 2, without a
traceback; library users can catch it (it is also a ``ValueError`` where the mistake is a bad value).
"""


class WRNError(Exception):
    """Base class of every error caused by the user's input rather than by a bug."""


class ConfigError(WRNError, ValueError):
    """A bad model name, option or configuration value."""


class CheckpointError(WRNError, ValueError):
    """A weights or checkpoint file that is missing, corrupt or does not fit the model."""


class DataError(WRNError, OSError):
    """A data set that is missing, corrupt, fails its checksum or cannot be downloaded."""


class PathError(WRNError, ValueError):
    """A path given on the command line that is missing, of the wrong kind (a file for a folder, or the other
    way round) or not writable."""


class WriteError(WRNError, OSError):
    """A write that the system refused (no space left, read-only file system, no permission, ...).

    ``problem`` names the path and the cause, ``fix`` what to do; a caller that knows better (the training loop:
    "resume with wrn train --resume RUN") may replace ``fix`` before the message is shown. ``needed`` is the
    number of bytes the write needed, where known."""

    def __init__(
        self, problem: str, fix: str, *, path: str, errno: int | None = None, needed: int | None = None
    ):
        super().__init__(problem)
        self.problem, self.fix, self.path, self.errno, self.needed = problem, fix, path, errno, needed

    def __str__(self) -> str:
        return f"{self.problem}; {self.fix}"


class RunStopped(Exception):
    """A training run that stopped before its end, not through a mistake of the user's: a checkpoint was kept
    and the message says how to go on. The command line prints the message and exits with ``exit_code``."""

    exit_code = 2


class NonFiniteLoss(RunStopped):
    """The training loss, or the weights, became NaN or infinite."""


class Interrupted(RunStopped):
    """SIGINT or SIGTERM: a checkpoint was saved and the run stopped; ``signum`` tells which."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)
