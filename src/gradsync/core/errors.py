"""Errors that gradsync reports to the user as one line.

Anything raised as a :class:`GradsyncError` is a problem with the input (a flag, a file, a
checkpoint) or the environment, not a bug: the CLI prints ``gradsync: error: <message>`` and exits
with status 2, without a traceback. The message must say what to fix. With ``GRADSYNC_DEBUG=1``
in the environment every such error shows its full traceback instead (with the exception it
wraps, for one raised ``from`` a user's error).
"""

import os

DEBUG_ENV = "GRADSYNC_DEBUG"
DEBUG_HINT = f"{DEBUG_ENV}=1 shows the traceback"

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
    collateral, not the cause (the worker lets the cause be seen first; see ``gradsync.runtime.worker``)."""


class TrainingError(GradsyncError):
    """Training cannot go on (e.g. the loss stays non-finite); saved checkpoints are intact."""


class ScriptError(GradsyncError):
    """A user's script under ``gradsync run`` exited with a code or raised."""


class Preempted(GradsyncError):
    """A signal stopped the run after every rank finished its step and a checkpoint was written;
    the CLI prints the message and exits with :data:`EXIT_PREEMPTED`. ``reason`` is what stopped
    it ("stopped by SIGTERM"); ``detail`` what was saved, when known."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}; {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def one_line_error(e: BaseException) -> str | None:
    """What to say of an error a run ends with, or None for a bug (its traceback is wanted):
    gradsync's own errors; a file that cannot be read or written (disk full, a read-only file
    system, a folder gone); running out of memory. None too when ``GRADSYNC_DEBUG`` asks for tracebacks."""
    if os.environ.get(DEBUG_ENV):
        return None
    if isinstance(e, GradsyncError):
        return str(e)
    if isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and _is_oom(str(e))):
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return (
            f"out of memory ({first[:200]}); lower --micro-batch (accumulation keeps the global batch), "
            "shard the state with --strategy zero2 or zero3, or use a smaller model"
        )
    if isinstance(e, OSError) and e.strerror:
        where = f" '{e.filename}'" if e.filename else ""
        return f"cannot read or write{where}: {e.strerror} (a full disk, a read-only file system, a folder removed?)"
    return None


def _is_oom(text: str) -> bool:
    return any(s in text for s in ("can't allocate memory", "CUDA out of memory", "out of memory"))
