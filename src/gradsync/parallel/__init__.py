"""Data-parallel strategies behind one interface (:class:`~gradsync.parallel.base.Strategy`).

A new strategy is one new file and one line in :data:`STRATEGIES`.
"""

from __future__ import annotations

import torch.nn as nn

from gradsync.config import ParallelConfig
from gradsync.dist import Comm
from gradsync.parallel.allreduce import AllReduceStrategy
from gradsync.parallel.base import OptimizerFactory, Strategy
from gradsync.parallel.bucketed import BucketedStrategy
from gradsync.parallel.torch_ddp import TorchDDPStrategy

STRATEGIES: dict[str, type[Strategy]] = {
    AllReduceStrategy.name: AllReduceStrategy,
    BucketedStrategy.name: BucketedStrategy,
    TorchDDPStrategy.name: TorchDDPStrategy,
}


def build_strategy(model: nn.Module, optimizer_factory: OptimizerFactory, comm: Comm,
                   cfg: ParallelConfig) -> Strategy:
    return STRATEGIES[cfg.strategy](model, optimizer_factory, comm, cfg)


__all__ = ["STRATEGIES", "Strategy", "build_strategy"]
