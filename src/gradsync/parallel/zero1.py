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

import torch
import torch.nn as nn

from gradsync.parallel.bucketed import BucketedStrategy
from gradsync.parallel.sharding import ZeroStrategy


class Zero1Strategy(ZeroStrategy, BucketedStrategy):
    name = "zero1"
    shard_buckets = True

    def wrap(self, model: nn.Module) -> nn.Module:
        BucketedStrategy.wrap(self, model)
        self.units = [b.unit for b in self.buckets]
        self.setup_param_gathers(model)
        self.grad_chunks = [b.unit.my_chunk(b.flat) for b in self.buckets]
        return model

    def holdings(self) -> dict[str, list[torch.Tensor | None]]:
        held = super().holdings()
        held["grads"] = [b.flat for b in self.buckets]  # full gradients: only the moments are sharded
        return held
