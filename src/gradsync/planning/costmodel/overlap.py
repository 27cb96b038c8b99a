"""Overlap, simulated rather than guessed: collectives run one at a time on the link, each starting
when its bucket is ready and the previous one is done; what runs past the end of the compute is
exposed."""

from __future__ import annotations

from collections.abc import Sequence


def link_schedule(ready: Sequence[float], durations: Sequence[float]) -> list[tuple[float, float]]:
    """(start, end) of collectives issued in order on one link, each when ``ready`` (seconds) and
    the previous one is done: t_i = max(t_{i-1}, r_i) + d_i."""
    out, t = [], 0.0
    for r, d in zip(ready, durations, strict=True):
        start = max(t, r)
        t = start + d
        out.append((start, t))
    return out


def exposed_after(ready: Sequence[float], durations: Sequence[float], compute_end: float) -> float:
    """Collectives issued as :func:`link_schedule` runs them: the time the last one finishes after
    ``compute_end`` (0 if all are hidden)."""
    spans = link_schedule(ready, durations)
    return max(0.0, (spans[-1][1] if spans else 0.0) - compute_end)


def exposed_before(durations: Sequence[float], compute: Sequence[float]) -> float:
    """Collectives issued back to back at time 0; compute piece i may start only when collective i
    is done (parameters gathered before the layer runs). The delay this adds to the compute."""
    comm = t = 0.0
    for d, c in zip(durations, compute, strict=True):
        comm += d
        t = max(t, comm) + c
    return t - sum(compute)
