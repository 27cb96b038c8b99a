"""The one interface between the trainer and the ways gradients travel.

The trainer drives a strategy like this, and knows nothing else about communication::

    for i, (x, y) in enumerate(micro_batches):
        with strategy.micro_step(last=i == len(micro_batches) - 1):
            loss = strategy.module(x, y)
            (loss / len(micro_batches)).backward()
    grad_norm = strategy.step(grad_clip)

``micro_step(last=False)`` promises that no gradient leaves the worker (accumulation); on the
last micro-step a strategy may start communicating from backward hooks. ``step`` finishes the
aggregation, clips by the global norm (the same on every rank), updates, and zeroes gradients.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Iterator

import torch
import torch.nn as nn

from gradsync.config import ParallelConfig
from gradsync.dist import Comm, replicate

OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]


class Strategy(ABC):
    """A data-parallel strategy: owns the replicated model, the optimizer and gradient sync."""

    name: ClassVar[str]
    # False where blocked time cannot be measured (e.g. inside torch DDP's autograd callback).
    measures_blocked_time: ClassVar[bool] = True

    def __init__(self, model: nn.Module, optimizer_factory: OptimizerFactory, comm: Comm,
                 cfg: ParallelConfig) -> None:
        self.model = model
        self.comm = comm
        self.cfg = cfg
        replicate(model, comm)
        self.module: nn.Module = self.wrap(model)
        self.optimizer = optimizer_factory(model)

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the trainer calls forward on (the model itself unless a wrapper is needed)."""
        return model

    @contextlib.contextmanager
    def micro_step(self, last: bool) -> Iterator[None]:
        yield

    @abstractmethod
    def finish_grad_sync(self) -> None:
        """Block until every ``p.grad`` holds the average of the ranks' gradients."""

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, grad_clip: float) -> float:
        """Aggregate, clip to ``grad_clip`` (0 = off), update, zero gradients. Returns the global
        gradient norm before clipping."""
        self.finish_grad_sync()
        params = [p for p in self.model.parameters() if p.grad is not None]
        if grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        self.optimizer.step()
        self.zero_grad()
        return float(norm)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume; replicated strategies save rank 0's copy."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
