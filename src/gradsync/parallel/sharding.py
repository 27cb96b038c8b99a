"""The layout and the optimizer shared by ZeRO-1/2/3 (Rajbhandari et al., SC 2020).

Parameters are grouped into *units* (gradient buckets for ZeRO-1/2, layers for ZeRO-3). A unit's
parameters are flattened into one buffer padded to a multiple of the world size N; rank r owns the
r-th contiguous 1/N of every unit (its *chunk*). Sharding per unit rather than once over the whole
model is what makes the collectives regular: a unit is reduce-scattered and all-gathered in one
call with equal splits, and units can travel while backward still runs.

Inside its chunks a rank optimizes *pieces*: the part of each parameter that falls in the chunk,
as a 1-D view. :class:`ShardedOptimizer` rebuilds the configured optimizer (same class, same
param groups and hyperparameters) over the pieces, which is exact for element-wise optimizers
(AdamW, Adam, SGD), and converts its state to and from the format torch's optimizer has over the
full model, so checkpoints do not depend on the world size or on the strategy.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import torch
import torch.nn as nn

from gradsync.dist import Comm
from gradsync.errors import ConfigError
from gradsync.parallel.base import OptimizerFactory, Strategy
from gradsync.parallel.memory import optimizer_tensors

ELEMENTWISE = (torch.optim.AdamW, torch.optim.Adam, torch.optim.SGD)


@dataclass
class Piece:
    """The slice ``[lo, hi)`` of flattened ``param`` that lies at ``at`` in this rank's chunk."""

    param: nn.Parameter
    lo: int
    hi: int
    at: int


