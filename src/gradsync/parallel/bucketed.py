"""``bucketed``: bucketed all-reduce overlapped with backward (the design of PyTorch DDP, Li et al.
VLDB 2020), optionally compressed (``--compress``), or reduced in two levels, inside each node
then across nodes (``bucketed:hierarchical=true``, :mod:`gradsync.parallel.grad_paths.hierarchical`).
The gradient path is :class:`~gradsync.parallel.grad_paths.bucket_allreduce.BucketedAllReduce`; this
strategy holds it and steps
the configured optimizer on the averaged gradients."""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from gradsync.core.config import ParallelConfig
from gradsync.optim.factory import OptimizerFactory
from gradsync.parallel.base import Strategy
from gradsync.parallel.grad_paths.bucket_allreduce import BucketedAllReduce
from gradsync.runtime.dist import Comm
from gradsync.runtime.topology import two_level_groups

__all__ = ["BucketedStrategy"]


class BucketedStrategy(Strategy):
    name = "bucketed"
    grad_path: BucketedAllReduce

    def __init__(self, model: nn.Module, optimizer_factory: OptimizerFactory, comm: Comm, cfg: ParallelConfig) -> None:
        super().__init__(model, optimizer_factory, comm, cfg)
        self.levels = two_level_groups(comm) if self.spec["hierarchical"] else None
        self.grad_path = BucketedAllReduce(model, comm, cfg, levels=self.levels)

    def describe(self) -> str:
        if self.levels is None:
            return ""
        return (
            f"two-level all-reduce over {self.levels.layout.describe()}: reduce-scatter in the node, "
            "all-reduce of the shards across nodes, all-gather in the node"
        )

    def on_skipped_step(self) -> None:
        self.grad_path.reset_compressor()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        compressor = self.grad_path.compressor_state()
        if compressor is not None:
            state["compressor"] = compressor
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.grad_path.load_compressor_state(state.get("compressor"))
