"""torch.nn.parallel.DistributedDataParallel, the reference every strategy is compared with, and,
with ``--compress``, torch's own communication hooks (``fp16_compress_hook``,
``bf16_compress_hook``, ``powerSGD_hook``): the references for gradsync's compressors.

Gradient bytes are counted by wrapping torch's hooks where the bytes they send are known (the
all-reduce, the fp16/bf16 casts); torch's PowerSGD hook issues its collectives internally, so its
bytes are reported as unknown. DDP waits for its buckets inside an autograd callback, so the time
blocked on communication is not observable from outside either (``measures_blocked_time = False``).
torch's PowerSGD runs plain all-reduce for its first iteration (``start_powerSGD_iter=2``, the
least it allows with error feedback), then compresses like gradsync's ``powersgd``.
"""

# No ``from __future__ import annotations``: DDP checks the hook's annotations at run time.

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
from torch.nn.parallel import DistributedDataParallel

from gradsync.core.config import ParallelConfig
from gradsync.core.errors import DistributedError
from gradsync.optim.factory import OptimizerFactory
from gradsync.parallel.base import Strategy
from gradsync.runtime.dist import Comm


class TorchDDPStrategy(Strategy):
    broadcasts_buffers = False  # DDP itself does (broadcast_buffers=True)
    tracks_unused = False  # DDP itself does (find_unused_parameters)
    name = "torch-ddp"
    measures_blocked_time = False

    def compile(self) -> None:
        """The DDP wrapper compiled whole, as its users write it (``torch.compile(ddp_model)``):
        torch's DDPOptimizer then splits the graph at bucket boundaries."""
        self.module.compile()

    def __init__(self, model: nn.Module, optimizer_factory: OptimizerFactory, comm: Comm, cfg: ParallelConfig) -> None:
        super().__init__(model, optimizer_factory, comm, cfg)
        device_ids = [self.comm.env.device.index] if self.comm.env.device.type == "cuda" else None
        ddp = DistributedDataParallel(
            model,
            device_ids=device_ids,
            bucket_cap_mb=self.cfg.bucket_mb,
            process_group=self.comm.group,
            find_unused_parameters=self.cfg.find_unused,
        )
        compress = self.cfg.compress_spec
        if compress.name == "none":
            ddp.register_comm_hook(self.comm, _counting_allreduce_hook)
        elif compress.name in ("fp16", "bf16"):
            hook = _counting_fp16_hook if compress.name == "fp16" else _counting_bf16_hook
            ddp.register_comm_hook(self.comm, hook)
        else:  # powersgd
            self.measures_bytes = False
            self.powersgd_state = powerSGD_hook.PowerSGDState(
                process_group=self.comm.group,
                matrix_approximation_rank=int(compress["rank"]),
                start_powerSGD_iter=2,
                use_error_feedback=True,
                warm_start=bool(compress["warm_start"]),
            )
            ddp.register_comm_hook(self.powersgd_state, _checked_powersgd_hook)
        self.module = ddp

    @contextlib.contextmanager
    def micro_step(self, last: bool) -> Iterator[None]:
        assert isinstance(self.module, DistributedDataParallel)
        with contextlib.nullcontext() if last else self.module.no_sync():
            yield

    def finish_grad_sync(self) -> None:
        pass  # DDP has already averaged the gradients by the end of backward


def _counting_allreduce_hook(comm: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    comm.count("all_reduce", bucket.buffer())
    return default_hooks.allreduce_hook(comm.group, bucket)


def _count_low_precision(comm: Any, bucket: dist.GradBucket, dtype: torch.dtype) -> None:
    t = bucket.buffer()
    comm.stats.raw_bytes += t.numel() * t.element_size()
    comm.count("all_reduce", torch.empty(t.numel(), dtype=dtype, device="meta"))


def _counting_fp16_hook(comm: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    _count_low_precision(comm, bucket, torch.float16)
    return default_hooks.fp16_compress_hook(comm.group, bucket)


def _counting_bf16_hook(comm: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    _count_low_precision(comm, bucket, torch.bfloat16)
    return default_hooks.bf16_compress_hook(comm.group, bucket)


def _checked_powersgd_hook(
    state: powerSGD_hook.PowerSGDState, bucket: dist.GradBucket
) -> torch.futures.Future[torch.Tensor]:
    """torch's PowerSGD hook, refusing the one bucket shape that hangs it on gloo: when every tensor
    of a bucket is compressed, it all-reduces an empty tensor, which gloo rejects inside a future
    callback, and the step never completes. Fail with a message instead of hanging."""
    if dist.get_backend(state.process_group) == "gloo" and state.iter >= state.start_powerSGD_iter:

        def compressed(t: torch.Tensor) -> bool:
            if t.dim() < 2:
                return False
            n, m = t.shape[0], t.numel() // t.shape[0]
            r = min(n, m, state.matrix_approximation_rank)
            return (n + m) * r * state.min_compression_rate < n * m

        if all(compressed(t) for t in bucket.gradients()):
            raise DistributedError(
                "torch's PowerSGD hook hangs on gloo when a DDP bucket holds only "
                "compressible matrices; use a larger --bucket-mb so that every bucket "
                "also holds a bias or norm vector"
            )
    return powerSGD_hook.powerSGD_hook(state, bucket)
