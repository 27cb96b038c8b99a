"""torch's ZeRO-1: DistributedDataParallel for the gradients plus
``torch.distributed.optim.ZeroRedundancyOptimizer`` (each rank keeps the optimizer state of a
subset of whole parameters, updates them, and broadcasts them): the reference for ``zero1``.

Its parameter broadcasts are issued inside torch, so the bytes per step are reported as unknown.
Checkpoints consolidate the sharded state on rank 0 into torch's usual optimizer format.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
from torch.distributed.optim import ZeroRedundancyOptimizer

from gradsync.core.config import ParallelConfig
from gradsync.optim.factory import OptimizerFactory
from gradsync.parallel.memory import Holdings, optimizer_tensors
from gradsync.parallel.reference.torch_ddp import TorchDDPStrategy
from gradsync.runtime.dist import Comm


class TorchZero1Strategy(TorchDDPStrategy):
    name = "torch-zero1"
    measures_bytes = False

    def __init__(self, model: nn.Module, optimizer_factory: OptimizerFactory, comm: Comm, cfg: ParallelConfig) -> None:
        super().__init__(model, optimizer_factory, comm, cfg)
        template = self.optimizer
        groups = [dict(g) for g in template.param_groups]
        self.optimizer = ZeroRedundancyOptimizer(
            groups, optimizer_class=type(template), process_group=self.comm.group, lr=template.defaults["lr"]
        )

    def state_dict(self) -> dict[str, Any]:
        assert isinstance(self.optimizer, ZeroRedundancyOptimizer)
        self.optimizer.consolidate_state_dict(to=0)
        opt = self.optimizer.state_dict() if self.comm.env.is_main else None
        return {"model": self.full_model_state(), "optimizer": opt}

    def holdings(self) -> Holdings:
        held = super().holdings()
        assert isinstance(self.optimizer, ZeroRedundancyOptimizer)
        held["optimizer"] = optimizer_tensors(self.optimizer.optim)
        return held
