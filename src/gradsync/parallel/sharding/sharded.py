"""What ZeRO-1/2/3 share (Rajbhandari et al., SC 2020): a sharded optimizer over units, the global
gradient norm from every rank's chunks, full-model checkpoints; and, for ZeRO-1/2, the parameter
all-gathers after the update (:class:`ParamGathers`).

Hybrid sharding (``zero2:hybrid=true``, ``zero3:hybrid=true``; PyTorch's HSDP, Zhao et al. VLDB
2023): the state is sharded over the workers of a node only (``shard_comm``: the fast link) and
every node holds a replica of it. A unit's gradients are reduce-scattered inside the node and the
node's shard is all-reduced with the ranks holding the same shard on the other nodes
(``replicas``: the slow link carries 2(N−1)/N of the gradient per node, as the two-level
all-reduce); parameters are gathered inside the node. Memory per rank is that of ZeRO over the p
workers of a node, not over all N·p ranks.

The gradient paths are parts the strategies hold (:mod:`gradsync.parallel.grad_paths.bucket_allreduce` for
ZeRO-1, :mod:`gradsync.parallel.grad_paths.reduce_scatter` for ZeRO-2/3); the layout is in
:mod:`gradsync.parallel.layout`, the optimizer in :mod:`gradsync.parallel.sharding.sharded_optimizer`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn as nn

from gradsync.checkpoint.slices import ShardedSlices
from gradsync.core.config import ParallelConfig
from gradsync.optim.factory import OptimizerFactory
from gradsync.parallel.base import Strategy
from gradsync.parallel.layout import FlatUnit, bind_params
from gradsync.parallel.memory import Holdings, optimizer_tensors
from gradsync.parallel.sharding.sharded_optimizer import ShardedOptimizer
from gradsync.runtime.dist import Comm
from gradsync.runtime.topology import TwoLevel, two_level_groups


def bind_unit_buffers(units: list[FlatUnit]) -> list[torch.Tensor]:
    """A padded flat buffer per unit, holding the unit's parameters, which become views into it."""
    flats = []
    for u in units:
        flat = u.zeros()
        bind_params(u, flat)
        flats.append(flat)
    return flats


class ParamGathers:
    """ZeRO-1/2's replicated parameters: views into per-unit flat buffers that :meth:`launch`
    refills by asynchronous all-gather after the update. Every module waits, in its forward, only
    for the units that hold its own parameters, so the gathers of later layers overlap the
    forward of earlier ones. ``chunks[u]`` is this rank's part of unit ``u``: what it updates."""

    def __init__(self, model: nn.Module, units: list[FlatUnit], comm: Comm) -> None:
        self.units = units
        self.comm = comm
        self.flats = bind_unit_buffers(units)
        self.chunks = [u.my_chunk(f) for u, f in zip(units, self.flats)]
        self._inflight: dict[int, tuple[Any, torch.Tensor]] = {}
        unit_of = {id(p): u.index for u in units for p in u.params}
        for m in model.modules():
            mine = sorted({unit_of[id(p)] for p in m.parameters(recurse=False) if id(p) in unit_of})
            if mine:
                m.register_forward_pre_hook(lambda _m, _a, mine=mine: self.wait(mine))

    def launch(self) -> None:
        # Units are in backward order; launch in forward order, so the first layers arrive first.
        for u in reversed(self.units):
            send = self.chunks[u.index].clone()  # the input must not alias the output
            with self.comm.labelled(f"gather unit {u.index}"):
                self._inflight[u.index] = (self.comm.all_gather(self.flats[u.index], send, async_op=True), send)

    def wait(self, units: list[int] | None = None) -> None:
        """Wait for the all-gathers of ``units`` (all when None) still in flight."""
        for i in list(self._inflight) if units is None else units:
            pending = self._inflight.pop(i, None)
            if pending is not None:
                self.comm.wait(pending[0])


