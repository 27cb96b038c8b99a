"""Data parallelism in your own training loop: :func:`parallelize`.

The way people use torch DDP or Accelerate, with every gradsync strategy and compressor::

    dp = gradsync.parallelize(model, optimizer=lambda m: torch.optim.AdamW(m.parameters(), lr=3e-4),
                              strategy="zero2")
    for step in range(start, steps):
        for i, (x, y) in enumerate(my_micro_batches(step, dp.rank, dp.world_size)):
            with dp.micro_step(last=i == n_micro - 1):
                loss = loss_fn(dp.module(x), y) / n_micro
                loss.backward()
        dp.step(grad_clip=1.0)
        if step % 100 == 0:
            dp.save("ckpt.pt", step=step)

Start the script with ``gradsync run --nproc N script.py`` (gradsync's launcher: rendezvous,
collective timeouts, restarts, one-line errors) or ``torchrun``; run alone, it is a world of one.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from gradsync.checkpoint import format as ckpt
from gradsync.core.config import ParallelConfig
from gradsync.core.errors import ConfigError
from gradsync.optim.factory import OptimizerFactory
from gradsync.parallel import StepResult, Strategy, build_strategy
from gradsync.runtime.dist import Comm, DistEnv, init_distributed

SAVED = ("strategy", "rng", "world_size", "extra")  # what Parallel.save writes
Optimizer = torch.optim.Optimizer | Callable[[nn.Module], torch.optim.Optimizer]


class Parallel:
    """A model and optimizer under a data-parallel strategy (returned by :func:`parallelize`).

    ``module`` is what to call forward on (the strategy's, with its hooks); ``optimizer`` is the
    strategy's, a ``torch.optim.Optimizer`` under every strategy (torch's and ``transformers``'
    learning-rate schedulers take it; sharded strategies hold a shard behind it)."""

    def __init__(self, strategy: Strategy, env: DistEnv) -> None:
        self.strategy = strategy
        self.env = env

    @property
    def module(self) -> nn.Module:
        return self.strategy.module

    @property
    def optimizer(self) -> Any:
        return self.strategy.optimizer

    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def world_size(self) -> int:
        return self.env.world_size

    @property
    def is_main(self) -> bool:
        return self.env.is_main

    @property
    def device(self) -> torch.device:
        return self.env.device

    def micro_step(self, last: bool = True) -> AbstractContextManager[None]:
        """Wrap one micro-batch's forward and backward; ``last`` marks the one whose backward
        starts the gradient exchange (earlier ones only accumulate)."""
        return self.strategy.micro_step(last)

    def step(self, grad_clip: float = 0.0) -> StepResult:
        """Average the gradients over workers, clip their global norm to ``grad_clip`` (0: off),
        update, zero the gradients. A step whose gradients are not finite is skipped on every
        worker (``result.skipped``)."""
        return self.strategy.step(grad_clip)

    def state_dict(self) -> dict[str, Any]:
        """The full model and a torch-format optimizer state, whatever the strategy (collective)."""
        return self.strategy.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.strategy.load_state_dict(state)

    def full_model_state(self) -> dict[str, torch.Tensor]:
        """The whole model's parameters on every rank (collective: sharded strategies gather)."""
        return self.strategy.full_model_state()

    def save(self, path: str | Path, **extra: Any) -> None:
        """Checkpoint (collective; rank 0 writes): the strategy's state, every rank's RNG state
        and ``extra`` (e.g. ``step=``), atomically and with a checksum, as ``gradsync train``."""
        rngs = ckpt.gather_rng_states(self.strategy.comm)
        state = self.state_dict()
        if self.is_main:
            ckpt.save_checkpoint(
                Path(path), {"strategy": state, "rng": rngs, "world_size": self.world_size, "extra": extra}
            )
        self.strategy.comm.all_gather_object(None)  # nobody reads the file before it is complete

    def load(self, path: str | Path) -> dict[str, Any]:
        """Restore a checkpoint written by :meth:`save` (at any world size; RNG states only at the
        same one); returns its ``extra``."""
        state = ckpt.load_checkpoint(path, required=SAVED)
        self.load_state_dict(state["strategy"])
        ckpt.restore_rng_state(state, self.strategy.comm)
        return dict(state["extra"])


