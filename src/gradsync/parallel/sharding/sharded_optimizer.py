"""The configured optimizer, sharded: each rank updates only its pieces of every unit.

:class:`ShardedOptimizer` rebuilds the configured optimizer (same class, same param groups and
hyperparameters) over this rank's pieces (:mod:`gradsync.parallel.layout`), which is exact for
element-wise optimizers (AdamW, Adam, SGD), and converts its state to and from the format torch's
optimizer has over the full model, so checkpoints depend neither on the world size nor on the
strategy (Rajbhandari et al., SC 2020).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from gradsync.core.errors import ConfigError
from gradsync.parallel.layout import FlatUnit, Piece
from gradsync.runtime.dist import Comm

ELEMENTWISE = (torch.optim.AdamW, torch.optim.Adam, torch.optim.SGD)


class ShardedOptimizer(torch.optim.Optimizer):
    """The configured optimizer, rebuilt over this rank's pieces of every unit.

    ``data[u]`` / ``grad[u]`` are this rank's chunk of unit ``u``'s parameters and gradients (the
    strategy owns them); the optimizer's parameters are views into them, so stepping it updates the
    chunk in place.

    It is a ``torch.optim.Optimizer`` whose ``param_groups`` are the inner optimizer's, so torch's
    and ``transformers``' learning-rate schedulers drive it as they drive a plain one. Its state is
    spread over the ranks: the full-model ``state_dict`` is collective
    (:meth:`full_state_dict`, what the strategy's ``state_dict()`` holds).
    """

    def __init__(
        self, template: torch.optim.Optimizer, units: list[FlatUnit], data: list[torch.Tensor], grad: list[torch.Tensor]
    ) -> None:
        if not isinstance(template, ELEMENTWISE):
            raise ConfigError(
                f"ZeRO shards the optimizer element-wise; {type(template).__name__} is "
                f"not known to be element-wise (supported: AdamW, Adam, SGD)"
            )
        self.template = template
        self.units = units
        self.index = {id(p): i for i, p in enumerate(p for g in template.param_groups for p in g["params"])}
        group_of = {id(p): gi for gi, g in enumerate(template.param_groups) for p in g["params"]}
        groups: list[dict[str, Any]] = [
            {**{k: v for k, v in g.items() if k != "params"}, "params": []} for g in template.param_groups
        ]
        self.slots: list[tuple[FlatUnit, Piece, nn.Parameter]] = []
        for u, d, gr in zip(units, data, grad):
            for pc in u.pieces:
                n = pc.hi - pc.lo
                leaf = nn.Parameter(d[pc.at : pc.at + n])  # shares the chunk's storage
                leaf.grad = gr[pc.at : pc.at + n]
                groups[group_of[id(pc.param)]]["params"].append(leaf)
                self.slots.append((u, pc, leaf))
        self.optimizer = type(template)(groups)
        # Optimizer.__init__ is not called: this object has no parameters of its own; what
        # schedulers and the trainer read are the inner optimizer's groups, defaults and state
        self.param_groups = self.optimizer.param_groups
        self.defaults = self.optimizer.defaults
        self.state = self.optimizer.state

    def pieces_of(self, params: Sequence[torch.Tensor]) -> list[nn.Parameter]:
        """This rank's pieces of ``params`` (what the inner optimizer steps on for them)."""
        wanted = {id(p) for p in params}
        return [leaf for _, pc, leaf in self.slots if id(pc.param) in wanted]

    def step(self, closure: Any = None) -> Any:
        if closure is not None:
            raise ConfigError("a sharded optimizer cannot re-evaluate the loss (step(closure)): it holds a shard")
        return self.optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The strategy zeroes its gradient chunks (the pieces here are views into them)."""

    def state_dict(self) -> dict[str, Any]:
        raise ConfigError(
            "a sharded optimizer's state is spread over the ranks: use the strategy's (or dp.) state_dict(), "
            "which gathers torch's full-model optimizer state on every rank (collective)"
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        raise ConfigError(
            "a sharded optimizer loads through the strategy's (or dp.) load_state_dict(), which takes torch's "
            "full-model optimizer state"
        )

    # -- the full-model format -------------------------------------------------------------------
    def full_state_dict(self, comm: Comm) -> dict[str, Any]:
        """torch's ``optimizer.state_dict()`` for the full model, assembled from every rank's pieces
        (collective). Per-element state is all-gathered unit by unit; scalar state (``step``) is the
        same on every piece of a parameter and travels as an object."""
        mine: dict[str, bool] = {}
        stepped: set[int] = set()  # parameters with state: one never stepped has none, as in torch
        for _, pc, leaf in self.slots:
            if self.optimizer.state.get(leaf):
                stepped.add(self.index[id(pc.param)])
            for k, v in self.optimizer.state.get(leaf, {}).items():
                mine[k] = isinstance(v, torch.Tensor) and v.numel() == leaf.numel() and v.dim() > 0
        keys: dict[str, bool] = {}
        for d, s in comm.all_gather_object((mine, stepped)):
            keys.update(d)
            stepped |= s
        state: dict[int, dict[str, Any]] = {i: dict(st) for i, st in self.gather_scalars(comm).items()}
        for key in sorted(k for k, per_element in keys.items() if per_element):
            for u in self.units:
                chunk = torch.zeros(u.chunk, dtype=u.params[0].dtype, device=comm.env.device)  # the state's dtype
                for uu, pc, leaf in self.slots:
                    if uu is u and leaf in self.optimizer.state:
                        chunk[pc.at : pc.at + pc.hi - pc.lo].copy_(self.optimizer.state[leaf][key])
                full = torch.empty(u.padded, dtype=chunk.dtype, device=chunk.device)
                comm.all_gather(full, chunk)
                for p, v in zip(u.params, u.views(full)):
                    if self.index[id(p)] in stepped:
                        state.setdefault(self.index[id(p)], {})[key] = v.clone().cpu()
        return {"state": state, "param_groups": self.full_param_groups()}

    def gather_scalars(self, comm: Comm) -> dict[int, dict[str, Any]]:
        """Per-parameter state that is not per-element (AdamW's ``step``), by the parameter's
        full-model index, from every rank (collective: a parameter wholly inside another rank's
        chunk has its scalars only there)."""
        scalars: dict[int, dict[str, Any]] = {}
        for _, pc, leaf in self.slots:
            for k, v in self.optimizer.state.get(leaf, {}).items():
                if not (isinstance(v, torch.Tensor) and v.numel() == leaf.numel() and v.dim() > 0):
                    scalars.setdefault(self.index[id(pc.param)], {})[k] = v
        merged: dict[int, dict[str, Any]] = {}
        for d in comm.all_gather_object(scalars):
            for i, st in d.items():
                merged.setdefault(i, {}).update(st)
        return merged

    def full_param_groups(self) -> list[dict[str, Any]]:
        """torch's ``param_groups`` of the full-model optimizer, with the live hyperparameters (lr)."""
        groups = self.template.state_dict()["param_groups"]
        for g, live in zip(groups, self.optimizer.param_groups):
            g.update({k: v for k, v in live.items() if k != "params"})
        return groups

    def local_state_dict(self) -> dict[str, Any]:
        """The state of this rank's pieces only (the inner optimizer's): what the rank of the same
        number holds in another replica of as many workers (a live job's returning replica)."""
        return self.optimizer.state_dict()

    def load_local_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)
        # torch's load_state_dict builds new param_groups and state: this wrapper shows the new ones,
        # or the trainer would set the learning rate on groups the inner optimizer no longer reads
        self.param_groups, self.state = self.optimizer.param_groups, self.optimizer.state

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
                # per-element state has the parameter's shape, 0-dim included; "step" is torch's one
                # scalar state (a 0-dim parameter's step has its shape too)
                if isinstance(v, torch.Tensor) and k != "step" and v.shape == pc.param.shape:
                    st[k] = v.reshape(-1)[pc.lo : pc.hi].to(leaf.device).clone()
                else:
                    st[k] = v.clone() if isinstance(v, torch.Tensor) else v
            self.optimizer.state[leaf] = st
