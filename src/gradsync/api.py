"""Data parallelism in your own training loop: :func:`parallelize`.

The way people use torch DDP or Accelerate, with every gradsync strategy and compressor::

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    dp = gradsync.parallelize(model, optimizer, strategy="zero2")
    scheduler = torch.optim.lr_scheduler.LambdaLR(dp.optimizer, lambda s: min(1.0, (s + 1) / 100))
    loader = dp.loader(train_set, global_batch=64)  # a Dataset or DataLoader; 64 / N per rank
    for epoch in range(epochs):
        for micro in loader:  # this step's micro-batches on this rank
            for i, (x, y) in enumerate(micro):
                with dp.micro_step(last=i == len(micro) - 1):
                    loss = loss_fn(dp.module(x), y) / len(micro)
                    loss.backward()
            dp.step(grad_clip=1.0)
            scheduler.step()
        dp.print(f"epoch {epoch}: loss {dp.reduce(loss.item()):.3f}")  # the mean over ranks, printed once
        dp.save("ckpt.pt", epoch=epoch, data=loader.state_dict())

Start the script with ``gradsync run --nproc N script.py`` (gradsync's launcher: rendezvous,
collective timeouts, restarts, one-line errors) or ``torchrun``; run alone, it is a world of one.
"""

from __future__ import annotations

import builtins
import inspect
import os
import types
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from gradsync.checkpoint import format as ckpt
from gradsync.core.config import ParallelConfig
from gradsync.core.errors import ConfigError
from gradsync.data.loader import ShardedLoader
from gradsync.optim.factory import OptimizerFactory
from gradsync.parallel import StepResult, Strategy, build_strategy, strategy_class
from gradsync.runtime.dist import Comm, DistEnv, init_distributed
from gradsync.training.precision import autocast_forward

SAVED = ("strategy", "rng", "world_size", "extra")  # what Parallel.save writes
Optimizer = torch.optim.Optimizer | Callable[[nn.Module], torch.optim.Optimizer]
REDUCE_OPS = ("mean", "sum", "max", "min")


class Parallel:
    """A model and optimizer under a data-parallel strategy (returned by :func:`parallelize`).

    ``module`` is what to call forward on (the strategy's, with its hooks); ``optimizer`` is the
    strategy's, a ``torch.optim.Optimizer`` under every strategy (torch's and ``transformers``'
    learning-rate schedulers take it; sharded strategies hold a shard behind it)."""

    def __init__(self, strategy: Strategy, env: DistEnv) -> None:
        self.strategy = strategy
        self.env = env
        _route_optimizer(strategy.optimizer, strategy)

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

    # -- data and metrics, as Accelerate and Fabric users expect them ----------------------------
    def loader(
        self,
        data: torch.utils.data.Dataset[Any] | torch.utils.data.DataLoader[Any],
        global_batch: int | None = None,
        micro_batch: int | None = None,
        seed: int = 0,
    ) -> ShardedLoader:
        """This rank's share of ``data`` (a map-style ``Dataset``, or a ``DataLoader`` whose dataset,
        ``collate_fn``, workers and ``batch_size`` are used), step by step: the global batch of
        ``global_batch`` examples (default: the loader's ``batch_size``, the batch the script had on
        one process) is the same at any world size, shuffled by ``seed`` and epoch; each rank gets
        ``global_batch / world_size`` of it in micro-batches of ``micro_batch`` (default: all of
        it at once). Resumable mid-epoch: save ``loader.state_dict()``, load it with
        ``loader.load_state_dict``. See :mod:`gradsync.data.loader`."""
        return ShardedLoader(data, global_batch, micro_batch, self.rank, self.world_size, seed)

    def reduce(self, value: float | torch.Tensor, op: str = "mean") -> Any:
        """``value`` combined over ranks (collective: every rank calls it): ``mean``, ``sum``,
        ``max`` or ``min``. A number gives a float, a tensor a tensor of its dtype (element-wise,
        computed in float64 for integers), on every rank."""
        if op not in REDUCE_OPS:
            raise ConfigError(f"reduce: op '{op}' is unknown; choose one of {', '.join(REDUCE_OPS)}")
        t = value.detach().clone() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
        flat = t.to(self.device, torch.float64 if not t.is_floating_point() else t.dtype).reshape(-1)
        if op in ("mean", "sum"):
            self.strategy.comm.all_reduce(flat)
            if op == "mean":
                flat /= self.world_size
        else:
            rows = torch.empty(self.world_size * flat.numel(), dtype=flat.dtype, device=flat.device)
            self.strategy.comm.all_gather(rows, flat)
            per_rank = rows.view(self.world_size, -1)
            flat = per_rank.amax(0) if op == "max" else per_rank.amin(0)
        if isinstance(value, torch.Tensor):
            return flat.view_as(value).to(value.device, value.dtype)  # an integer mean rounds down
        return float(flat.item())

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (any picklable value: predictions, counts), in rank order, on every
        rank (collective)."""
        return self.strategy.comm.all_gather_object(obj)

    def print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` on rank 0 only (the others say nothing), flushed."""
        if self.is_main:
            builtins.print(*args, **{"flush": True, **kwargs})

    def state_dict(self) -> dict[str, Any]:
        """The full model and a torch-format optimizer state, whatever the strategy (collective)."""
        return self.strategy.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.strategy.restore(state)

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


