"""The bucketed all-reduce gradient path (the design of PyTorch DDP, Li et al. VLDB 2020): a part
that ``bucketed`` and ZeRO-1 hold.

Parameters are grouped, in reverse order of registration (roughly the order in which backward
produces their gradients), into flat buckets (:func:`gradsync.parallel.layout.bucket_units`): a
small first bucket so communication starts early, then buckets of ``parallel.bucket_mb``. Each
parameter's ``.grad`` is a view into its bucket, so autograd accumulates straight into the flat
buffer and nothing is copied. A post-accumulate-grad hook counts down the bucket; when it is full
its reducer starts (an asynchronous all-reduce of the average, or a compressed form of it:
:mod:`gradsync.parallel.grad_paths.compression`) while backward goes on, so nothing but the wait is left
after backward. Buckets are launched strictly in index order, so every rank issues the same
collectives in the same order even if some parameter is late or unused on one rank (an unused
parameter contributes a zero gradient, with a warning unless ``parallel.find_unused`` says to
expect it, never a hang: :mod:`gradsync.parallel.unused`). On the non-final
micro-steps of gradient accumulation the hooks do nothing: gradients only accumulate locally.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn

from gradsync.core.config import ParallelConfig
from gradsync.parallel.grad_paths.compression import Reducer, build_reducer
from gradsync.parallel.grad_paths.hierarchical import HierarchicalMean
from gradsync.parallel.layout import Bucket, bucket_units
from gradsync.runtime import timeline
from gradsync.runtime.dist import Comm
from gradsync.runtime.topology import TwoLevel


class BucketedAllReduce:
    """Gradients in flat buckets, reduced as backward fills them. ``shard`` pads every bucket to
    a multiple of the world size (ZeRO-1 shards each bucket's optimizer state)."""

    def __init__(
        self, model: nn.Module, comm: Comm, cfg: ParallelConfig, shard: bool = False, levels: TwoLevel | None = None
    ) -> None:
        self.comm = comm
        self.compress_spec = cfg.compress_spec
        self.warn_unused = not cfg.find_unused  # with find_unused, a parameter without gradient is expected
        self.levels = levels
        self.names = {id(p): n for n, p in model.named_parameters()}
        # sharded buckets split among all ranks; two-level ones among the workers of a node
        world = comm.world_size if shard else levels.intra.world_size if levels else 1
        rank = levels.intra.rank if levels and not shard else comm.env.rank
        self.units = bucket_units(model, cfg.first_bucket_mb, cfg.bucket_mb, world, rank)
        self.buckets: list[Bucket] = []
        self._bucket_of: dict[int, Bucket] = {}
        for u in self.units:
            flat = u.zeros()
            b = Bucket(u.index, u.params, u, flat, u.views(flat))
            self.buckets.append(b)
            for p in u.params:
                self._bucket_of[id(p)] = b
                p.register_post_accumulate_grad_hook(self._on_grad_ready)
        self._syncing = False
        self._next_launch = 0
        self.reducer = self._build_reducer()
        self._attach_views()

    def _build_reducer(self) -> Reducer:
        return HierarchicalMean(self.levels) if self.levels else build_reducer(self.compress_spec, self.comm)

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
            if b.pending == 0:
                timeline.mark(f"bucket {b.index} ready", bytes=b.flat.numel() * b.flat.element_size())
        # Launch every bucket that is full, in index order only.
        while self._next_launch < len(self.buckets) and self.buckets[self._next_launch].pending == 0:
            self._launch(self.buckets[self._next_launch])

    def _launch(self, b: Bucket) -> None:
        with self.comm.labelled(f"bucket {b.index}"):
            b.work = self.reducer.start(b)
        self._next_launch += 1

    def finish(self) -> None:
        """Launch what backward left (unused parameters contribute zeros), wait for every bucket,
        and check that every ``.grad`` is still its bucket view."""
        if not self._syncing:
            raise RuntimeError("bucketed: step() called without a micro_step(last=True)")
        for b in self.buckets[self._next_launch :]:
            if b.pending and self.warn_unused:
                missing = [self.names[id(p)] for p in b.params if id(p) not in b.fired]
                warnings.warn(
                    f"bucketed: no gradient this step for {', '.join(missing)}; they contribute zeros "
                    "(parallel.find_unused: as torch DDP's find_unused_parameters)",
                    stacklevel=3,
                )
            self._launch(b)
        for b in self.buckets:
            assert b.work is not None
            self.reducer.finish(b, b.work)
            b.work = None
        self._syncing = False
        for b in self.buckets:
            for p, v in zip(b.params, b.views):
                if p.grad is None or p.grad.data_ptr() != v.data_ptr():
                    raise RuntimeError(
                        f"bucketed: gradient of {self.names[id(p)]} was replaced outside "
                        "the strategy (call strategy.zero_grad(), not optimizer.zero_grad())"
                    )

    def zero_(self) -> None:
        for b in self.buckets:
            b.flat.zero_()
        self._attach_views()

    def reset_compressor(self) -> None:
        """After a skipped step: residuals and warm-start factors may hold NaN now."""
        if self.reducer.compresses:
            self.reducer = self._build_reducer()

    # -- compressor state: every rank's residuals, so that resuming is exact ----------------------
    def compressor_state(self) -> list[dict[str, Any]] | None:
        """Every rank's compressor state on rank 0 (collective); None when nothing compresses."""
        return self.comm.gather_object(self.reducer.state_dict()) if self.reducer.compresses else None

    def load_compressor_state(self, saved: list[dict[str, Any]] | None) -> None:
        if not self.reducer.compresses or saved is None:
            return
        if len(saved) == self.comm.world_size:
            self.reducer.load_state_dict(saved[self.comm.env.rank])
        else:
            warnings.warn(
                f"bucketed: checkpoint written by {len(saved)} workers; compression residuals start from zero",
                stacklevel=3,
            )
