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
On a GPU the host only enqueues work, so host times say when a kernel was launched, not when it
ran: there each span, mark and collective also records a CUDA event on the current stream, and
when the window closes its times are replaced by those events' (measured from an event recorded
on an idle device at the window's start), the host's kept as ``host_start``/``host_end``. A
collective's end is an event recorded in its future's callback, whose stream CUDA makes wait for
the collective; a ``wait`` is then how long the compute stream stalled on it.
While nothing is recorded, :func:`current` is None and every hook is one attribute test.
``torch.profiler`` runs over the same steps (:mod:`gradsync.training.profiling`); the spans are
also ``record_function`` ranges, so they appear in its Chrome trace too.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
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
    """The events of this rank while a profiled window is open.

    ``stamp``, where given, records a device-side timestamp and returns it (a CUDA event, or
    anything with ``elapsed_time(later) -> ms``): events given stamps (:meth:`on_device`) take the
    device's times when :meth:`to_dict` resolves them, after the device has finished.
    """

    def __init__(self, rank: int, stamp: Callable[[], Any] | None = None) -> None:
        self.rank = rank
        self.step = -1
        self.events: list[Event] = []
        self._lock = threading.Lock()  # collectives complete on the communication thread
        self._stamp = stamp
        self._pending: list[tuple[Event, str, Any]] = []
        self._origin = stamp() if stamp is not None else None  # device time 0 (the device is idle)
        self.t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def stamp(self) -> Any | None:
        """A device timestamp of this point of the current stream, or None on the CPU."""
        return self._stamp() if self._stamp is not None else None

    def on_device(self, ev: Event, start: Any | None = None, end: Any | None = None) -> None:
        """Give ``ev`` the device's times of the ``start``/``end`` stamps when resolved."""
        with self._lock:
            self._pending += [(ev, k, st) for k, st in (("start", start), ("end", end)) if st is not None]

    def add(self, name: str, lane: str, start: float, end: float, **detail: Any) -> Event:
        ev = Event(name, lane, start, end, self.step, detail)
        with self._lock:
            self.events.append(ev)
        return ev

    def to_dict(self) -> dict[str, Any]:
        """Every event, device stamps resolved (call once the device has finished the window)."""
        with self._lock:
            pending, self._pending = self._pending, []
        for ev, key, st in pending:
            assert self._origin is not None  # only a recorder with a stamp has pending stamps
            ev.detail[f"host_{key}"] = getattr(ev, key)
            setattr(ev, key, self._origin.elapsed_time(st) / 1e3)
        return {"rank": self.rank, "events": [asdict(e) for e in self.events]}


def cuda_stamp() -> Any:
    """A CUDA event recorded now on the current stream (the device clock of a GPU window)."""
    ev = torch.cuda.Event(enable_timing=True)
    ev.record()
    return ev


_current: Recorder | None = None


def current() -> Recorder | None:
    """The recorder of the open window, or None (nothing is recorded)."""
    return _current


@contextlib.contextmanager
def recording(rank: int, stamp: Callable[[], Any] | None = None) -> Iterator[Recorder]:
    """Record this rank's events until the block ends (``stamp``: see :class:`Recorder`)."""
    global _current
    rec = Recorder(rank, stamp)
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
    start, first = rec.now(), rec.stamp()
    with torch.profiler.record_function(f"gradsync/{name}"):
        yield
    ev = rec.add(name, lane, start, rec.now(), **detail)
    rec.on_device(ev, first, rec.stamp())


def mark(name: str, **detail: Any) -> None:
    """Record that ``name`` happened now (a bucket became ready)."""
    rec = _current
    if rec is not None:
        t, st = rec.now(), rec.stamp()
        rec.on_device(rec.add(name, "mark", t, t, **detail), st, st)
