"""A strategy's state as slices of the full-model state: what a sharded checkpoint writes and fills.

The full-model state is the one a single-file checkpoint holds, tensor by tensor: ``model/NAME``
(every parameter and buffer, by its ``state_dict`` name) and ``optim/INDEX/STATE`` (torch's
per-parameter optimizer state, e.g. ``optim/3/exp_avg``). A :class:`Slice` is the elements
``[lo, lo + n)`` of one such tensor, flattened, held by this rank:

* replicated strategies (every rank holds everything) write an even 1/N of each tensor per rank,
  so the ranks write in parallel and nothing is written twice; on load every rank fills all of it;
* ZeRO strategies write and fill exactly the pieces they own (:mod:`gradsync.parallel.layout`):
  their optimizer state, and for ZeRO-3 their parameters; ZeRO-1/2 then all-gather the parameters.

Because the slices are of world-size-independent tensors, a checkpoint written by N ranks loads
on M (each rank reads the saved slices that overlap what it holds). Optimizer state that is not
per-element (AdamW's ``step``) and the param groups travel as ``extras``, the same on every rank.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn as nn

from gradsync.runtime.dist import Comm


@dataclass
class Slice:
    key: str  # model/NAME or optim/INDEX/STATE
    shape: tuple[int, ...]  # the full tensor's shape
    lo: int  # offset of the first element in the flattened full tensor
    tensor: torch.Tensor  # 1-D: this rank's elements (a view to write from, or to fill)


@dataclass
class StateSlices:
    slices: list[Slice]
    extras: dict[str, Any] = field(default_factory=dict)  # optimizer scalars and param groups; tied names
    finish: Callable[[dict[str, Any]], None] = lambda extras: None  # after a load: install what was filled


def even_range(n: int, world: int, rank: int) -> tuple[int, int]:
    """Rank ``rank``'s share ``[lo, hi)`` of ``n`` elements split evenly (the last may be short)."""
    per = -(-n // world)
    return min(n, rank * per), min(n, (rank + 1) * per)


def per_element(value: Any, param: torch.Tensor) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() > 0 and value.numel() == param.numel()


def aliases(model: nn.Module) -> dict[str, str]:
    """Second names of shared parameters (tied embeddings): name -> the name they are saved under."""
    first: dict[int, str] = {}
    out = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            out[name] = first[id(p)]
        else:
            first[id(p)] = name
    return out


def replicated_save(model: nn.Module, optimizer: torch.optim.Optimizer, world: int, rank: int) -> StateSlices:
    tied = aliases(model)
    slices = []
    for name, t in model.state_dict().items():
        if name not in tied:
            slices.append(_even(f"model/{name}", t, world, rank))
    full = optimizer.state_dict()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    scalars: dict[int, dict[str, Any]] = {}
    for i, st in full["state"].items():
        for k, v in st.items():
            if per_element(v, params[i]):
                slices.append(_even(f"optim/{i}/{k}", v, world, rank))
            else:
                scalars.setdefault(int(i), {})[k] = v
    return StateSlices(slices, {"scalars": scalars, "param_groups": full["param_groups"], "aliases": tied})


def _even(key: str, t: torch.Tensor, world: int, rank: int) -> Slice:
    lo, hi = even_range(t.numel(), world, rank)
    return Slice(key, tuple(t.shape), lo, t.detach().reshape(-1)[lo:hi])


def replicated_load(
    model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict[str, tuple[tuple[int, ...], str]]
) -> StateSlices:
    """Slices covering the whole model state (filled in place) and every saved optimizer state."""
    tied = aliases(model)
    slices = [
        Slice(f"model/{n}", tuple(t.shape), 0, t.view(-1)) for n, t in model.state_dict().items() if n not in tied
    ]
    opt_slices = [
        Slice(k, tuple(shape), 0, torch.empty(torch.Size(shape).numel(), dtype=getattr(torch, dtype)))
        for k, (shape, dtype) in saved.items()
        if k.startswith("optim/")
    ]

    def finish(extras: dict[str, Any]) -> None:
        state: dict[int, dict[str, Any]] = {int(i): dict(st) for i, st in extras["scalars"].items()}
        for s in opt_slices:
            _, i, name = s.key.split("/", 2)
            state.setdefault(int(i), {})[name] = s.tensor.view(s.shape)
        optimizer.load_state_dict({"state": state, "param_groups": extras["param_groups"]})

    return StateSlices(slices + opt_slices, finish=finish)


def sharded_save(strategy: Any, comm: Comm, writes: bool = True) -> StateSlices:
    """A ZeRO strategy's own pieces, sharded over ``comm`` (collective: the optimizer's scalars are
    gathered); with ``writes`` False (a replica of pieces another rank writes) every slice is empty."""
    strategy.wait_params()
    model, opt = strategy.model, strategy.optimizer
    slices = _param_pieces(strategy) + _buffer_slices(model, comm.world_size, comm.rank)
    for _, pc, leaf in opt.slots:
        for k, v in opt.optimizer.state.get(leaf, {}).items():
            if per_element(v, leaf):
                slices.append(
                    Slice(f"optim/{opt.index[id(pc.param)]}/{k}", tuple(pc.param.shape), pc.lo, v.detach().reshape(-1))
                )
    if not writes:
        slices = [Slice(s.key, s.shape, s.lo, s.tensor[:0]) for s in slices]
    return StateSlices(
        slices,
        {"scalars": opt.gather_scalars(comm), "param_groups": opt.full_param_groups(), "aliases": aliases(model)},
    )


def _param_pieces(strategy: Any) -> list[Slice]:
    names = {id(p): n for n, p in strategy.model.named_parameters()}
    out = []
    for u, chunk in zip(strategy.units, strategy.param_chunks):
        for pc in u.pieces:
            out.append(
                Slice(
                    f"model/{names[id(pc.param)]}", tuple(pc.param.shape), pc.lo, chunk[pc.at : pc.at + pc.hi - pc.lo]
                )
            )
    return out


def _buffer_slices(model: nn.Module, world: int, rank: int, full: bool = False) -> list[Slice]:
    state = model.state_dict()
    out = []
    for name, _ in model.named_buffers():
        if name in state:  # persistent buffers only
            t = state[name]
            out.append(
                Slice(f"model/{name}", tuple(t.shape), 0, t.view(-1))
                if full
                else _even(f"model/{name}", t, world, rank)
            )
    return out


def sharded_load(strategy: Any, comm: Comm, saved: dict[str, tuple[tuple[int, ...], str]]) -> StateSlices:
    """This rank's pieces to fill: parameters into its chunks, optimizer state for its slots."""
    strategy.wait_params()
    opt = strategy.optimizer
    slices = _param_pieces(strategy) + _buffer_slices(strategy.model, comm.world_size, comm.rank, full=True)
    slot_slices: list[tuple[nn.Parameter, str, Slice]] = []
    for _, pc, leaf in opt.slots:
        index = opt.index[id(pc.param)]
        for k, (shape, dtype) in saved.items():
            if k.startswith(f"optim/{index}/"):
                s = Slice(k, tuple(shape), pc.lo, torch.zeros(pc.hi - pc.lo, dtype=getattr(torch, dtype)))
                slot_slices.append((leaf, k.split("/", 2)[2], s))

    def finish(extras: dict[str, Any]) -> None:
        for g, saved_group in zip(opt.param_groups, extras["param_groups"]):
            g.update({k: v for k, v in saved_group.items() if k != "params"})
        opt.optimizer.state.clear()
        for _, pc, leaf in opt.slots:
            st = {
                k: (v.clone() if isinstance(v, torch.Tensor) else v)
                for k, v in extras["scalars"].get(opt.index[id(pc.param)], {}).items()
            }
            if st:
                opt.optimizer.state[leaf] = st
        for leaf, name, s in slot_slices:
            opt.optimizer.state.setdefault(leaf, {})[name] = s.tensor.to(leaf.device)
        if strategy.gathers is not None:  # ZeRO-1/2: every rank's parameters from the loaded chunks
            strategy.gathers.launch()
            strategy.gathers.wait()

    return StateSlices(slices + [s for _, _, s in slot_slices], finish=finish)


Saved = dict[str, tuple[tuple[int, ...], str]]  # the tensors a sharded checkpoint holds: key -> (shape, dtype)


class SliceLayout(Protocol):
    """A strategy's part that says which slices of the full-model state its rank holds."""

    def save(self) -> StateSlices:
        """What this rank writes of the full-model state in a sharded checkpoint."""
        ...

    def load(self, saved: Saved) -> StateSlices:
        """What this rank fills from a sharded checkpoint holding the tensors ``saved``; call the
        result's ``finish(extras)`` once they are filled."""
        ...


class ReplicatedSlices:
    """Every rank holds everything: each writes an even 1/N of every tensor and fills all of it.
    ``strategy`` is read when called (its optimizer may be replaced after this part is built)."""

    def __init__(self, strategy: Any) -> None:
        self.strategy = strategy

    def save(self) -> StateSlices:
        s = self.strategy
        return replicated_save(s.model, s.optimizer, s.comm.world_size, s.comm.env.rank)

    def load(self, saved: Saved) -> StateSlices:
        return replicated_load(self.strategy.model, self.strategy.optimizer, saved)


class ShardedSlices:
    """ZeRO: each rank writes and fills the pieces it owns over ``comm`` (the ranks it shards
    over); with ``writes=False`` (another replica of the same shard writes) it writes nothing."""

    def __init__(self, strategy: Any, comm: Comm, writes: bool = True) -> None:
        self.strategy, self.comm, self.writes = strategy, comm, writes

    def save(self) -> StateSlices:
        return sharded_save(self.strategy, self.comm, writes=self.writes)

    def load(self, saved: Saved) -> StateSlices:
        return sharded_load(self.strategy, self.comm, saved)