class ShardedStrategy(Strategy):
    """A strategy whose optimizer is sharded over ``units``: subclasses set ``units``,
    ``param_chunks``, ``grad_chunks`` and their gradient path, and ``gathers`` where parameters
    are gathered after the update (ZeRO-1/2), then call :meth:`shard_optimizer`."""

    compile_blocker: ClassVar[str] = (
        "its forward hooks wait for or gather parameters (collectives), which "
        "torch.compile cannot trace; use bucketed or torch-ddp with --compile"
    )
    units: list[FlatUnit]
    param_chunks: list[torch.Tensor]
    grad_chunks: list[torch.Tensor]
    gathers: ParamGathers | None = None
    shard_comm: Comm  # the ranks the state is sharded over: every rank, or the node's (hybrid)
    replicas: Comm | None = None  # hybrid: the ranks holding this rank's shard on the other nodes
    levels: TwoLevel | None = None

    def __init__(self, model: nn.Module, optimizer_factory: OptimizerFactory, comm: Comm, cfg: ParallelConfig) -> None:
        super().__init__(model, optimizer_factory, comm, cfg)
        self.init_sharding()

    def init_sharding(self) -> None:
        """Shard over every rank, or with ``hybrid=true`` over the node's ranks, one replica per node
        (collective: builds the node groups)."""
        self.shard_comm = self.comm
        if self.spec.options.get("hybrid"):
            self.levels = two_level_groups(self.comm)
            self.shard_comm, self.replicas = self.levels.intra, self.levels.inter
        # one replica writes a sharded checkpoint; the others' slices are empty (the same bytes are on node 0)
        self.slices = ShardedSlices(self, self.shard_comm, writes=self.replicas is None or self.replicas.rank == 0)

    def describe(self) -> str:
        if self.levels is None:
            return ""
        return (
            f"hybrid sharding over {self.levels.layout.describe()}: state sharded over the node's workers, "
            "one replica per node; gradient shards all-reduced across nodes"
        )

    def shard_optimizer(self) -> None:
        """Replace the full-model optimizer by the same optimizer over this rank's pieces."""
        self.optimizer = ShardedOptimizer(self.optimizer, self.units, self.param_chunks, self.grad_chunks)

    def grad_tensors(self) -> list[torch.Tensor]:
        return list(self.grad_chunks)

    def optimizer_params(self, params: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
        return list(self.optimizer.pieces_of(params))

    def grad_norm(self) -> float:
        """The global norm: every rank's sum of squares over its chunks, summed over ranks."""
        sq = sum(float(g.double().pow(2).sum()) for g in self.grad_chunks)
        return math.sqrt(self.shard_comm.sum_scalars([sq])[0])  # replicas hold the same chunks

    def finish_grad_sync(self) -> None:
        super().finish_grad_sync()
        self.wait_params()  # a parameter no forward used still has its gather in flight

    def wait_params(self) -> None:
        """Wait for parameter all-gathers still in flight."""
        if self.gathers is not None:
            self.gathers.wait()

    def after_update(self) -> None:
        if self.gathers is not None:
            self.gathers.launch()

    def settle(self) -> None:
        self.wait_params()

    def live_state(self) -> dict[str, Any]:
        """The whole parameters (ZeRO-1/2 gather them after each update) and this rank's shard of
        the optimizer state: the same rank of a replica with as many workers owns the same shard."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.local_state_dict()}

    def load_live_state(self, state: dict[str, Any]) -> None:
        self.wait_params()
        self.model.load_state_dict(state["model"])
        self.optimizer.load_local_state_dict(state["optimizer"])

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.full_model_state(), "optimizer": self.optimizer.full_state_dict(self.shard_comm)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait_params()
        self.load_full_model_state(state["model"])
        self.optimizer.load_full_state_dict(state["optimizer"])

    def full_model_state(self) -> dict[str, torch.Tensor]:
        self.wait_params()
        return super().full_model_state()

    def load_full_model_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)  # parameters are views into the flat buffers: copied in place

    def holdings(self) -> Holdings:
        return {
            "params": list(self.model.parameters()),
            "grads": list(self.grad_chunks),
            "optimizer": optimizer_tensors(self.optimizer.optimizer),
        }
