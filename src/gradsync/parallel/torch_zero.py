"""torch's ZeRO-1: DistributedDataParallel for the gradients plus
``torch.distributed.optim.ZeroRedundancyOptimizer`` (each rank keeps the optimizer state of a
subset of whole parameters, updates them, and broadcasts them): the reference for ``zero1``.

Its parameter broadcasts are issued inside torch, so the bytes per step are reported as unknown.
Checkpoints consolidate the sharded state on rank 0 into torch's usual optimizer format.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed.optim import ZeroRedundancyOptimizer

from gradsync.parallel.base import OptimizerFactory
from gradsync.parallel.memory import optimizer_tensors
from gradsync.parallel.torch_ddp import TorchDDPStrategy


class TorchZero1Strategy(TorchDDPStrategy):
    name = "torch-zero1"
    measures_bytes = False

    def make_optimizer(self, optimizer_factory: OptimizerFactory) -> torch.optim.Optimizer:
        template = optimizer_factory(self.model)
        groups = [dict(g) for g in template.param_groups]
        return ZeroRedundancyOptimizer(groups, optimizer_class=type(template), process_group=self.comm.group,
                                       lr=template.defaults["lr"])

    def state_dict(self) -> dict[str, Any]:
        assert isinstance(self.optimizer, ZeroRedundancyOptimizer)
        self.optimizer.consolidate_state_dict(to=0)
        opt = self.optimizer.state_dict() if self.comm.env.is_main else None
        return {"model": self.full_model_state(), "optimizer": opt}

    def holdings(self) -> dict[str, list[torch.Tensor | None]]:
        held = super().holdings()
        assert isinstance(self.optimizer, ZeroRedundancyOptimizer)
        held["optimizer"] = optimizer_tensors(self.optimizer.optim)
        return held
