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


def gather_schedule(
    durations: Sequence[float], compute: Sequence[float], prefetch: int | None = None
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(start, end) of each unit's parameter gather and of its compute, ZeRO-3 style: compute i
    starts when compute i-1 is done and gather i has landed; gathers run one at a time on the link.
    Gather i is issued when unit i - ``prefetch`` is about to run, i.e. when the compute before it
    ends (``prefetch=0``: gather, then compute, one unit after another; the first ``prefetch`` + 1
    are issued at time 0); ``None`` issues all of them at time 0, the
    cost model's view of a prefetching FSDP. A unit's gathered weights are held from its gather's
    start to its compute's end, so ``prefetch`` bounds how many are held at once."""
    gathers: list[tuple[float, float]] = []
    computes: list[tuple[float, float]] = []
    link = done = 0.0
    for i, (d, c) in enumerate(zip(durations, compute, strict=True)):
        issued = 0.0 if prefetch is None or i <= prefetch else computes[i - prefetch - 1][1]
        start = max(link, issued)
        link = start + d
        gathers.append((start, link))
        begin = max(done, link)
        done = begin + c
        computes.append((begin, done))
    return gathers, computes


def exposed_before(durations: Sequence[float], compute: Sequence[float]) -> float:
    """Collectives issued back to back at time 0; compute piece i may start only when collective i
    is done (parameters gathered before the layer runs). The delay this adds to the compute."""
    _, computes = gather_schedule(durations, compute)
    return (computes[-1][1] if computes else 0.0) - sum(compute)
