"""Data-parallel strategies behind one interface (:class:`~gradsync.parallel.base.Strategy`).

Which strategies exist, and which class runs each, is written once, in :mod:`gradsync.core.catalog`;
:func:`build_strategy` imports only the class the run names. A new strategy is one new file here
and one catalog entry.
"""

from __future__ import annotations

from collections.abc import Mapping

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


class _Registry(Mapping[str, type[Strategy]]):
    """``STRATEGIES[name]``: the catalog's strategies as classes, each imported when asked for."""

    def __getitem__(self, name: str) -> type[Strategy]:
        if name not in catalog.STRATEGIES:
            raise KeyError(name)
        return strategy_class(name)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(catalog.STRATEGIES)

    def __len__(self) -> int:
        return len(catalog.STRATEGIES)


STRATEGIES: Mapping[str, type[Strategy]] = _Registry()


def build_strategy(model: nn.Module, optimizer_factory: OptimizerFactory, comm: Comm, cfg: ParallelConfig) -> Strategy:
    name = cfg.strategy_spec.name
    if name == catalog.AUTO:
        raise ConfigError(
            "parallel.strategy=auto is resolved by `gradsync train` before the workers start; "
            "under torchrun, name the strategy"
        )
    return strategy_class(name)(model, optimizer_factory, comm, cfg)


__all__ = ["STRATEGIES", "StepResult", "Strategy", "build_strategy", "strategy_class"]
