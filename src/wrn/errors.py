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
