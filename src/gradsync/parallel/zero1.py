"""ZeRO-1: optimizer state sharded (Rajbhandari et al., SC 2020, stage P_os).

Gradients travel exactly as in ``bucketed`` (all-reduce of flat buckets overlapped with backward);
the buckets are padded to a multiple of the world size and each rank owns the r-th 1/N of every
bucket. A rank keeps AdamW moments only for its chunks, updates only them (parameters are views
into per-bucket flat buffers), then every bucket's parameters are all-gathered: 8Ψ/N bytes of
optimizer state instead of 8Ψ, for one extra all-gather of the parameters per step. The gathers
are asynchronous and the next forward waits, module by module, only for its own parameters, so
they overlap the forward of the layers before.
"""

from __future__ import annotations

import torch.nn as nn

from gradsync.core.config import ParallelConfig
from gradsync.optim.factory import OptimizerFactory
from gradsync.parallel.grad_paths.bucket_allreduce import BucketedAllReduce
from gradsync.parallel.memory import Holdings
from gradsync.parallel.sharding.sharded import ParamGathers, ShardedStrategy
from gradsync.runtime.dist import Comm


class Zero1Strategy(ShardedStrategy):
    name = "zero1"
    grad_path: BucketedAllReduce

    def __init__(self, model: nn.Module, optimizer_factory: OptimizerFactory, comm: Comm, cfg: ParallelConfig) -> None:
        super().__init__(model, optimizer_factory, comm, cfg)
        self.grad_path = BucketedAllReduce(model, comm, cfg, shard=True)
        self.units = self.grad_path.units
        self.gathers = ParamGathers(model, self.units, comm)
        self.param_chunks = self.gathers.chunks
        self.grad_chunks = [b.unit.my_chunk(b.flat) for b in self.grad_path.buckets]
        self.shard_optimizer()

    def holdings(self) -> Holdings:
        held = super().holdings()
        held["grads"] = [b.flat for b in self.grad_path.buckets]  # full gradients: only the moments are sharded
        return held
