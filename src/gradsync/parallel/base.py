"""The one interface between the trainer and the ways gradients travel.

The trainer drives a strategy like this, and knows nothing else about communication::

    for i, (x, y) in enumerate(micro_batches):
        with strategy.micro_step(last=i == len(micro_batches) - 1):
            loss = strategy.module(x, y)
            (loss / len(micro_batches)).backward()
    result = strategy.step(grad_clip)  # StepResult(grad_norm, skipped)

``micro_step(last=False)`` promises that no gradient leaves the worker (accumulation); on the
last micro-step a strategy may start communicating from backward hooks. ``step`` is the same for
every strategy: finish the aggregation, take the gradient norm (global, the same on every rank),
skip the update on every rank if it is not finite, else clip, update, and zero the gradients.
Strategies differ only in the parts they hold (a gradient path, a sharded optimizer, parameter
gathers) and in a few small hooks: :meth:`Strategy.finish_grad_sync`, :meth:`Strategy.grad_norm`,
:meth:`Strategy.grad_tensors`, :meth:`Strategy.after_update`, :meth:`Strategy.on_skipped_step`.

Checkpoints use one format for every strategy: the full model ``state_dict`` and the optimizer
state of torch's own optimizer over the full model (sharded strategies gather theirs into it), so
a checkpoint does not depend on how the state was split. ``state_dict`` and
``full_model_state`` are collective: every rank calls them.
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
import torch.nn as nn

from gradsync.checkpoint.slices import ReplicatedSlices, SliceLayout
from gradsync.core.config import ParallelConfig
from gradsync.core.errors import ConfigError
from gradsync.model.compilation import compile_per_block
from gradsync.optim.factory import OptimizerFactory
from gradsync.parallel.memory import Holdings, MemoryMeter, optimizer_tensors
from gradsync.parallel.sync_batchnorm import convert_sync_batchnorm
from gradsync.parallel.unused import UsageTracker
from gradsync.runtime import timeline
from gradsync.runtime.dist import Comm, per_dtype_flat, replicate


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step reports: the gradient norm before clipping (global for synchronous
    strategies, this rank's for local ones) and whether the update was skipped (non-finite)."""

    grad_norm: float
    skipped: bool
    # False when a live job's replicas did not all finish the step (one died in it): nothing was
    # updated and the same step is taken again (gradsync.runtime.replicas)
    committed: bool = True


def clip_(grads: list[torch.Tensor], max_norm: float, norm: float) -> None:
    """Scale ``grads`` in place so that their global norm ``norm`` becomes at most ``max_norm``:
    ``torch.nn.utils.clip_grad_norm_``'s arithmetic (fp32 coefficient, clamped at 1), so that
    every strategy clips exactly as torch does. One multiply per device and dtype (``_foreach``):
    a copy of the coefficient per gradient stalled a GPU for 7 ms a step on GPT-2 124M."""
    coef = torch.clamp(max_norm / (torch.tensor(norm, dtype=torch.float32) + 1e-6), max=1.0)
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for g in grads:
        groups.setdefault((g.device, g.dtype), []).append(g)
    for (device, _), same in groups.items():
        torch._foreach_mul_(same, coef.to(device, non_blocking=True))


class GradientPath(Protocol):
    """A part that moves gradients between ranks during backward (bucketed all-reduce,
    reduce-scatter over units); a strategy that holds one delegates to it."""

    def micro_step(self, last: bool) -> AbstractContextManager[None]: ...

    def finish(self) -> None: ...

    def zero_(self) -> None: ...


class ReplicaAverage(Protocol):
    """The replicas of a live job (:class:`gradsync.runtime.replicas.LiveReplica`), whose average
    a strategy takes after its own, before it updates."""

    def average_(self, tensors: list[torch.Tensor]) -> None: ...

    def commit(self) -> bool: ...

    def failed(self) -> bool: ...


