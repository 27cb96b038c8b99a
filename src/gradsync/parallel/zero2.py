"""ZeRO-2: optimizer state and gradients sharded (Rajbhandari et al., SC 2020, stage P_os+g).

Parameters are grouped into buckets (reverse registration order, as in ``bucketed``), padded to a
multiple of the world size, and each bucket's parameters are views into one flat buffer. During
backward, gradients go through :class:`~gradsync.parallel.sharding.ReduceScatterStrategy`: copied
into the bucket's buffer as they are accumulated, reduce-scattered asynchronously when the bucket
is full (overlapped with the rest of backward), and added to the rank's shard; a rank holds 4Ψ/N
bytes of gradients plus at most two buckets in flight. With gradient accumulation every
micro-step is reduce-scattered (as DeepSpeed's stage 2 does): communication grows with the number
of micro-steps, memory does not. After the sharded update every bucket's parameters are
all-gathered asynchronously; the next forward waits, module by module, only for the buckets that
hold its own parameters, so the gathers overlap the forward of the layers before.
"""

from __future__ import annotations

import torch.nn as nn

from gradsync.parallel.bucketed import plan_buckets
from gradsync.parallel.sharding import FlatUnit, ReduceScatterStrategy


class Zero2Strategy(ReduceScatterStrategy):
    name = "zero2"

    def wrap(self, model: nn.Module) -> nn.Module:
        params = [p for p in model.parameters() if p.requires_grad][::-1]
        mb = 1024 * 1024
        groups = plan_buckets(params, int(self.cfg.first_bucket_mb * mb), int(self.cfg.bucket_mb * mb))
        world, rank = self.comm.world_size, self.comm.env.rank
        self.units = [FlatUnit(i, g, world, rank) for i, g in enumerate(groups)]
        self.setup_param_gathers(model)
        self.setup_gradients(model)
        return model
