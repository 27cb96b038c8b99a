"""Errors that gradsync reports to the user as one line.

Anything raised as a :class:`GradsyncError` is a problem with the input (a flag, a file, a
checkpoint) or the environment, not a bug: the CLI prints ``gradsync: error: <message>`` and exits
with status 2, without a traceback. The message must say what to fix.
"""


# The exit status of a run that a signal stopped after it saved a checkpoint (SIGTERM, SIGINT,
# SIGHUP, SIGUSR1: how Slurm and Kubernetes preempt a job, and Ctrl-C). A scheduler can requeue
# on it; the next start continues with --resume.
EXIT_PREEMPTED = 3


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


class PeerFailed(DistributedError):
    """A collective failed because another rank stalled, died or lost its network: this rank is
    collateral, not the cause (the worker lets the cause be seen first; see ``gradsync.worker``)."""


class TrainingError(GradsyncError):
    """Training cannot go on (e.g. the loss stays non-finite); saved checkpoints are intact."""


class Preempted(GradsyncError):
    """A signal stopped the run after every rank finished its step and a checkpoint was written;
    the CLI prints the message and exits with :data:`EXIT_PREEMPTED`. ``reason`` is what stopped
    it ("stopped by SIGTERM"); ``detail`` what was saved, when known."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}; {detail}" if detail else reason)
        self.reason, self.detail = reason, detail
