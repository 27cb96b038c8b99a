"""Gradient buckets, planned on byte sizes (the design of PyTorch DDP, Li et al. VLDB 2020).

The strategies (``bucketed``, ZeRO-1/2) and the cost model both call :func:`plan_buckets`, so the
buckets a run communicates are the buckets the model prices.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence


def plan_buckets(
    sizes: Sequence[int], first_bytes: int, cap_bytes: int, kinds: Sequence[Hashable] | None = None
) -> list[list[int]]:
    """Group tensors of ``sizes`` bytes, in the given order (reverse registration order, roughly
    the order in which backward produces gradients), into buckets of at most ``cap_bytes``: a
    small first bucket of ``first_bytes`` (at most the cap) so that communication starts early,
    then full ones.
    A tensor larger than the cap gets a bucket of its own; tensors of different ``kinds`` (dtype,
    device) never share one. Returns the indices of each bucket's tensors, in order."""
    groups: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i, nbytes in enumerate(sizes):
        cap = min(first_bytes, cap_bytes) if not groups else cap_bytes
        mismatch = kinds is not None and current and kinds[i] != kinds[current[0]]
        if current and (size + nbytes > cap or mismatch):
            groups.append(current)
            current, size = [], 0
        current.append(i)
        size += nbytes
    if current:
        groups.append(current)
    return groups
