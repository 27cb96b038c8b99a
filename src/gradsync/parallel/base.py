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

Checkpoints use one format for every strategy: the full model ``state_dict`` and the optimizer
state of torch's own optimizer over the full model (sharded strategies gather theirs into it), so
a checkpoint does not depend on how the state was split. ``state_dict`` and
``full_model_state`` are collective: every rank calls them.
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Iterator

import torch
import torch.nn as nn

from gradsync.config import ParallelConfig
from gradsync.dist import Comm, replicate
from gradsync.parallel.memory import MemoryReport, optimizer_tensors, process_peak_bytes, storage_bytes

OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]


class Strategy(ABC):
    """A data-parallel strategy: owns the replicated model, the optimizer and gradient sync."""

    name: ClassVar[str]
    # False where blocked time cannot be measured (e.g. inside torch DDP's autograd callback).
    measures_blocked_time: ClassVar[bool] = True
    # False where torch issues the collectives itself and their bytes are not observable.
    measures_bytes: bool = True
    # True where each rank steps on its own gradient (local SGD): finiteness must be agreed on.
    local_gradients: ClassVar[bool] = False
    last_step_skipped: bool = False

    def __init__(self, model: nn.Module, optimizer_factory: OptimizerFactory, comm: Comm,
                 cfg: ParallelConfig) -> None:
        self.model = model
        self.comm = comm
        self.cfg = cfg
        self.spec = cfg.strategy_spec
        self.peak_bytes = 0
        self._steady: dict[str, int] | None = None
        replicate(model, comm)
        self.module: nn.Module = self.wrap(model)
        self.optimizer = self.make_optimizer(optimizer_factory)

    def make_optimizer(self, optimizer_factory: OptimizerFactory) -> torch.optim.Optimizer:
        """The optimizer the trainer sets the learning rate on (``param_groups``)."""
        return optimizer_factory(self.model)

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
        if self.skip_if_not_finite(float(norm)):
            return float(norm)
        self.optimizer.step()
        self.sample_memory(steady=True)
        self.zero_grad()
        return float(norm)

    def skip_if_not_finite(self, norm: float) -> bool:
        """Skip this update on every rank if any rank's gradient norm is NaN or infinite: zero the
        gradients, leave parameters and optimizer state as they were, and say so in
        ``last_step_skipped``. Synchronous strategies compute the norm after aggregation, so every
        rank already sees the same value; strategies with local gradients agree by one all-reduce."""
        bad = not math.isfinite(norm)
        if self.local_gradients:
            bad = self.comm.sum_scalars([float(bad)])[0] > 0
        self.last_step_skipped = bad
        if bad:
            self.zero_grad()
            self.on_skipped_step()
        return bad

    def on_skipped_step(self) -> None:  # noqa: B027 (most strategies hold no such state)
        """Drop state that a non-finite gradient has poisoned (e.g. compression residuals)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (collective); replicated strategies save rank 0's copy."""
        return {"model": self.full_model_state(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def full_model_state(self) -> dict[str, torch.Tensor]:
        """The whole model's ``state_dict`` on every rank (collective for sharded strategies)."""
        return self.model.state_dict()

    # -- memory ----------------------------------------------------------------------------------
    def holdings(self) -> dict[str, list[torch.Tensor | None]]:
        """The tensors this rank holds, per category (see :mod:`gradsync.parallel.memory`)."""
        params = list(self.model.parameters())
        return {"params": list(params), "grads": [p.grad for p in params],
                "optimizer": optimizer_tensors(self.optimizer)}

    def sample_memory(self, steady: bool = False) -> dict[str, int]:
        """Measure what is held now and raise the peak if it is higher. ``steady`` marks the
        moment the report describes: after the update, before gradients are zeroed, when every
        strategy holds its parameters, gradients and optimizer state and nothing transient."""
        held = {k: storage_bytes(v) for k, v in self.holdings().items()}
        self.peak_bytes = max(self.peak_bytes, sum(held.values()))
        if steady:
            self._steady = held
        return held

    def memory_report(self) -> MemoryReport:
        held = self._steady or self.sample_memory()
        return MemoryReport(held["params"], held["grads"], held["optimizer"], self.peak_bytes,
                            process_peak_bytes(self.comm.env.device))
