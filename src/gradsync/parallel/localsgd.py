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
from torch.nn.utils import parameters_to_vector

from gradsync.parallel.base import Strategy


class LocalSGDStrategy(Strategy):
    name = "localsgd"
    local_gradients = True

    @property
    def period(self) -> int:
        return int(self.spec["H"])

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        self.local_steps = 0
        self._params = [p for p in model.parameters() if p.requires_grad]
        return model

    def finish_grad_sync(self) -> None:
        pass  # nothing leaves the worker at a step

    def step(self, grad_clip: float) -> float:
        norm = super().step(grad_clip)  # local clip and update (finish_grad_sync does nothing)
        self.local_steps += 1
        if self.local_steps % self.period == 0:
            with torch.no_grad():
                self.synchronize()
        return norm

    def averaged_parameters(self) -> torch.Tensor:
        """The mean over ranks of this worker's parameters, as one flat vector (one all-reduce)."""
        flat = parameters_to_vector(self._params)
        self.comm.all_reduce(flat)
        return flat.div_(self.comm.world_size)

    def synchronize(self) -> None:
        self.set_parameters(self.averaged_parameters())

    def set_parameters(self, flat: torch.Tensor) -> None:
        """Copy ``flat`` into the parameters (torch's ``vector_to_parameters`` would make them
        views of ``flat`` instead, aliasing whatever else uses that buffer)."""
        at = 0
        for p in self._params:
            p.copy_(flat[at:at + p.numel()].view_as(p))
            at += p.numel()

    # -- state: every rank's, since they differ between averages ---------------------------------
    def local_state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_local_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def state_dict(self) -> dict[str, Any]:
        ranks = self.comm.gather_object(self.local_state())
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "ranks": ranks, "local_steps": self.local_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ranks = state.get("ranks") or [state]
        if len(ranks) == self.comm.world_size:
            self.load_local_state(ranks[self.comm.env.rank])
        else:
            warnings.warn(f"{self.name}: checkpoint written by {len(ranks)} workers; every worker resumes "
                          "from rank 0's model and optimizer state", stacklevel=2)
            self.load_local_state(ranks[0])
        self.local_steps = int(state.get("local_steps", 0))
