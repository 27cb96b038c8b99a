"""Local SGD (Stich, ICLR 2019; Lin et al., ICLR 2020): every worker runs its own optimizer on
its own shard of the batch, and the parameters are averaged every H steps. Between averages no
gradient crosses the network, so communication per step falls by H; the workers' models drift
apart in between, which is what it costs in convergence.

Each worker clips by the norm of its own gradient (there is no global gradient), and keeps its own
optimizer state: only parameters are averaged. A checkpoint therefore holds every rank's model and
optimizer state, so resuming is exact even between two averages.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn as nn
from torch.nn.utils import parameters_to_vector

from gradsync.core.config import ParallelConfig
from gradsync.optim.factory import OptimizerFactory
from gradsync.parallel.base import Strategy
from gradsync.runtime.dist import Comm


def copy_into(params: list[nn.Parameter], flat: torch.Tensor) -> None:
    """Copy ``flat`` into ``params`` in order (torch's ``vector_to_parameters`` would make them
    views of ``flat`` instead, aliasing whatever else uses that buffer)."""
    at = 0
    for p in params:
        p.copy_(flat[at : at + p.numel()].view_as(p))
        at += p.numel()


class LocalSGDStrategy(Strategy):
    name = "localsgd"
    local_gradients = True
    broadcasts_buffers = False  # each replica keeps its own statistics between averages
    tracks_unused = False  # a parameter this rank did not use has no gradient: its optimizer skips it

    def __init__(self, model: nn.Module, optimizer_factory: OptimizerFactory, comm: Comm, cfg: ParallelConfig) -> None:
        super().__init__(model, optimizer_factory, comm, cfg)
        self.period = int(self.spec["H"])
        self.local_steps = 0
        self._params = [p for p in model.parameters() if p.requires_grad]

    def finish_grad_sync(self) -> None:
        pass  # nothing leaves the worker at a step: each rank clips and updates on its own gradient

    def after_update(self) -> None:
        self._count_step()

    def on_skipped_step(self) -> None:
        self._count_step()  # a skipped step still counts towards the period, on every rank alike

    def _count_step(self) -> None:
        self.local_steps += 1
        if self.local_steps % self.period == 0:
            with torch.no_grad():
                self.synchronize()

    def averaged_parameters(self) -> torch.Tensor:
        """The mean over ranks of this worker's parameters, as one flat vector (one all-reduce)."""
        flat = parameters_to_vector(self._params)
        with self.comm.labelled("parameter average"):
            self.comm.all_reduce(flat)
        flat.div_(self.comm.world_size)
        if self.live_replicas is not None:  # a live job: the average is over its replicas too
            self.live_replicas.average_([flat])
        return flat

    def synchronize(self) -> None:
        flat = self.averaged_parameters()
        if self.live_replicas is not None and self.live_replicas.failed():
            return  # a replica died in the average: keep this one's parameters; the next average mixes them
        self.set_parameters(flat)

    def set_parameters(self, flat: torch.Tensor) -> None:
        copy_into(self._params, flat)

    # -- state: every rank's, since they differ between averages ---------------------------------
    def local_state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_local_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def live_state(self) -> dict[str, Any]:
        """A live peer's state, and where it is in the period: a returning replica averages when they do."""
        return {**self.local_state(), "local_steps": self.local_steps}

    def load_live_state(self, state: dict[str, Any]) -> None:
        self.load_local_state(state)
        self.local_steps = int(state["local_steps"])

    def state_dict(self) -> dict[str, Any]:
        ranks = self.comm.gather_object(self.local_state())
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ranks": ranks,
            "local_steps": self.local_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ranks = state.get("ranks") or [state]
        if len(ranks) == self.comm.world_size:
            self.load_local_state(ranks[self.comm.env.rank])
        else:
            warnings.warn(
                f"{self.name}: checkpoint written by {len(ranks)} workers; every worker resumes "
                "from rank 0's model and optimizer state",
                stacklevel=2,
            )
            self.load_local_state(ranks[0])
        self.local_steps = int(state.get("local_steps", 0))
