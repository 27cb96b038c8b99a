"""DiLoCo (Douillard et al., 2023, "DiLoCo: Distributed Low-Communication Training of Language
Models"): local SGD with two optimizers. Each worker runs the inner optimizer (AdamW) for H steps
on its shard; then the outer step treats the averaged change of the parameters, the
pseudo-gradient Δ = θ_outer − mean_r θ_r, as a gradient for an outer Nesterov SGD (defaults:
lr 0.7, momentum 0.9), and every worker restarts from the new θ_outer. Inner optimizer states stay
local. Checkpoints hold the outer parameters and momentum as well as every rank's inner state.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.nn.utils import parameters_to_vector

from gradsync.config import ParallelConfig
from gradsync.dist import Comm
from gradsync.optim import OptimizerFactory
from gradsync.parallel.localsgd import LocalSGDStrategy
from gradsync.parallel.memory import optimizer_tensors


class DiLoCoStrategy(LocalSGDStrategy):
    name = "diloco"

    def __init__(self, model: nn.Module, optimizer_factory: OptimizerFactory, comm: Comm,
                 cfg: ParallelConfig) -> None:
        super().__init__(model, optimizer_factory, comm, cfg)
        self.outer = torch.nn.Parameter(parameters_to_vector(self._params).detach().clone())
        momentum = float(self.spec["momentum"])
        self.outer_optimizer = torch.optim.SGD([self.outer], lr=float(self.spec["outer_lr"]), momentum=momentum,
                                               nesterov=bool(self.spec["nesterov"]) and momentum > 0)

    def synchronize(self) -> None:
        self.outer.grad = self.outer.detach() - self.averaged_parameters()  # the pseudo-gradient
        self.outer_optimizer.step()
        self.outer.grad = None
        self.set_parameters(self.outer.detach())

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["outer"] = {"params": self.outer.detach().clone(), "optimizer": self.outer_optimizer.state_dict()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.outer.copy_(state["outer"]["params"])
        self.outer_optimizer.load_state_dict(state["outer"]["optimizer"])

    def holdings(self) -> dict[str, list[torch.Tensor | None]]:
        held = super().holdings()
        held["params"].append(self.outer)
        held["optimizer"] += optimizer_tensors(self.outer_optimizer)
        return held
