"""A record of where a rank's time goes, for the steps a run profiles (``train.profile``).

Practitioners debug data parallelism with a picture of each rank's compute and communication
over time (Horovod's Timeline, DeepSpeed's wall-clock breakdown, PyTorch profiler traces in
Perfetto). gradsync records its own events for that picture:

- spans of compute and bookkeeping (``forward``, ``backward``, ``optimizer``, ``data``, ...), from
  :func:`span` where the trainer and the strategies do them;
- every collective that :class:`gradsync.runtime.dist.Comm` issues: launched at, done at (for
  asynchronous ones, when its future completes, on the communication thread), and the time the
  rank then blocked waiting for it, each labelled (``bucket 3``, ``gather unit 2``) by the part
  that issued it;
- instants, such as the moment a bucket's last gradient arrived (``ready``).

Times are ``time.perf_counter()`` seconds (CLOCK_MONOTONIC: one clock for every process of a
machine) relative to the start of the profiled window, which every rank enters after a barrier.
While nothing is recorded, :func:`current` is None and every hook is one attribute test.
``torch.profiler`` runs over the same steps (:mod:`gradsync.training.profiling`); the spans are
also ``record_function`` ranges, so they appear in its Chrome trace too.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass
class Event:
    """One thing that took time (``end > start``) or happened (``end == start``) on a lane:
    ``compute``, ``comm`` (a collective, launch to done), ``wait`` (blocked on one) or ``mark``."""

    name: str
    lane: str
    start: float
    end: float
    step: int
    detail: dict[str, Any] = field(default_factory=dict)


class Recorder:
    """The events of this rank while a profiled window is open."""

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.t0 = time.perf_counter()
        self.step = -1
        self.events: list[Event] = []
        self._lock = threading.Lock()  # collectives complete on the communication thread

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def add(self, name: str, lane: str, start: float, end: float, **detail: Any) -> Event:
        ev = Event(name, lane, start, end, self.step, detail)
        with self._lock:
            self.events.append(ev)
        return ev

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "events": [asdict(e) for e in self.events]}


_current: Recorder | None = None


def current() -> Recorder | None:
    """The recorder of the open window, or None (nothing is recorded)."""
    return _current


@contextlib.contextmanager
def recording(rank: int) -> Iterator[Recorder]:
    """Record this rank's events until the block ends."""
    global _current
    rec = Recorder(rank)
    _current = rec
    try:
        yield rec
    finally:
        _current = None


@contextlib.contextmanager
def span(name: str, lane: str = "compute", **detail: Any) -> Iterator[None]:
    """Time the block as ``name`` on ``lane`` (and as a ``record_function`` range for torch's
    profiler) while a window is open; nothing otherwise."""
    rec = _current
    if rec is None:
        yield
        return
    start = rec.now()
    with torch.profiler.record_function(f"gradsync/{name}"):
        yield
    rec.add(name, lane, start, rec.now(), **detail)


def mark(name: str, **detail: Any) -> None:
    """Record that ``name`` happened now (a bucket became ready)."""
    rec = _current
    if rec is not None:
        t = rec.now()
        rec.add(name, "mark", t, t, **detail)
