"""ZeRO-2: optimizer state and gradients sharded (Rajbhandari et al., SC 2020, stage P_os+g).

Parameters are grouped into buckets (reverse registration order, as in ``bucketed``), padded to a
multiple of the world size, and each bucket's parameters are views into one flat buffer. During
backward, gradients go through :class:`~gradsync.parallel.grad_paths.reduce_scatter.ReduceScatterGrads`: copied
into the bucket's buffer as they are accumulated, reduce-scattered asynchronously when the bucket
is full (overlapped with the rest of backward), and added to the rank's shard; a rank holds 4Ψ/N
bytes of gradients plus at most two buckets in flight. With gradient accumulation every
micro-step is reduce-scattered (as DeepSpeed's stage 2 does): communication grows with the number
of micro-steps, memory does not. With ``hybrid=true`` all of this is over the workers of a node, and
each unit's shard is all-reduced across the nodes (:mod:`gradsync.parallel.sharding.sharded`). After
the sharded update every bucket's parameters are all-gathered asynchronously; the next forward
waits, module by module, only for the buckets that hold its own parameters, so the gathers overlap
the forward of the layers before.
"""

from __future__ import annotations

import torch.nn as nn

from gradsync.core.config import ParallelConfig
from gradsync.optim.factory import OptimizerFactory
from gradsync.parallel.grad_paths.reduce_scatter import ReduceScatterGrads
from gradsync.parallel.layout import bucket_units
from gradsync.parallel.memory import Holdings
from gradsync.parallel.sharding.sharded import ParamGathers, ShardedStrategy
from gradsync.runtime.dist import Comm


class Zero2Strategy(ShardedStrategy):
    name = "zero2"
    grad_path: ReduceScatterGrads

    def __init__(self, model: nn.Module, optimizer_factory: OptimizerFactory, comm: Comm, cfg: ParallelConfig) -> None:
        super().__init__(model, optimizer_factory, comm, cfg)
        shard = self.shard_comm
        self.units = bucket_units(model, cfg.first_bucket_mb, cfg.bucket_mb, shard.world_size, shard.rank)
        self.gathers = ParamGathers(model, self.units, shard)
        self.param_chunks = self.gathers.chunks
        self.grad_path = ReduceScatterGrads(
            self.name,
            model,
            self.units,
            shard,
            on_launch=self.memory.sample,
            replicas=self.replicas,
            warn_unused=not cfg.find_unused,
        )
        self.grad_chunks = self.grad_path.chunks
        self.shard_optimizer()

    def holdings(self) -> Holdings:
        held = super().holdings()
        held["grads"] = [*held["grads"], *self.grad_path.in_flight()]
        return held
