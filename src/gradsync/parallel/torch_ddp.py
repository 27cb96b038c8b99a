"""torch.nn.parallel.DistributedDataParallel, the reference every strategy is compared with.

Gradient bytes are counted by wrapping torch's own default all-reduce communication hook. DDP
waits for its buckets inside an autograd callback, so the time blocked on communication is not
observable from outside and is reported as unknown (``measures_blocked_time = False``)."""

# No ``from __future__ import annotations``: DDP checks the hook's annotations at run time.

import contextlib
from typing import Any, Iterator

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from gradsync.parallel.base import Strategy


class TorchDDPStrategy(Strategy):
    name = "torch-ddp"
    measures_blocked_time = False

    def wrap(self, model: nn.Module) -> nn.Module:
        device_ids = [self.comm.env.device.index] if self.comm.env.device.type == "cuda" else None
        ddp = DistributedDataParallel(model, device_ids=device_ids, bucket_cap_mb=self.cfg.bucket_mb,
                                      process_group=self.comm.group)
        ddp.register_comm_hook(self.comm, _counting_allreduce_hook)
        return ddp

    @contextlib.contextmanager
    def micro_step(self, last: bool) -> Iterator[None]:
        assert isinstance(self.module, DistributedDataParallel)
        with contextlib.nullcontext() if last else self.module.no_sync():
            yield

    def finish_grad_sync(self) -> None:
        pass  # DDP has already averaged the gradients by the end of backward


def _counting_allreduce_hook(comm: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    t = bucket.buffer()
    comm.count("all_reduce", t)
    return default_hooks.allreduce_hook(comm.group, bucket)
