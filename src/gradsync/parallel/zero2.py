"""ZeRO-2: optimizer state and gradients sharded (Rajbhandari et al., SC 2020, stage P_os+g).

Parameters are grouped into buckets (reverse registration order, as in ``bucketed``), padded to a
multiple of the world size, and each bucket's parameters are views into one flat buffer. During
backward, gradients go through :class:`~gradsync.parallel.sharding.ReduceScatterStrategy`: copied
into the bucket's buffer as they are accumulated, reduce-scattered asynchronously when the bucket
is full (overlapped with the rest of backward), and added to the rank's shard; a rank holds 4Ψ/N
bytes of gradients plus at most two buckets in flight. With gradient accumulation every
micro-step is reduce-scattered (as DeepSpeed's stage 2 does): communication grows with the number
of micro-steps, memory does not. After the sharded update the parameters are all-gathered, bucket
by bucket.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from gradsync.parallel.bucketed import plan_buckets
from gradsync.parallel.sharding import FlatUnit, ReduceScatterStrategy, bind_params


class Zero2Strategy(ReduceScatterStrategy):
    name = "zero2"

    def wrap(self, model: nn.Module) -> nn.Module:
        params = [p for p in model.parameters() if p.requires_grad][::-1]
        mb = 1024 * 1024
        groups = plan_buckets(params, int(self.cfg.first_bucket_mb * mb), int(self.cfg.bucket_mb * mb))
        world, rank = self.comm.world_size, self.comm.env.rank
        self.units = [FlatUnit(i, g, world, rank) for i, g in enumerate(groups)]
        self.param_flats = []
        for u in self.units:
            flat = torch.zeros(u.padded, dtype=u.params[0].dtype, device=u.params[0].device)
            bind_params(u, flat)
            self.param_flats.append(flat)
        self.param_chunks = [u.my_chunk(f) for u, f in zip(self.units, self.param_flats)]
        self.setup_gradients(model)
        return model

    def after_update(self) -> None:
        self.gather_units(self.param_flats)