class FlatUnit:
    """Parameters flattened and padded to a multiple of ``world``; rank ``rank`` owns one chunk."""

    def __init__(self, index: int, params: list[nn.Parameter], world: int, rank: int) -> None:
        self.index = index
        self.params = params
        self.offsets: list[int] = []
        n = 0
        for p in params:
            self.offsets.append(n)
            n += p.numel()
        self.numel = n
        self.chunk = -(-n // world)
        self.padded = self.chunk * world
        self.lo = rank * self.chunk
        self.pieces: list[Piece] = []
        for p, off in zip(params, self.offsets):
            lo, hi = max(off, self.lo), min(off + p.numel(), self.lo + self.chunk)
            if lo < hi:
                self.pieces.append(Piece(p, lo - off, hi - off, lo - self.lo))

    def flatten(self, tensors: list[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
        """The unit's padded flat buffer holding ``tensors`` (one per parameter)."""
        if out is None:
            out = torch.zeros(self.padded, dtype=tensors[0].dtype, device=tensors[0].device)
        for t, off in zip(tensors, self.offsets):
            out[off:off + t.numel()].copy_(t.reshape(-1))
        return out

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Each parameter's shaped view into the unit's flat buffer."""
        return [flat[off:off + p.numel()].view_as(p) for p, off in zip(self.params, self.offsets)]

    def my_chunk(self, flat: torch.Tensor) -> torch.Tensor:
        return flat[self.lo:self.lo + self.chunk]


def bind_params(unit: FlatUnit, flat: torch.Tensor) -> None:
    """Make every parameter of ``unit`` a view into ``flat`` (after copying its values there)."""
    unit.flatten([p.data for p in unit.params], out=flat)
    for p, v in zip(unit.params, unit.views(flat)):
        p.data = v


class ShardedOptimizer:
    """The configured optimizer, rebuilt over this rank's pieces of every unit.

    ``data[u]`` / ``grad[u]`` are this rank's chunk of unit ``u``'s parameters and gradients (the
    strategy owns them); the optimizer's parameters are views into them, so stepping it updates the
    chunk in place.
    """

    def __init__(self, template: torch.optim.Optimizer, units: list[FlatUnit],
                 data: list[torch.Tensor], grad: list[torch.Tensor]) -> None:
        if not isinstance(template, ELEMENTWISE):
            raise ConfigError(f"ZeRO shards the optimizer element-wise; {type(template).__name__} is "
                              f"not known to be element-wise (supported: AdamW, Adam, SGD)")
        self.template = template
        self.units = units
        self.index = {id(p): i for i, p in enumerate(p for g in template.param_groups for p in g["params"])}
        group_of = {id(p): gi for gi, g in enumerate(template.param_groups) for p in g["params"]}
        groups: list[dict[str, Any]] = [{**{k: v for k, v in g.items() if k != "params"}, "params": []}
                                        for g in template.param_groups]
        self.slots: list[tuple[FlatUnit, Piece, nn.Parameter]] = []
        for u, d, gr in zip(units, data, grad):
            for pc in u.pieces:
                n = pc.hi - pc.lo
                leaf = nn.Parameter(d[pc.at:pc.at + n])  # shares the chunk's storage
                leaf.grad = gr[pc.at:pc.at + n]
                groups[group_of[id(pc.param)]]["params"].append(leaf)
                self.slots.append((u, pc, leaf))
        self.optimizer = type(template)(groups)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def step(self) -> None:
        self.optimizer.step()

    # -- the full-model format -------------------------------------------------------------------
    def full_state_dict(self, comm: Comm) -> dict[str, Any]:
        """torch's ``optimizer.state_dict()`` for the full model, assembled from every rank's pieces
        (collective). Per-element state is all-gathered unit by unit; scalar state (``step``) is the
        same on every piece of a parameter and travels as an object."""
        mine: dict[str, bool] = {}
        scalars: dict[int, dict[str, Any]] = {}
        for _, pc, leaf in self.slots:
            for k, v in self.optimizer.state.get(leaf, {}).items():
                per_element = isinstance(v, torch.Tensor) and v.numel() == leaf.numel() and v.dim() > 0
                mine[k] = per_element
                if not per_element:
                    scalars.setdefault(self.index[id(pc.param)], {})[k] = v
        keys: dict[str, bool] = {}
        for d in comm.all_gather_object(mine):
            keys.update(d)
        merged: dict[int, dict[str, Any]] = {}
        for d in comm.all_gather_object(scalars):
            for i, st in d.items():
                merged.setdefault(i, {}).update(st)
        state: dict[int, dict[str, Any]] = {i: dict(st) for i, st in merged.items()}
        for key in sorted(k for k, per_element in keys.items() if per_element):
            for u in self.units:
                chunk = torch.zeros(u.chunk, dtype=torch.float32, device=comm.env.device)
                for uu, pc, leaf in self.slots:
                    if uu is u and leaf in self.optimizer.state:
                        chunk[pc.at:pc.at + pc.hi - pc.lo].copy_(self.optimizer.state[leaf][key])
                full = torch.empty(u.padded, dtype=chunk.dtype, device=chunk.device)
                comm.all_gather(full, chunk)
                for p, v in zip(u.params, u.views(full)):
                    state.setdefault(self.index[id(p)], {})[key] = v.clone().cpu()
        groups = self.template.state_dict()["param_groups"]
        for g, live in zip(groups, self.optimizer.param_groups):
            g.update({k: v for k, v in live.items() if k != "params"})
        return {"state": state, "param_groups": groups}

    def load_full_state_dict(self, full: dict[str, Any]) -> None:
        """Take this rank's pieces of a full-model optimizer state (any world size wrote it)."""
        for g, saved in zip(self.optimizer.param_groups, full["param_groups"]):
            g.update({k: v for k, v in saved.items() if k != "params"})
        self.optimizer.state.clear()
        for _, pc, leaf in self.slots:
            saved_state = full["state"].get(self.index[id(pc.param)])
            if not saved_state:
                continue
            st: dict[str, Any] = {}
            for k, v in saved_state.items():
                if isinstance(v, torch.Tensor) and v.dim() > 0 and v.numel() == pc.param.numel():
                    st[k] = v.reshape(-1)[pc.lo:pc.hi].to(leaf.device).clone()
                else:
                    st[k] = v.clone() if isinstance(v, torch.Tensor) else v
            self.optimizer.state[leaf] = st



class ZeroStrategy(Strategy):
    """What ZeRO-1/2/3 share: a sharded optimizer over ``units``, and a step that clips by the
    global norm computed from the gradient chunks. Subclasses set ``units``, ``param_chunks`` and
    ``grad_chunks`` in :meth:`wrap` and gather the updated parameters in :meth:`after_update`."""

    units: list[FlatUnit]
    param_chunks: list[torch.Tensor]
    grad_chunks: list[torch.Tensor]
    _gathers: dict[int, tuple[Any, torch.Tensor]] = {}  # ZeRO-3 gathers on demand: never any here
    optimizer: ShardedOptimizer  # type: ignore[assignment]

    def make_optimizer(self, optimizer_factory: OptimizerFactory) -> ShardedOptimizer:  # type: ignore[override]
        return ShardedOptimizer(optimizer_factory(self.model), self.units, self.param_chunks, self.grad_chunks)

    def bind_unit_buffers(self) -> list[torch.Tensor]:
        """A padded flat buffer per unit, holding the unit's parameters, which become views into it."""
        flats = []
        for u in self.units:
            flat = torch.zeros(u.padded, dtype=u.params[0].dtype, device=u.params[0].device)
            bind_params(u, flat)
            flats.append(flat)
        return flats

    def step(self, grad_clip: float) -> float:
        self.finish_grad_sync()
        self.await_params()  # a parameter no forward used still has its gather in flight
        sq = sum(float(g.double().pow(2).sum()) for g in self.grad_chunks)
        norm = math.sqrt(self.comm.sum_scalars([sq])[0])
        if self.skip_if_not_finite(norm):
            return norm
        if grad_clip > 0:
            # torch.nn.utils.clip_grad_norm_'s arithmetic (fp32, clamped), so that results match
            total = torch.tensor(norm, dtype=torch.float32)
            coef = torch.clamp(grad_clip / (total + 1e-6), max=1.0)
            for g in self.grad_chunks:
                g.mul_(coef)
        self.optimizer.step()
        self.after_update()
        self.sample_memory(steady=True)
        self.zero_grad()
        return norm

    # -- replicated parameters (ZeRO-1/2): gathered after the step, awaited in the next forward --
    def setup_param_gathers(self, model: nn.Module) -> None:
        """Make the parameters views into per-unit flat buffers that :meth:`after_update` refills
        by all-gather, and hook every module to wait, in its forward, only for the units holding
        its own parameters: the gathers of later layers overlap the forward of earlier ones."""
        self.param_flats = self.bind_unit_buffers()
        self.param_chunks = [u.my_chunk(f) for u, f in zip(self.units, self.param_flats)]
        self._gathers: dict[int, tuple[Any, torch.Tensor]] = {}
        unit_of = {id(p): u.index for u in self.units for p in u.params}
        for m in model.modules():
            mine = sorted({unit_of[id(p)] for p in m.parameters(recurse=False) if id(p) in unit_of})
            if mine:
                m.register_forward_pre_hook(lambda _m, _a, mine=mine: self.await_params(mine))

    def after_update(self) -> None:
        # Units are in backward order; launch in forward order, so the first layers arrive first.
        for u in reversed(self.units):
            send = self.param_chunks[u.index].clone()  # the input must not alias the output
            self._gathers[u.index] = (self.comm.all_gather(self.param_flats[u.index], send, async_op=True), send)

    def await_params(self, units: list[int] | None = None) -> None:
        """Wait for the parameter all-gathers of ``units`` (all when None) still in flight."""
        for i in list(self._gathers) if units is None else units:
            pending = self._gathers.pop(i, None)
            if pending is not None:
                self.comm.wait(pending[0])

    def full_model_state(self) -> dict[str, torch.Tensor]:
        self.await_params()
        return super().full_model_state()

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.full_model_state(), "optimizer": self.optimizer.full_state_dict(self.comm)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.await_params()
        self.load_full_model_state(state["model"])
        self.optimizer.load_full_state_dict(state["optimizer"])

    def load_full_model_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)  # parameters are views into the flat buffers: copied in place

    def holdings(self) -> dict[str, list[torch.Tensor | None]]:
        return {"params": list(self.model.parameters()), "grads": list(self.grad_chunks),
                "optimizer": optimizer_tensors(self.optimizer.optimizer)}


class ReduceScatterStrategy(ZeroStrategy):
    """The backward-time gradient path of ZeRO-2 and ZeRO-3.

    As each parameter's gradient is accumulated it is copied into its unit's buffer and released.
    When a unit's last gradient is in, its buffer is divided by the world size and
    reduce-scattered asynchronously, strictly in unit order (so every rank issues the same
    collectives in the same order, as in ``bucketed``); the chunk a rank receives is added to its
    gradient shard. At most ``max_inflight`` units travel at once: launching one more first
    completes the oldest and frees its buffer, which bounds gradient memory to the shard plus a
    few buffers. Every micro-step is reduced (gradient accumulation happens in the shard).

    Subclasses call :meth:`setup_gradients` from ``wrap`` after setting ``units``.
    """

    max_inflight: ClassVar[int] = 2

    def setup_gradients(self, model: nn.Module) -> None:
        ref = self.units[0].params[0]
        shard = torch.zeros(sum(u.chunk for u in self.units), dtype=ref.dtype, device=ref.device)
        self.grad_chunks, at = [], 0
        for u in self.units:
            self.grad_chunks.append(shard[at:at + u.chunk])
            at += u.chunk
        self.names = {id(p): n for n, p in model.named_parameters()}
        self._where: dict[int, tuple[FlatUnit, int]] = {}
        for u in self.units:
            for p, off in zip(u.params, u.offsets):
                self._where[id(p)] = (u, off)
                p.register_post_accumulate_grad_hook(self._on_grad_ready)
        self._buffers: dict[int, torch.Tensor] = {}
        self._pending: list[set[int]] = []
        self._inflight: list[tuple[FlatUnit, torch.Tensor, torch.Tensor, Any]] = []
        self._next_launch = 0
        self._active = False
        self._synced = False

    def unit_grads_done(self, u: FlatUnit) -> None:
        """Called when every gradient of ``u`` is in its buffer (ZeRO-3 releases the parameters)."""

    @contextlib.contextmanager
    def micro_step(self, last: bool) -> Iterator[None]:
        self._pending = [{id(p) for p in u.params} for u in self.units]
        self._next_launch = 0
        self._active = True
        try:
            yield
        finally:
            self._active = False
        self._drain()
        self._synced = last

    def _buffer(self, u: FlatUnit) -> torch.Tensor:
        if u.index not in self._buffers:
            ref = self.grad_chunks[u.index]
            self._buffers[u.index] = torch.zeros(u.padded, dtype=ref.dtype, device=ref.device)
        return self._buffers[u.index]

    def _on_grad_ready(self, p: torch.Tensor) -> None:
        if not self._active:
            raise RuntimeError(f"{self.name}: backward ran outside strategy.micro_step(); "
                               "its gradients would be lost")
        u, off = self._where[id(p)]
        assert p.grad is not None
        self._buffer(u)[off:off + p.numel()].copy_(p.grad.reshape(-1))
        p.grad = None  # the unit's buffer holds it now
        pending = self._pending[u.index]
        pending.discard(id(p))
        if not pending:
            self.unit_grads_done(u)
        while self._next_launch < len(self.units) and not self._pending[self._next_launch]:
            self._launch(self.units[self._next_launch])

    def _launch(self, u: FlatUnit) -> None:
        while len(self._inflight) >= self.max_inflight:
            self._complete_oldest()
        buf = self._buffer(u).div_(self.comm.world_size)
        out = torch.empty(u.chunk, dtype=buf.dtype, device=buf.device)
        self._inflight.append((u, buf, out, self.comm.reduce_scatter(out, buf, async_op=True)))
        self._next_launch += 1
        self.sample_memory()  # buffers in flight: when gradient memory is highest

    def _complete_oldest(self) -> None:
        u, _, out, work = self._inflight.pop(0)
        self.comm.wait(work)
        self.grad_chunks[u.index].add_(out)
        del self._buffers[u.index]

    def _drain(self) -> None:
        for u in self.units[self._next_launch:]:
            if self._pending[u.index]:
                missing = [self.names[i] for i in self._pending[u.index]]
                warnings.warn(f"{self.name}: no gradient this step for {', '.join(missing)}; "
                              "they contribute zeros", stacklevel=4)
                self.unit_grads_done(u)
            self._launch(u)
        while self._inflight:
            self._complete_oldest()

    def finish_grad_sync(self) -> None:
        if not self._synced:
            raise RuntimeError(f"{self.name}: step() called without a micro_step(last=True)")
        self._synced = False

    def zero_grad(self) -> None:
        for g in self.grad_chunks:
            g.zero_()

    def holdings(self) -> dict[str, list[torch.Tensor | None]]:
        held = super().holdings()
        held["grads"] += list(self._buffers.values()) + [out for _, _, out, _ in self._inflight]
        return held
