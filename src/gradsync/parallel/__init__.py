"""Data-parallel strategies behind one interface (:class:`~gradsync.parallel.base.Strategy`).

A new strategy is one new file and one line in :data:`STRATEGIES`.
"""

from __future__ import annotations

import torch.nn as nn

from gradsync.config import ParallelConfig
from gradsync.dist import Comm
from gradsync.errors import ConfigError
from gradsync.parallel.allreduce import AllReduceStrategy
from gradsync.parallel.base import OptimizerFactory, Strategy
from gradsync.parallel.diloco import DiLoCoStrategy
from gradsync.parallel.localsgd import LocalSGDStrategy
from gradsync.parallel.bucketed import BucketedStrategy
from gradsync.parallel.torch_ddp import TorchDDPStrategy
from gradsync.parallel.torch_fsdp import TorchFSDPStrategy
from gradsync.parallel.torch_zero import TorchZero1Strategy
from gradsync.parallel.zero1 import Zero1Strategy
from gradsync.parallel.zero2 import Zero2Strategy
from gradsync.parallel.zero3 import Zero3Strategy

STRATEGIES: dict[str, type[Strategy]] = {
    AllReduceStrategy.name: AllReduceStrategy,
    BucketedStrategy.name: BucketedStrategy,
    TorchDDPStrategy.name: TorchDDPStrategy,
    Zero1Strategy.name: Zero1Strategy,
    Zero2Strategy.name: Zero2Strategy,
    Zero3Strategy.name: Zero3Strategy,
    LocalSGDStrategy.name: LocalSGDStrategy,
    DiLoCoStrategy.name: DiLoCoStrategy,
    TorchZero1Strategy.name: TorchZero1Strategy,
    TorchFSDPStrategy.name: TorchFSDPStrategy,
}


def build_strategy(model: nn.Module, optimizer_factory: OptimizerFactory, comm: Comm,
                   cfg: ParallelConfig) -> Strategy:
    name = cfg.strategy_spec.name
    if name == "auto":
        raise ConfigError("parallel.strategy=auto is resolved by `gradsync train` before the workers start; "
                          "under torchrun, name the strategy")
    if name not in STRATEGIES:
        raise ConfigError(f"parallel.strategy {name} is not implemented yet")
    return STRATEGIES[cfg.strategy_spec.name](model, optimizer_factory, comm, cfg)


__all__ = ["STRATEGIES", "Strategy", "build_strategy"]
