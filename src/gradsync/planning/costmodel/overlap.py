"""Overlap, simulated rather than guessed: collectives run one at a time on the link, each starting
when its bucket is ready and the previous one is done; what runs past the end of the compute is
exposed."""

from __future__ import annotations

from collections.abc import Sequence


def exposed_after(ready: Sequence[float], durations: Sequence[float], compute_end: float) -> float:
    """Collectives issued in order on one link, each when ``ready`` (seconds) and the previous one
    is done: the time the last one finishes after ``compute_end`` (0 if all are hidden)."""
    t = 0.0
    for r, d in zip(ready, durations, strict=True):
        t = max(t, r) + d
    return max(0.0, t - compute_end)


def exposed_before(durations: Sequence[float], compute: Sequence[float]) -> float:
    """Collectives issued back to back at time 0; compute piece i may start only when collective i
    is done (parameters gathered before the layer runs). The delay this adds to the compute."""
    comm = t = 0.0
    for d, c in zip(durations, compute, strict=True):
        comm += d
        t = max(t, comm) + c
    return t - sum(compute)
