"""ZeRO-3: parameters, gradients and optimizer state sharded (Rajbhandari et al., SC 2020,
stage P_os+g+p; the shape of PyTorch FSDP, Zhao et al. VLDB 2023).

The model is cut into units: every element of a ``nn.ModuleList`` (a transformer block) is one,
and the parameters outside any list (embeddings, tied to the output head, and the final norm) form
the root unit. Each unit's parameters are views into one padded flat buffer whose storage exists
only while it is needed; at rest a rank holds just its chunk (1/N) of every unit.

- forward: a pre-hook all-gathers the unit, a post-hook releases the storage (resized to zero,
  so the views and the tensors autograd saved keep their shapes), and a hook on the unit's output
  gradient gathers it again just before the unit's backward (the root unit, whose tied output head
  starts backward, is kept from forward to backward instead, as FSDP2 keeps its root);
- backward: as each parameter's gradient is accumulated it is copied into the unit's gradient
  buffer and released; when the unit's last gradient is in, the parameters are released and the
  buffer is reduce-scattered asynchronously (units in backward order, as ``bucketed``), and the
  received chunk is added to the rank's gradient shard;
- step: the sharded optimizer updates the chunks in place; nothing is gathered until the next
  forward (no :class:`~gradsync.parallel.sharding.sharded.ParamGathers`).

Prefetch (``zero3:prefetch=k``, default 1; the pattern of FSDP2): the order in which units are
gathered in forward and in backward is recorded on the first step; from then on, gathering a unit
also starts the asynchronous all-gathers of the next k units in that order, so they travel while
the current unit computes. At most k units are in flight or waiting beyond the one in use. The
bytes gathered are the same, so the parameters are bitwise those of ``prefetch=0``. Gathers that
activation checkpointing's recomputation asks for in backward do not prefetch (backward's own
order does), and whatever is still gathered or in flight after the update is waited for and
released, so no forward ever sees parameters from before the update.

``reshard=false`` (FSDP2's ``reshard_after_forward=False``): a unit gathered for a forward with
autograd on stays gathered until its gradients are in, so backward gathers nothing: one gather per
unit and micro-step instead of two, for holding every block's parameters from the end of forward
until backward reaches it (forwards without autograd, such as evaluation, release as usual).

With ``hybrid=true`` units are sharded over, and gathered from, the workers of a node, and each
unit's gradient shard is all-reduced across the nodes (:mod:`gradsync.parallel.sharding.sharded`).

At any moment a rank holds its chunks plus the units in use: one block, and the root unit, which
the tied output head keeps gathered from the start of forward to the end of backward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn

from gradsync.core.config import ParallelConfig
from gradsync.core.errors import ConfigError
from gradsync.optim.factory import OptimizerFactory
from gradsync.parallel.grad_paths.reduce_scatter import ReduceScatterGrads
from gradsync.parallel.layout import FlatUnit, layer_units
from gradsync.parallel.memory import Holdings
from gradsync.parallel.sharding.sharded import ShardedStrategy, bind_unit_buffers
from gradsync.runtime.dist import Comm


class Zero3Strategy(ShardedStrategy):
    name = "zero3"
    grad_path: ReduceScatterGrads

    def __init__(self, model: nn.Module, optimizer_factory: OptimizerFactory, comm: Comm, cfg: ParallelConfig) -> None:
        super().__init__(model, optimizer_factory, comm, cfg)
        layers, root = layer_units(model)
        shard = self.shard_comm
        world, rank = shard.world_size, shard.rank
        owners = [(m, ps) for m in layers if (ps := [p for p in m.parameters() if p.requires_grad])]
        seen: set[int] = set()
        for _, ps in owners:
            if seen & {id(p) for p in ps}:
                raise ConfigError("zero3: a parameter is shared between two layers; cannot shard it per layer")
            seen |= {id(p) for p in ps}
        # Unit order = the order in which backward finishes them: last block first, root last.
        groups = [ps for _, ps in reversed(owners)] + ([root] if root else [])
        name_of = {id(p): n for n, p in model.named_parameters()}
        for g in groups:
            kinds = sorted({str(p.dtype).removeprefix("torch.") for p in g})
            if len(kinds) > 1:
                raise ConfigError(
                    f"zero3 shards each layer as one flat buffer, and one holds {' and '.join(kinds)} parameters "
                    f"({', '.join(name_of[id(p)] for p in g[:3])}, ...): give the model one dtype "
                    "(model.float()) or use zero2, which groups parameters by dtype"
                )
        self.units = [FlatUnit(i, g, world, rank) for i, g in enumerate(groups)]
        self.full = bind_unit_buffers(self.units)
        self.param_chunks = [u.my_chunk(full).clone() for u, full in zip(self.units, self.full)]
        self.prefetch = int(self.spec["prefetch"])
        self.reshard = bool(self.spec["reshard"])
        self._gathered = [True] * len(self.units)
        self._pending: dict[int, Any] = {}  # unit -> its all-gather in flight (a prefetch)
        self._order: dict[str, list[int]] = {}  # phase -> units in the order the last step gathered them
        self._seen: dict[str, list[int]] = {"forward": [], "backward": []}  # this step's, being recorded
        self._in_backward = False
        self.prefetches = 0  # gathers started ahead of need, in all
        for u in self.units:
            self._release(u)
        # every use of a unit's parameters in this backward is done when its last gradient is in
        self.grad_path = ReduceScatterGrads(
            self.name,
            model,
            self.units,
            shard,
            on_unit_done=self._release,
            on_launch=self.memory.sample,
            replicas=self.replicas,
            warn_unused=not cfg.find_unused,
        )
        self.grad_chunks = self.grad_path.chunks
        self.names = self.grad_path.names
        for (m, _), u in zip(reversed(owners), self.units):
            self._hook_module(m, u)
        model.register_forward_pre_hook(self._forward_starts)
        if root:  # kept from forward to backward: backward starts with the output head that ties to it
            self._hook_module(model, self.units[-1], keep=True)
        self.shard_optimizer()

    # -- gathering and releasing parameters ------------------------------------------------------
    def _gather(self, u: FlatUnit, phase: str = "") -> None:
        """Make ``u`` gathered (waiting for its prefetch if one is in flight); in ``phase``
        (forward / backward) record the order and prefetch the units that followed ``u`` last
        time."""
        if phase and u.index not in self._seen[phase]:
            self._seen[phase].append(u.index)
        if u.index in self._pending:
            self.shard_comm.wait(self._pending.pop(u.index))
            self._gathered[u.index] = True
        elif not self._gathered[u.index]:
            self._allocate(u)
            with torch.no_grad(), self.shard_comm.labelled(f"gather unit {u.index}"):
                self.shard_comm.all_gather(self.full[u.index], self.param_chunks[u.index])
            self._gathered[u.index] = True
            self.memory.sample()
        if phase and self.prefetch:
            order = self._order.get(phase, [])
            if u.index in order:
                at = order.index(u.index)
                for i in order[at + 1 : at + 1 + self.prefetch]:
                    self._start_gather(self.units[i])

    def _allocate(self, u: FlatUnit) -> None:
        full = self.full[u.index]
        full.untyped_storage().resize_(u.padded * full.element_size())

    def _start_gather(self, u: FlatUnit) -> None:
        if self._gathered[u.index] or u.index in self._pending:
            return
        self._allocate(u)
        with torch.no_grad(), self.shard_comm.labelled(f"prefetch unit {u.index}"):
            self._pending[u.index] = self.shard_comm.all_gather(
                self.full[u.index], self.param_chunks[u.index], async_op=True
            )
        self.prefetches += 1
        self.memory.sample()

    def _release(self, u: FlatUnit) -> None:
        if u.index in self._pending:  # a prefetch nobody used: it must land before the buffer goes
            self.shard_comm.wait(self._pending.pop(u.index))
            self._gathered[u.index] = True
        if self._gathered[u.index]:
            self.full[u.index].untyped_storage().resize_(0)
            self._gathered[u.index] = False

    def _end_of_step(self) -> None:
        """After the update (or a skipped one): keep this step's gather order for the next, and
        release everything, prefetched or not, so the next forward gathers updated parameters."""
        for phase, seen in self._seen.items():
            if seen:
                self._order[phase] = list(seen)
        self._seen = {"forward": [], "backward": []}
        self._in_backward = False
        for u in self.units:
            self._release(u)

    def after_update(self) -> None:
        super().after_update()
        self._end_of_step()

    def on_skipped_step(self) -> None:
        super().on_skipped_step()
        self._end_of_step()

    def _forward_starts(self, _m: nn.Module, _args: Any) -> None:
        self._in_backward = False  # a new micro-step (recomputation runs blocks, never the whole model)

    def _hook_module(self, module: nn.Module, u: FlatUnit, keep: bool = False) -> None:
        def pre(_m: nn.Module, _args: Any) -> None:
            # a gather during backward is activation checkpointing's recomputation: no prefetch
            self._gather(u, "" if self._in_backward else "forward")

        def in_backward(_g: torch.Tensor) -> None:
            self._in_backward = True
            self._gather(u, "backward")

        def post(_m: nn.Module, _args: Any, out: Any) -> None:
            if not torch.is_grad_enabled() or (self.reshard and not keep):
                self._release(u)
            if torch.is_grad_enabled():
                for t in _tensors(out):
                    if t.requires_grad:
                        t.register_hook(in_backward)
                        break

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    @contextlib.contextmanager
    def gathered(self) -> Iterator[None]:
        """Every unit gathered (collective), e.g. to read or write the whole model."""
        for u in self.units:
            self._gather(u)
        try:
            yield
        finally:
            for u in self.units:
                self._release(u)

    # -- state -----------------------------------------------------------------------------------
    def full_model_state(self) -> dict[str, torch.Tensor]:
        with self.gathered():
            return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def load_full_model_state(self, state: dict[str, torch.Tensor]) -> None:
        missing = [n for n in self.names.values() if n not in state]
        if missing:
            raise KeyError(f"model state lacks {', '.join(missing[:3])}")
        with torch.no_grad():
            for u, chunk in zip(self.units, self.param_chunks):
                flat = u.flatten([state[self.names[id(p)]].to(chunk.device, chunk.dtype) for p in u.params])
                chunk.copy_(u.my_chunk(flat))
            for name, b in self.model.named_buffers():
                if name in state:
                    b.copy_(state[name])

    def holdings(self) -> Holdings:
        held = super().holdings()
        frozen: list[torch.Tensor] = [p for p in self.model.parameters() if not p.requires_grad]  # whole everywhere
        held["params"] = list(self.full) + list(self.param_chunks) + frozen
        held["grads"] = [*held["grads"], *self.grad_path.in_flight()]
        return held


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _tensors(o)]
    return []
