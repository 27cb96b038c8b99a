"""ZeRO-1: optimizer state sharded (Rajbhandari et al., SC 2020, stage P_os).

Gradients travel exactly as in ``bucketed`` (all-reduce of flat buckets overlapped with backward);
the buckets are padded to a multiple of the world size and each rank owns the r-th 1/N of every
bucket. A rank keeps AdamW moments only for its chunks, updates only them (parameters are views
into per-bucket flat buffers), then every bucket's parameters are all-gathered: 8Ψ/N bytes of
optimizer state instead of 8Ψ, for one extra all-gather of the parameters per step.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from gradsync.parallel.bucketed import BucketedStrategy
from gradsync.parallel.sharding import ZeroStrategy, bind_params


class Zero1Strategy(ZeroStrategy, BucketedStrategy):
    name = "zero1"
    shard_buckets = True

    def wrap(self, model: nn.Module) -> nn.Module:
        BucketedStrategy.wrap(self, model)
        self.units = [b.unit for b in self.buckets]
        self.param_flats = []
        for u in self.units:
            flat = torch.zeros(u.padded, dtype=u.params[0].dtype, device=u.params[0].device)
            bind_params(u, flat)
            self.param_flats.append(flat)
        self.param_chunks = [u.my_chunk(f) for u, f in zip(self.units, self.param_flats)]
        self.grad_chunks = [b.unit.my_chunk(b.flat) for b in self.buckets]
        return model

    def after_update(self) -> None:
        self.gather_units(self.param_flats)

    def holdings(self) -> dict[str, list[torch.Tensor | None]]:
        held = super().holdings()
        held["grads"] = [b.flat for b in self.buckets]  # full gradients: only the moments are sharded
        return held
