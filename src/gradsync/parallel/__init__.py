"""Data-parallel strategies behind one interface (:class:`~gradsync.parallel.base.Strategy`).

Which strategies exist, and which class runs each, is written once, in :mod:`gradsync.core.catalog`;
:func:`build_strategy` imports only the class the run names. A new strategy is one new file here
and one catalog entry.
"""

from __future__ import annotations

import torch.nn as nn

from gradsync.core import catalog
from gradsync.core.config import ParallelConfig
from gradsync.core.errors import ConfigError
from gradsync.optim.factory import OptimizerFactory
from gradsync.parallel.base import StepResult, Strategy
from gradsync.runtime.dist import Comm


def strategy_class(name: str) -> type[Strategy]:
    """The class that runs strategy ``name`` (imported now)."""
    cls: type[Strategy] = catalog.resolve(catalog.strategy(name).cls)
    return cls


def build_strategy(model: nn.Module, optimizer_factory: OptimizerFactory, comm: Comm, cfg: ParallelConfig) -> Strategy:
    name = cfg.strategy_spec.name
    if name == catalog.AUTO:
        raise ConfigError(
            "parallel.strategy=auto is resolved by `gradsync train` before the workers start; "
            "under torchrun, name the strategy"
        )
    return strategy_class(name)(model, optimizer_factory, comm, cfg)


__all__ = ["StepResult", "Strategy", "build_strategy", "strategy_class"]