class Strategy(ABC):
    """A data-parallel strategy: owns the replicated model, the optimizer and gradient sync.

    The constructor replicates rank 0's parameters and builds the configured optimizer over the
    full model; a strategy's own constructor then builds its parts and may replace ``module`` (a
    wrapper the trainer calls) or ``optimizer`` (a sharded one, built from this template)."""

    # torch.compile of the module composes with this strategy ("" = yes; else why not): gradsync's
    # hooks on parameters are outside the compiled graph, but hooks that gather or wait inside
    # forward (ZeRO) are not something dynamo can trace
    compile_blocker: ClassVar[str] = ""

    name: ClassVar[str]
    # False where blocked time cannot be measured (e.g. inside torch DDP's autograd callback).
    measures_blocked_time: ClassVar[bool] = True
    # False where torch issues the collectives itself and their bytes are not observable.
    measures_bytes: bool = True
    # True where each rank steps on its own gradient (local SGD): finiteness must be agreed on.
    local_gradients: ClassVar[bool] = False
    # Rank 0's buffers (BatchNorm's running statistics) are broadcast before each forward in
    # training, as torch DDP's broadcast_buffers=True: every rank normalizes with the same
    # statistics. False where torch does it (its references) or each rank keeps its own (local SGD).
    broadcasts_buffers: ClassVar[bool] = True
    # With parallel.find_unused, gradsync finds the parameters no rank used in a step and the
    # optimizer skips them (:mod:`gradsync.parallel.unused`). False where torch does it (its
    # references) or each rank steps on its own gradient (local SGD).
    tracks_unused: ClassVar[bool] = True
    # The gradient path this strategy holds, if any (set in the constructor).
    grad_path: GradientPath | None = None
    # True while the strategy itself may step the optimizer: in step(), or while torch's loader of
    # an optimizer state initialises it by a step (gradsync.parallelize refuses other calls)
    stepping: bool = False
    # What step() calls to update (default: the optimizer's step); gradsync.parallelize routes it
    # through the optimizer a script built, so that its learning-rate schedulers see each step.
    optimizer_step: Callable[[], Any] | None = None
    # A live job's replicas (parallel.fault_tolerance=live), set by the trainer: step() averages the
    # gradients over them too, and updates only when every replica of the step's quorum commits.
    live_replicas: ReplicaAverage | None = None

    def __init__(self, model: nn.Module, optimizer_factory: OptimizerFactory, comm: Comm, cfg: ParallelConfig) -> None:
        self.model = model
        self.comm = comm
        self.cfg = cfg
        self.spec = cfg.strategy_spec
        if cfg.sync_batchnorm:
            self.sync_batchnorm()
        replicate(model, comm)
        self.usage = UsageTracker(model, comm) if cfg.find_unused and self.tracks_unused else None
        self.module: nn.Module = model  # what the trainer calls forward on
        self.optimizer: Any = optimizer_factory(model)  # what the trainer sets the learning rate on
        self.memory = MemoryMeter(self.holdings, comm.env.device)  # what this rank holds, measured
        self.slices: SliceLayout = ReplicatedSlices(self)  # what it writes of a sharded checkpoint

    @contextlib.contextmanager
    def micro_step(self, last: bool) -> Iterator[None]:
        if self.broadcasts_buffers and self.model.training:
            self.sync_buffers()
        if self.grad_path is None:
            yield
        else:
            with self.grad_path.micro_step(last):
                yield

    def sync_batchnorm(self) -> None:
        """Turn every BatchNorm into one over the global batch (:mod:`gradsync.parallel.sync_batchnorm`)."""
        if self.local_gradients:
            raise ConfigError(
                f"{self.name}: sync_batchnorm would communicate in every forward, which {self.name} exists to avoid"
            )
        if convert_sync_batchnorm(self.model, self.comm) == 0:
            raise ConfigError("sync_batchnorm: the model has no BatchNorm layer to synchronise")

    def sync_buffers(self) -> None:
        """Broadcast rank 0's buffers, one collective per dtype (nothing without buffers)."""
        if self.comm.world_size == 1:
            return
        per_dtype_flat(list(self.model.buffers()), lambda flat: self.comm.broadcast(flat, src=0))

    def finish_grad_sync(self) -> None:
        """Block until the gradients :meth:`grad_tensors` returns hold the ranks' average (or, for
        local strategies, this rank's own gradient). Strategies without a gradient path override it."""
        if self.grad_path is None:
            raise NotImplementedError(f"{self.name}: holds no gradient path and does not finish its own sync")
        self.grad_path.finish()

    def zero_grad(self) -> None:
        if self.grad_path is None:
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.grad_path.zero_()

    # -- one step, the same for every strategy ---------------------------------------------------
    def step(self, grad_clip: float) -> StepResult:
        """Aggregate, clip to ``grad_clip`` (0 = off), update, zero gradients."""
        self.finish_grad_sync()
        if self.live_replicas is not None:
            with timeline.span("replicas"):
                if not self.local_gradients:  # local methods average across replicas every H steps
                    self.live_replicas.average_(self.grad_tensors())
                if not self.live_replicas.commit():
                    self.zero_grad()
                    return StepResult(math.nan, True, committed=False)
        unused = self.usage.unused_everywhere() if self.usage is not None else []
        norm = self.grad_norm()
        bad = not math.isfinite(norm)
        if self.local_gradients:  # each rank saw its own gradient: skip together or not at all
            bad = self.comm.sum_scalars([float(bad)])[0] > 0
        if bad:
            # Skip this update on every rank: parameters and optimizer state stay as they were.
            self.zero_grad()
            self.on_skipped_step()
            self.memory.steps += 1
            return StepResult(norm, True)
        if grad_clip > 0:
            self.clip_grads(grad_clip, norm)
        self.stepping = True
        try:
            with self.hidden_grads(unused), timeline.span("optimizer"):
                (self.optimizer_step or self.optimizer.step)()
        finally:
            self.stepping = False
        self.after_update()
        self.memory.sample(steady=True)
        self.memory.steps += 1
        self.zero_grad()
        return StepResult(norm, False)

    @contextlib.contextmanager
    def hidden_grads(self, params: Sequence[torch.Tensor]) -> Iterator[None]:
        """The optimizer steps as if ``params`` had no gradient, as under torch DDP when no rank
        used them: their ``.grad`` (or the optimizer's pieces of them) is ``None`` meanwhile."""
        held = self.optimizer_params(params)
        saved = [t.grad for t in held]
        for t in held:
            t.grad = None
        try:
            yield
        finally:
            for t, g in zip(held, saved):
                t.grad = g  # bucket views stay bound: the gradient path still owns them

    def optimizer_params(self, params: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
        """The tensors the optimizer holds for ``params`` (sharded strategies: this rank's pieces)."""
        return params

    def settle(self) -> None:  # noqa: B027 (replicated strategies leave nothing in flight)
        """Finish the communication an update leaves in flight (ZeRO's parameter gathers), so that
        the state can be read between steps (a live job's peer copies it then)."""

    def live_state(self) -> dict[str, Any]:
        """What a returning replica's rank copies from the rank of the same number in a live peer
        (:mod:`gradsync.runtime.replicas`): this rank's model and optimizer state, as it holds them."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_live_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def grad_tensors(self) -> list[torch.Tensor]:
        """The gradients the optimizer steps on (this rank's chunks, for sharded strategies)."""
        return [p.grad for p in self.model.parameters() if p.grad is not None]

    def grad_norm(self) -> float:
        """The 2-norm of the gradient, after :meth:`finish_grad_sync` (the same on every rank for
        synchronous strategies). Replicated strategies hold whole gradients: norm them here."""
        return float(torch.nn.utils.get_total_norm(self.grad_tensors()))

    def clip_grads(self, max_norm: float, norm: float) -> None:
        clip_(self.grad_tensors(), max_norm, norm)

    def after_update(self) -> None:  # noqa: B027 (most strategies have nothing to do)
        """After the optimizer updated this rank's parameters (ZeRO-1/2 start their gathers)."""

    def on_skipped_step(self) -> None:  # noqa: B027 (most strategies hold no such state)
        """After a skipped update: drop state that a non-finite gradient has poisoned (e.g.
        compression residuals)."""

    def describe(self) -> str:
        """A line for the run's opening lines about how this strategy is laid out ("" = nothing
        beyond its name)."""
        return ""

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (collective); replicated strategies save rank 0's copy."""
        return {"model": self.full_model_state(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def restore(self, state: dict[str, Any]) -> None:
        """:meth:`load_state_dict`, with the optimizer's own step allowed (torch's distributed
        loader initialises an optimizer's state by stepping it on zero gradients)."""
        self.stepping = True
        try:
            self.load_state_dict(state)
        finally:
            self.stepping = False

    def full_model_state(self) -> dict[str, torch.Tensor]:
        """The whole model's ``state_dict`` on every rank (collective for sharded strategies)."""
        return self.model.state_dict()

    def compile(self) -> None:
        """``torch.compile`` the module the trainer calls, one graph per block so that buckets
        still leave during backward (:mod:`gradsync.model.compilation`; in place: hooks, names and
        state dicts stay those of the module); one line where this strategy does not compose with it."""
        if self.compile_blocker:
            raise ConfigError(f"--compile does not compose with --strategy {self.name}: {self.compile_blocker}")
        compile_per_block(self.module)

    # -- memory ----------------------------------------------------------------------------------
    def holdings(self) -> Holdings:
        """The tensors this rank holds, per category (:attr:`memory` measures them)."""
        params = list(self.model.parameters())
        return {
            "params": list(params),
            "grads": [p.grad for p in params],
            "optimizer": optimizer_tensors(self.optimizer),
        }
