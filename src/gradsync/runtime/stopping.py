"""Stopping on a signal without losing work: the signals a scheduler sends to preempt a job
(SIGTERM from Slurm and Kubernetes, SIGUSR1 from Slurm's ``--signal``, SIGHUP) and Ctrl-C
(SIGINT) are noted, not obeyed at once; at the end of the step every rank learns whether any of
them got one (its vote is summed in the trainer's one all-reduce a step, with the logged loss),
and then all save and stop at the same step."""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)


class StopOnSignal:
    """Context manager: while inside, the stop signals set :attr:`signum` instead of ending the
    process (only the main thread may install handlers; elsewhere it watches nothing)."""

    def __init__(self) -> None:
        self.signum = 0
        self._old: dict[int, Any] = {}

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._note) for s in STOP_SIGNALS}
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)

    def flag(self) -> float:
        """This rank's vote, to be summed over ranks (with other scalars, in one all-reduce)."""
        return float(self.signum > 0)

    def named(self, votes: float) -> str | None:
        """From the sum of every rank's :meth:`flag`: the name of the signal if any rank got one
        (this rank's, else "a signal on another rank"), None otherwise."""
        if votes == 0:
            return None
        return signal.Signals(self.signum).name if self.signum else "a signal on another rank"