def _route_optimizer(opt: torch.optim.Optimizer, strategy: Strategy, steps: Callable[..., Any] | None = None) -> None:
    """Make ``opt`` safe in a DDP-style loop: ``opt.zero_grad()`` zeroes through the strategy's
    gradient path (a plain one would detach the gradients from their buckets), and ``opt.step()`` called directly
    is an error that says to call ``dp.step()``, which first finishes averaging the gradients
    (stepping on a gradient still being reduced would be silently wrong). Inside ``dp.step()`` it
    runs ``steps`` (default: its own step)."""
    run = steps or opt.step

    def step(self: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        if not strategy.stepping:
            raise ConfigError(
                "call dp.step() instead of optimizer.step(): it finishes averaging the gradients over "
                "ranks, clips them and then steps the optimizer (and zeroes the gradients)"
            )
        self._opt_called = True  # type: ignore[attr-defined]  # what torch's LR schedulers check
        return run(*args, **kwargs)

    def zero_grad(self: torch.optim.Optimizer, set_to_none: bool = True) -> None:
        strategy.zero_grad()

    # bound methods, as torch's LR schedulers expect to find (they wrap step's __func__); one that
    # already wrapped step finds its mark still there
    if hasattr(opt.step, "_wrapped_by_lr_sched"):
        step._wrapped_by_lr_sched = True  # type: ignore[attr-defined]
    if strategy.grad_path is not None:  # elsewhere the optimizer's own zero_grad is the strategy's
        opt.zero_grad = types.MethodType(zero_grad, opt)  # type: ignore[method-assign]
    opt.step = types.MethodType(step, opt)  # type: ignore[method-assign]


def _adopt(original: torch.optim.Optimizer, strategy: Strategy) -> None:
    """The optimizer a script built and handed to :func:`parallelize` keeps working as the script
    uses it: state it already held (a resumed run) moves into the strategy's optimizer, its
    ``param_groups`` become the strategy's (a learning-rate scheduler built over it, before or
    after, drives the strategy's), its ``step``/``zero_grad`` are routed as ``dp.optimizer``'s, and
    ``dp.step()`` steps through it, so that schedulers over either see every step."""
    if original is strategy.optimizer:
        return
    if original.state:
        strategy.restore({"model": strategy.full_model_state(), "optimizer": original.state_dict()})
    original.param_groups = strategy.optimizer.param_groups
    _route_optimizer(original, strategy, steps=lambda *a, **k: strategy.optimizer.step(*a, **k))
    strategy.optimizer_step = lambda: original.step()


def _uncompiled(model: nn.Module, cfg: ParallelConfig) -> tuple[nn.Module | None, nn.Module]:
    """``(compiled, module)`` for a ``torch.compile``d model (the strategy works on the module
    inside, so that names, hooks and checkpoints are the module's own; forward runs the compiled
    one), ``(None, model)`` otherwise. A strategy that does not compose with compile says why."""
    inner = getattr(model, "_orig_mod", None)
    if not isinstance(inner, nn.Module):
        return None, model
    blocker = strategy_class(cfg.strategy_spec.name).compile_blocker
    if blocker:
        raise ConfigError(
            f"parallelize: a torch.compile'd model does not compose with {cfg.strategy_spec.name}: {blocker}"
        )
    return model, inner


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
    precision: str = "fp32",
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
    statistics are broadcast before each forward. ``precision="bf16"`` runs the model's forward
    under bf16 autocast (outputs cast back to fp32; parameters, gradients and optimizer state stay
    fp32).
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
    compiled, model = _uncompiled(model, cfg)
    env = init_distributed(backend, timeout_s)
    model.to(env.device)
    autocast_forward(model, precision, env.device)
    factory = as_factory(optimizer, model)
    dp = Parallel(build_strategy(model, factory, Comm(env, timeout_s=timeout_s), cfg), env)
    if compiled is not None:
        if dp.strategy.module is not model:
            raise ConfigError(
                f"parallelize: {cfg.strategy_spec.name} wraps the model itself, so it cannot take it compiled; "
                "pass the model uncompiled and compile what the strategy calls: dp.module.compile()"
            )
        dp.strategy.module = compiled  # forward runs compiled, with the options it was compiled with
    if isinstance(optimizer, torch.optim.Optimizer):
        _adopt(optimizer, dp.strategy)
    return dp
