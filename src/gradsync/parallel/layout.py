"""How parameters are laid out in flat buffers: the layout every gradient path and ZeRO share.

Parameters are grouped into *units* (gradient buckets for ``bucketed`` and ZeRO-1/2, layers for
ZeRO-3). A unit's parameters are flattened into one buffer padded to a multiple of the world size
N; rank r owns the r-th contiguous 1/N of every unit (its *chunk*). Sharding per unit rather than
once over the whole model is what makes the collectives regular: a unit is reduce-scattered and
all-gathered in one call with equal splits, and units can travel while backward still runs
(Rajbhandari et al., SC 2020). Inside its chunk a rank owns *pieces*: the part of each parameter
that falls in the chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from gradsync.core.buckets import plan_buckets
from gradsync.model.activation_checkpointing import blocks


@dataclass
class Piece:
    """The slice ``[lo, hi)`` of flattened ``param`` that lies at ``at`` in this rank's chunk."""

    param: nn.Parameter
    lo: int
    hi: int
    at: int


class FlatUnit:
    """Parameters flattened and padded to a multiple of ``world``; rank ``rank`` owns one chunk."""

    def __init__(self, index: int, params: list[nn.Parameter], world: int, rank: int) -> None:
        self.index = index
        self.params = params
        self.offsets: list[int] = []
        n = 0
        for p in params:
            self.offsets.append(n)
            n += p.numel()
        self.numel = n
        self.chunk = -(-n // world)
        self.padded = self.chunk * world
        self.lo = rank * self.chunk
        self.pieces: list[Piece] = []
        for p, off in zip(params, self.offsets):
            lo, hi = max(off, self.lo), min(off + p.numel(), self.lo + self.chunk)
            if lo < hi:
                self.pieces.append(Piece(p, lo - off, hi - off, lo - self.lo))

    def zeros(self) -> torch.Tensor:
        """A zeroed flat buffer for the unit (padded), of its parameters' dtype and device."""
        return torch.zeros(self.padded, dtype=self.params[0].dtype, device=self.params[0].device)

    def flatten(self, tensors: list[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
        """The unit's padded flat buffer holding ``tensors`` (one per parameter)."""
        if out is None:
            out = torch.zeros(self.padded, dtype=tensors[0].dtype, device=tensors[0].device)
        for t, off in zip(tensors, self.offsets):
            out[off : off + t.numel()].copy_(t.reshape(-1))
        return out

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Each parameter's shaped view into the unit's flat buffer."""
        return [flat[off : off + p.numel()].view_as(p) for p, off in zip(self.params, self.offsets)]

    def my_chunk(self, flat: torch.Tensor) -> torch.Tensor:
        return flat[self.lo : self.lo + self.chunk]


def bind_params(unit: FlatUnit, flat: torch.Tensor) -> None:
    """Make every parameter of ``unit`` a view into ``flat`` (after copying its values there)."""
    unit.flatten([p.data for p in unit.params], out=flat)
    for p, v in zip(unit.params, unit.views(flat)):
        p.data = v


def param_buckets(params: list[nn.Parameter], first_bytes: int, cap_bytes: int) -> list[list[nn.Parameter]]:
    """:func:`gradsync.core.buckets.plan_buckets` on ``params`` (already in reverse order): buckets of at
    most ``cap_bytes`` (the first of ``first_bytes``), never mixing dtypes or devices."""
    sizes = [p.numel() * p.element_size() for p in params]
    kinds = [(p.dtype, p.device) for p in params]
    return [[params[i] for i in g] for g in plan_buckets(sizes, first_bytes, cap_bytes, kinds)]


def bucket_units(model: nn.Module, first_mb: float, cap_mb: float, world: int, rank: int) -> list[FlatUnit]:
    """The trainable parameters in reverse registration order (roughly the order in which backward
    produces their gradients), grouped into buckets of ``cap_mb`` MiB (the first of ``first_mb``),
    each a unit padded to ``world`` (1: unpadded)."""
    if cap_mb <= 0:
        raise ValueError(
            f"bucket size {cap_mb} MB: 0 (chosen from the profile) is resolved by `gradsync train` "
            "before workers start; give a size in MB here"
        )
    params = [p for p in model.parameters() if p.requires_grad][::-1]
    mb = 1024 * 1024
    return [
        FlatUnit(i, g, world, rank) for i, g in enumerate(param_buckets(params, int(first_mb * mb), int(cap_mb * mb)))
    ]


@dataclass
class Bucket:
    """A unit of gradients on the all-reduce path: its flat buffer, each parameter's view into
    it, and the countdown of gradients still to come this step."""

    index: int
    params: list[nn.Parameter]
    unit: FlatUnit  # the layout: offsets, padding (to the world size when buckets are sharded)
    flat: torch.Tensor
    views: list[torch.Tensor]
    pending: int = 0
    fired: set[int] = field(default_factory=set)
    work: Any = None  # the reducer's handle while the bucket is in flight


def layer_units(model: nn.Module) -> tuple[list[nn.Module], list[nn.Parameter]]:
    """The modules that become units (elements of every ``nn.ModuleList``) and the parameters left
    for the root unit."""
    layers = blocks(model)
    inner = {id(p) for m in layers for p in m.parameters()}
    root = [p for p in model.parameters() if p.requires_grad and id(p) not in inner]
    return layers, root
