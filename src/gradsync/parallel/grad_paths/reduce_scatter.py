"""The reduce-scatter gradient path of ZeRO-2 and ZeRO-3: a part the strategies hold.

As each parameter's gradient is accumulated it is copied into its unit's buffer and released.
When a unit's last gradient is in, its buffer is divided by the world size and reduce-scattered
asynchronously, strictly in unit order (so every rank issues the same collectives in the same
order, as in ``bucketed``); the chunk a rank receives is added to its gradient shard. At most
``max_inflight`` units travel at once: launching one more first completes the oldest and frees
its buffer, which bounds gradient memory to the shard plus a few buffers. Every micro-step is
reduced (gradient accumulation happens in the shard, as DeepSpeed's stage 2 does).

With ``replicas`` (hybrid sharding: ``comm`` is the node, ``replicas`` the ranks holding the same
shard on the other nodes) a unit is reduce-scattered inside the node at once and the received
chunk all-reduced across the nodes asynchronously: the slow link starts on a unit as soon as
backward has produced it, as in the two-level all-reduce (:mod:`gradsync.parallel.grad_paths.hierarchical`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn as nn

from gradsync.parallel.layout import FlatUnit
from gradsync.runtime import timeline
from gradsync.runtime.dist import Comm


class ReduceScatterGrads:
    """This rank's gradient shard (``chunks[u]`` for unit ``u``), filled by reduce-scatters
    during backward. ``on_unit_done(u)`` runs when every gradient of ``u`` is in its buffer (ZeRO-3
    releases the parameters); ``on_launch()`` when a unit starts travelling (memory is highest)."""

    max_inflight = 2

    def __init__(
        self,
        name: str,
        model: nn.Module,
        units: list[FlatUnit],
        comm: Comm,
        on_unit_done: Callable[[FlatUnit], None] = lambda u: None,
        on_launch: Callable[[], Any] = lambda: None,
        replicas: Comm | None = None,
        warn_unused: bool = True,
    ) -> None:
        self.name = name
        self.warn_unused = warn_unused
        self.units = units
        self.comm = comm
        self.replicas = replicas
        self.world = comm.world_size * (replicas.world_size if replicas is not None else 1)
        self.on_unit_done = on_unit_done
        self.on_launch = on_launch
        # one chunk per unit, in the unit's dtype (units never mix dtypes: a model may hold fp32
        # and fp64 parameters)
        self.chunks: list[torch.Tensor] = [
            torch.zeros(u.chunk, dtype=u.params[0].dtype, device=u.params[0].device) for u in units
        ]
        self.names = {id(p): n for n, p in model.named_parameters()}
        self._where: dict[int, tuple[FlatUnit, int]] = {}
        for u in units:
            for p, off in zip(u.params, u.offsets):
                self._where[id(p)] = (u, off)
                p.register_post_accumulate_grad_hook(self._on_grad_ready)
        self._buffers: dict[int, torch.Tensor] = {}
        self._pending: list[set[int]] = []
        self._inflight: list[tuple[FlatUnit, torch.Tensor, torch.Tensor, Any]] = []
        self._next_launch = 0
        self._active = False
        self._synced = False

    @contextlib.contextmanager
    def micro_step(self, last: bool) -> Iterator[None]:
        self._pending = [{id(p) for p in u.params} for u in self.units]
        self._next_launch = 0
        self._active = True
        try:
            yield
        finally:
            self._active = False
        self._drain()
        self._synced = last

    def _buffer(self, u: FlatUnit) -> torch.Tensor:
        if u.index not in self._buffers:
            self._buffers[u.index] = u.zeros()
        return self._buffers[u.index]

    def _on_grad_ready(self, p: torch.Tensor) -> None:
        if not self._active:
            raise RuntimeError(f"{self.name}: backward ran outside strategy.micro_step(); its gradients would be lost")
        u, off = self._where[id(p)]
        assert p.grad is not None
        self._buffer(u)[off : off + p.numel()].copy_(p.grad.reshape(-1))
        p.grad = None  # the unit's buffer holds it now
        pending = self._pending[u.index]
        pending.discard(id(p))
        if not pending:
            timeline.mark(f"unit {u.index} ready", bytes=4 * u.padded)
            self.on_unit_done(u)
        while self._next_launch < len(self.units) and not self._pending[self._next_launch]:
            self._launch(self.units[self._next_launch])

    def _launch(self, u: FlatUnit) -> None:
        while len(self._inflight) >= self.max_inflight:
            self._complete_oldest()
        buf = self._buffer(u).div_(self.world)
        out = torch.empty(u.chunk, dtype=buf.dtype, device=buf.device)
        with self.comm.labelled(f"unit {u.index}"), (self.replicas or self.comm).labelled(f"unit {u.index}"):
            if self.replicas is None:
                work = self.comm.reduce_scatter(out, buf, async_op=True)
            else:
                self.comm.reduce_scatter(out, buf)
                work = self.replicas.all_reduce(out, async_op=True)
        self._inflight.append((u, buf, out, work))
        self._next_launch += 1
        self.on_launch()

    def _complete_oldest(self) -> None:
        u, _, out, work = self._inflight.pop(0)
        (self.comm if self.replicas is None else self.replicas).wait(work)
        self.chunks[u.index].add_(out)
        del self._buffers[u.index]

    def _drain(self) -> None:
        for u in self.units[self._next_launch :]:
            if self._pending[u.index]:
                missing = [self.names[i] for i in self._pending[u.index]]
                if self.warn_unused:
                    warnings.warn(
                        f"{self.name}: no gradient this step for {', '.join(missing)}; they contribute zeros "
                        "(parallel.find_unused: as torch DDP's find_unused_parameters)",
                        stacklevel=5,
                    )
                self.on_unit_done(u)
            self._launch(u)
        while self._inflight:
            self._complete_oldest()

    def finish(self) -> None:
        if not self._synced:
            raise RuntimeError(f"{self.name}: step() called without a micro_step(last=True)")
        self._synced = False

    def zero_(self) -> None:
        for g in self.chunks:
            g.zero_()

    def in_flight(self) -> list[torch.Tensor]:
        """The unit buffers and received chunks that exist right now (for memory accounting)."""
        return list(self._buffers.values()) + [out for _, _, out, _ in self._inflight]
