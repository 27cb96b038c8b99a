"""Bucketed all-reduce overlapped with backward (the design of PyTorch DDP, Li et al. VLDB 2020).

Parameters are grouped, in reverse order of registration (roughly the order in which backward
produces their gradients), into flat buckets: a small first bucket so communication starts early,
then buckets of ``parallel.bucket_mb``. Each parameter's ``.grad`` is a view into its bucket, so
autograd accumulates straight into the flat buffer and nothing is copied. A post-accumulate-grad
hook counts down the bucket; when it is full it is divided by the world size and its all-reduce
(a sum) starts asynchronously while backward goes on, so nothing but the wait is left after
backward. Buckets are launched strictly in index order, so every rank issues the same collectives
in the same order even if some parameter is late or unused on one rank (an unused parameter
contributes a zero gradient, with a warning, never a hang). On the non-final micro-steps of
gradient accumulation the hooks do nothing: gradients only accumulate locally.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

import torch
import torch.nn as nn

from gradsync.parallel.base import Strategy
from gradsync.parallel.compression import build_reducer
from gradsync.parallel.sharding import FlatUnit


@dataclass
class Bucket:
    index: int
    params: list[nn.Parameter]
    unit: FlatUnit  # the layout: offsets, padding (to the world size when buckets are sharded)
    flat: torch.Tensor
    views: list[torch.Tensor]
    pending: int = 0
    fired: set[int] = field(default_factory=set)
    work: Any = None  # the reducer's handle while the bucket is in flight


def plan_buckets(params: list[nn.Parameter], first_bytes: int, cap_bytes: int) -> list[list[nn.Parameter]]:
    """Group ``params`` (already in reverse order) into buckets of at most ``cap_bytes`` (the first
    of ``first_bytes``), never mixing dtypes or devices. A tensor larger than the cap gets its own
    bucket."""
    groups: list[list[nn.Parameter]] = []
    current: list[nn.Parameter] = []
    size = 0
    for p in params:
        nbytes = p.numel() * p.element_size()
        cap = first_bytes if not groups else cap_bytes
        mismatch = current and (p.dtype != current[0].dtype or p.device != current[0].device)
        if current and (size + nbytes > cap or mismatch):
            groups.append(current)
            current, size = [], 0
        current.append(p)
        size += nbytes
    if current:
        groups.append(current)
    return groups


class BucketedStrategy(Strategy):
    name = "bucketed"
    # ZeRO-1 shards each bucket's optimizer state: its buckets are padded to the world size.
    shard_buckets: ClassVar[bool] = False

    def wrap(self, model: nn.Module) -> nn.Module:
        params = [p for p in model.parameters() if p.requires_grad][::-1]
        mb = 1024 * 1024
        self.names = {id(p): n for n, p in model.named_parameters()}
        self.buckets: list[Bucket] = []
        self._bucket_of: dict[int, Bucket] = {}
        world = self.comm.world_size if self.shard_buckets else 1
        for i, group in enumerate(plan_buckets(params, int(self.cfg.first_bucket_mb * mb),
                                               int(self.cfg.bucket_mb * mb))):
            unit = FlatUnit(i, group, world, self.comm.env.rank)
            flat = torch.zeros(unit.padded, dtype=group[0].dtype, device=group[0].device)
            b = Bucket(i, group, unit, flat, unit.views(flat))
            self.buckets.append(b)
            for p in group:
                self._bucket_of[id(p)] = b
                p.register_post_accumulate_grad_hook(self._on_grad_ready)
        self._syncing = False
        self._next_launch = 0
        self.reducer = build_reducer(self.cfg.compress_spec, self.comm)
        self._attach_views()
        return model

    def _attach_views(self) -> None:
        for b in self.buckets:
            for p, v in zip(b.params, b.views):
                p.grad = v

    @contextlib.contextmanager
    def micro_step(self, last: bool) -> Iterator[None]:
        if last:
            self._syncing = True
            self._next_launch = 0
            for b in self.buckets:
                b.pending, b.fired, b.work = len(b.params), set(), None
        yield

    def _on_grad_ready(self, p: torch.Tensor) -> None:
        if not self._syncing:
            return
        b = self._bucket_of[id(p)]
        if id(p) not in b.fired:
            b.fired.add(id(p))
            b.pending -= 1
        # Launch every bucket that is full, in index order only.
        while self._next_launch < len(self.buckets) and self.buckets[self._next_launch].pending == 0:
            self._launch(self.buckets[self._next_launch])

    def _launch(self, b: Bucket) -> None:
        b.work = self.reducer.start(b)
        self._next_launch += 1

    def finish_grad_sync(self) -> None:
        if not self._syncing:
            raise RuntimeError("bucketed: step() called without a micro_step(last=True)")
        for b in self.buckets[self._next_launch:]:
            if b.pending:
                missing = [self.names[id(p)] for p in b.params if id(p) not in b.fired]
                warnings.warn(f"bucketed: no gradient this step for {', '.join(missing)}; "
                              "they contribute zeros", stacklevel=2)
            self._launch(b)
        for b in self.buckets:
            assert b.work is not None
            self.reducer.finish(b, b.work)
            b.work = None
        self._syncing = False
        for b in self.buckets:
            for p, v in zip(b.params, b.views):
                if p.grad is None or p.grad.data_ptr() != v.data_ptr():
                    raise RuntimeError(f"bucketed: gradient of {self.names[id(p)]} was replaced outside "
                                       "the strategy (call strategy.zero_grad(), not optimizer.zero_grad())")

    def zero_grad(self) -> None:
        for b in self.buckets:
            b.flat.zero_()
        self._attach_views()

    def on_skipped_step(self) -> None:
        if self.reducer.compresses:  # residuals and warm-start factors may hold NaN now
            self.reducer = build_reducer(self.cfg.compress_spec, self.comm)

    # -- compressor state: every rank's residuals, so that resuming is exact ----------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.reducer.compresses:
            state["compressor"] = self.comm.gather_object(self.reducer.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        saved = state.get("compressor")
        if not self.reducer.compresses or saved is None:
            return
        if len(saved) == self.comm.world_size:
            self.reducer.load_state_dict(saved[self.comm.env.rank])
        else:
            warnings.warn(f"bucketed: checkpoint written by {len(saved)} workers; compression residuals "
                          "start from zero", stacklevel=2)
