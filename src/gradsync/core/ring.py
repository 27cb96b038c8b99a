"""The ring algorithms' costs (Patarasuk & Yuan 2009; Thakur et al. 2005), defined once.

With p ranks and an n-byte buffer (the full buffer: for an all-gather, the output), each rank
sends ``bandwidth factor * n`` bytes and waits ``latency factor`` hops:

- all-reduce = reduce-scatter + all-gather: 2(p-1)/p * n, 2(p-1) hops;
- reduce-scatter, all-gather: (p-1)/p * n, p-1 hops;
- broadcast, pipelined along the ring: n, p-1 hops;
- all-to-all (pairwise exchange, each rank keeps 1/p of its n bytes): (p-1)/p * n, p-1 hops.

:class:`gradsync.runtime.dist.Comm` counts the bytes a run sends with these factors;
:mod:`gradsync.planning.costmodel` prices collectives with them.
"""

from __future__ import annotations

OPS = ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "all_to_all")


def ring_factors(op: str, p: int) -> tuple[float, float]:
    """(bandwidth factor, latency factor) of ``op`` over a ring of ``p`` ranks:
    time = f_b * n * beta + f_a * alpha, with n the full buffer's bytes."""
    if op not in OPS:
        raise ValueError(f"unknown collective '{op}'; known: {', '.join(OPS)}")
    if p <= 1:
        return 0.0, 0.0
    if op == "all_reduce":
        return 2 * (p - 1) / p, 2.0 * (p - 1)
    if op in ("reduce_scatter", "all_gather", "all_to_all"):
        return (p - 1) / p, float(p - 1)
    return 1.0, float(p - 1)  # broadcast


def full_buffer_bytes(op: str, input_bytes: int, p: int) -> int:
    """The buffer the ring factors apply to, from one rank's input: an all-gather's input is one
    of p equal chunks of its output; every other collective's input is the buffer."""
    return input_bytes * p if op == "all_gather" else input_bytes


def wire_bytes(op: str, input_bytes: int, p: int) -> float:
    """Bytes one rank sends for ``op`` on ``input_bytes`` of its own input."""
    return ring_factors(op, p)[0] * full_buffer_bytes(op, input_bytes, p)