def as_factory(optimizer: Optimizer, model: nn.Module) -> OptimizerFactory:
    """A strategy builds its optimizer (sharded ones over their shard), so it needs a factory. An
    optimizer already built over the model's parameters, with any number of parameter groups
    (weight-decay groups, per-layer learning rates), is turned into one: the same class, and each
    group's parameters (found by their place in ``model.parameters()``) with that group's settings.
    Parameters the optimizer does not hold are not updated, as with the optimizer itself."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        if not callable(optimizer):
            raise ConfigError("parallelize: optimizer must be a torch optimizer or a function model -> optimizer")
        return optimizer
    place = {id(p): i for i, p in enumerate(model.parameters())}
    groups: list[tuple[list[int], dict[str, Any]]] = []
    for g in optimizer.param_groups:
        foreign = [p for p in g["params"] if id(p) not in place]
        if foreign:
            raise ConfigError(
                f"parallelize: the optimizer holds {len(foreign)} tensor(s) that are not parameters of the model; "
                "build it over model.parameters() (or pass a factory model -> optimizer)"
            )
        groups.append(([place[id(p)] for p in g["params"]], {k: v for k, v in g.items() if k != "params"}))
    cls = type(optimizer)
    # the constructor's own arguments (a required lr, say); other defaults travel in the groups
    accepted = inspect.signature(cls.__init__).parameters
    defaults = {k: v for k, v in optimizer.defaults.items() if k in accepted and k != "params"}

    def make(m: nn.Module) -> torch.optim.Optimizer:
        params = list(m.parameters())
        return cls([{**settings, "params": [params[i] for i in idx]} for idx, settings in groups], **defaults)

    return make


def parallelize(
    model: nn.Module,
    optimizer: Optimizer,
    strategy: str = "bucketed",
    compress: str = "none",
    *,
    bucket_mb: float = 25.0,
    first_bucket_mb: float = 1.0,
    find_unused_parameters: bool = False,
    sync_batchnorm: bool = False,
    backend: str | None = None,
    timeout_s: float | None = None,
) -> Parallel:
    """Put ``model`` under a data-parallel ``strategy`` (a spec, as ``--strategy``: ``bucketed``,
    ``zero1``, ``zero2``, ``zero3``, ``localsgd:8``, ``diloco:8``, ``torch-ddp``, ...) with an
    optional gradient ``compress``or (``fp16``, ``powersgd:rank=4``, ...).

    Joins the process group the launcher describes (``gradsync run`` or ``torchrun``), or makes
    a world of one; moves the model to this worker's device and replicates rank 0's weights.
    ``find_unused_parameters`` is torch DDP's: for models whose steps leave some parameters unused
    (branches, routing), the ones no rank used keep no gradient and the optimizer leaves them alone
    (one small all-reduce a step; without it they count as zero gradients, with a warning).
    ``sync_batchnorm`` normalises every BatchNorm with the statistics of the global batch (as
    ``torch.nn.SyncBatchNorm``, on any device): training then equals one process with the whole
    batch. Without it, as DDP, each rank normalises its own micro-batch and rank 0's running
    statistics are broadcast before each forward.
    ``backend`` and ``timeout_s`` default to ``gradsync run``'s ``--backend`` and ``--timeout``
    (else ``auto`` and 300 s)."""
    backend = backend or os.environ.get("GRADSYNC_BACKEND", "auto")
    timeout_s = timeout_s if timeout_s is not None else float(os.environ.get("GRADSYNC_TIMEOUT_S", 300.0))
    cfg = ParallelConfig(
        nproc=1,
        strategy=strategy,
        compress=compress,
        bucket_mb=bucket_mb,
        first_bucket_mb=first_bucket_mb,
        find_unused=find_unused_parameters,
        sync_batchnorm=sync_batchnorm,
        backend=backend,
        timeout_s=timeout_s,
    )
    env = init_distributed(backend, timeout_s)
    model.to(env.device)
    factory = as_factory(optimizer, model)
    return Parallel(build_strategy(model, factory, Comm(env, timeout_s=timeout_s), cfg), env)
