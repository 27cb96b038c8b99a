"""Console output that a closed reader cannot turn into a crash.

``gradsync train ... | head -3`` closes the pipe after three lines; the next ``print`` then raises
``BrokenPipeError`` in whichever process writes it, and a worker that dies of it takes the run
down. Output is a courtesy, the run is not: after :func:`survive_closed_output`, a write to a
closed stdout or stderr sends it and everything after it to ``/dev/null``, and the run goes on
(``metrics.jsonl`` and the run folder have it all).
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO


class _Guarded:
    """A text stream whose writes survive the reader going away."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, s: str) -> int:
        try:
            return self._stream.write(s)
        except BrokenPipeError:
            self._drop()
            return len(s)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop()

    def _drop(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())  # what is still buffered goes there too
        finally:
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def survive_closed_output() -> None:
    """Guard ``sys.stdout`` and ``sys.stderr`` of this process (idempotent)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _Guarded):
            setattr(sys, name, _Guarded(stream))
