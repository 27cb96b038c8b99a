"""Errors that gradsync reports to the user as one line.

Anything raised as a :class:`GradsyncError` is a problem with the input (a flag, a file, a
checkpoint) or the environment, not a bug: the CLI prints ``gradsync: error: <message>`` and exits
with status 2, without a traceback. The message must say what to fix.
"""


class GradsyncError(Exception):
    """Base class for errors that are reported to the user as one line."""

    def __init__(self, message: str) -> None:
        # User text quoted in a message (a flag, a path) may hold line breaks: keep it one line.
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


class ConfigError(GradsyncError):
    """A configuration value is invalid or inconsistent."""


class DataError(GradsyncError):
    """A data source is missing, empty, or malformed."""


class CheckpointError(GradsyncError):
    """A checkpoint is missing, corrupt, or incompatible with the configuration."""


class DistributedError(GradsyncError):
    """The process group is inconsistent (e.g. replicas differ) or a peer failed."""


class TrainingError(GradsyncError):
    """Training cannot go on (e.g. the loss stays non-finite); saved checkpoints are intact."""
