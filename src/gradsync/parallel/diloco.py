"""DiLoCo (Douillard et al., 2023, "DiLoCo: Distributed Low-Communication Training of Language
Models") and its streaming form (Douillard et al., 2025, "Streaming DiLoCo with overlapping
communication: Towards a Distributed Free Lunch").

DiLoCo is local SGD with two optimizers. Each worker runs the inner optimizer (AdamW) for H steps
on its shard; then the outer step treats the averaged change of the parameters, the
pseudo-gradient Δ = θ_outer − mean_r θ_r, as a gradient for an outer Nesterov SGD (defaults:
lr 0.7, momentum 0.9), and every worker restarts from the new θ_outer. Inner optimizer states stay
local.

Streaming DiLoCo changes what moves and when, not the outer step:

- ``fragments=P``: the model is cut into P fragments — transformer block i (the i-th element of
  the model's ``nn.ModuleList``) belongs to fragment i mod P (the paper's strided pattern), and
  the parameters outside the blocks (embeddings, final norm) join the smallest fragments — and
  fragment f is synchronised at steps (f+1)·H/P + k·H. Each outer step moves 1/P of the model,
  so the peak bandwidth falls by P while every parameter is still synchronised every H steps.
- ``overlap=τ``: a fragment's outer communication starts at its step and the result is applied τ
  inner steps later; the inner steps in between run while it travels. τ ≤ H: with τ = H a fragment
  lands at the step it is sent again, just before (``diloco:1,overlap=1`` averages every step, one
  step late). When it lands, the fragment becomes ``mix · θ_local + (1 − mix) · θ_outer``:
  ``mix=0`` (default) takes the outer parameters, dropping the τ local steps' progress on that
  fragment; the paper merges with mix = 0.5.
  ``keep=true`` keeps that progress instead: θ ← θ_outer + (θ_local − θ_sent), the outer
  correction applied on top of the steps taken while it travelled (with small H, where dropping
  τ of every H steps costs most; it holds the sent fragment, Ψ/P, until it lands).
- ``quant=bf16|int8|int4``: the pseudo-gradients are sent in reduced precision with error
  feedback (:mod:`gradsync.parallel.grad_paths.quantized_mean`); ``fp32`` sends the parameters, as DiLoCo does.

``diloco:H`` (one fragment, no overlap, fp32) is exactly DiLoCo: the same operations in the same
order. Checkpoints hold the outer parameters and momentum, every rank's inner state and residuals,
and the fragments still in flight (collected when the checkpoint is taken, applied at the step
they were due), so a resumed run is bitwise the run that was not stopped.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.nn.utils import parameters_to_vector

from gradsync.core.config import ParallelConfig
from gradsync.core.errors import ConfigError
from gradsync.optim.factory import OptimizerFactory
from gradsync.parallel.grad_paths.quantized_mean import InFlight, QuantizedMean
from gradsync.parallel.layout import layer_units
from gradsync.parallel.localsgd import LocalSGDStrategy, copy_into
from gradsync.parallel.memory import Holdings, optimizer_tensors
from gradsync.runtime.dist import Comm


def sends_at(fragment: int, step: int, period: int, fragments: int) -> bool:
    """Whether ``fragment`` (of ``fragments``) starts its outer communication after local step
    ``step`` when every fragment is synchronised each ``period`` steps: at (f+1)·H/P + k·H."""
    return step % period == (fragment + 1) * period // fragments % period


def fragment_params(model: nn.Module, params: list[nn.Parameter], count: int) -> list[list[nn.Parameter]]:
    """``params`` cut into ``count`` fragments: block i to fragment i mod count, the parameters
    outside the blocks one by one to the fragment with the fewest elements; each fragment in the
    model's parameter order."""
    if count == 1:
        return [list(params)]
    blocks, _ = layer_units(model)
    if len(blocks) < count:
        raise ConfigError(
            f"diloco: fragments={count} needs at least {count} blocks (elements of an "
            f"nn.ModuleList); this model has {len(blocks)}"
        )
    home: dict[int, int] = {}
    for i, block in enumerate(blocks):
        for p in block.parameters():
            home.setdefault(id(p), i % count)
    size = [0] * count
    for p in params:
        if id(p) in home:
            size[home[id(p)]] += p.numel()
    for p in params:
        if id(p) not in home:
            home[id(p)] = min(range(count), key=lambda f: size[f])
            size[home[id(p)]] += p.numel()
    return [[p for p in params if home[id(p)] == f] for f in range(count)]


class DiLoCoStrategy(LocalSGDStrategy):
    name = "diloco"

    def __init__(self, model: nn.Module, optimizer_factory: OptimizerFactory, comm: Comm, cfg: ParallelConfig) -> None:
        super().__init__(model, optimizer_factory, comm, cfg)
        count = int(self.spec["fragments"])
        self.overlap = int(self.spec["overlap"])
        self.mix = float(self.spec["mix"])
        self.keep = bool(self.spec["keep"])
        self.sent: dict[int, torch.Tensor] = {}  # keep=true: fragment -> its parameters when sent
        self.quant = str(self.spec["quant"])
        self.fragments = fragment_params(model, self._params, count)
        self.outer = [torch.nn.Parameter(parameters_to_vector(ps).detach().clone()) for ps in self.fragments]
        momentum = float(self.spec["momentum"])
        self.outer_optimizer = torch.optim.SGD(
            self.outer,
            lr=float(self.spec["outer_lr"]),
            momentum=momentum,
            nesterov=bool(self.spec["nesterov"]) and momentum > 0,
        )
        self.reducer = QuantizedMean(comm, self.quant)
        self.in_flight: dict[int, tuple[int, InFlight]] = {}  # fragment -> (step it lands at, its mean)

    def describe(self) -> str:
        sizes = ", ".join(f"{sum(p.numel() for p in ps):,}" for ps in self.fragments)
        return (
            f"outer step every {self.period} steps: {len(self.fragments)} fragment(s) of {sizes} parameters, "
            f"staggered every {self.period // len(self.fragments)} steps, applied {self.overlap} step(s) "
            f"after they are sent, sent in {self.quant}"
        )

    def sends_at(self, fragment: int, step: int) -> bool:
        """Whether ``fragment`` starts its outer communication after local step ``step``."""
        return sends_at(fragment, step, self.period, len(self.fragments))

    def _count_step(self) -> None:
        self.local_steps += 1
        t = self.local_steps
        with torch.no_grad():  # landings before sends: with overlap = H one lands as it is sent again
            for f, (lands, job) in sorted(self.in_flight.items()):
                if lands == t:
                    self._land(f)
                elif lands - self.overlap + 1 == t:
                    self.reducer.advance(job)  # second stage of a quantised mean, one step after the first
            for f in range(len(self.fragments)):
                if self.sends_at(f, t):
                    self._send(f, t)

    def _send(self, f: int, step: int) -> None:
        flat = parameters_to_vector(self.fragments[f])
        if self.keep and self.overlap:
            self.sent[f] = flat.clone()
        if self.quant != "fp32":  # the pseudo-gradient, small and centred: what quantises well
            flat = torch.sub(self.outer[f].detach(), flat)
        with self.comm.labelled(f"fragment {f}"):
            self.in_flight[f] = (step + self.overlap, self.reducer.start(f, flat))
        if self.overlap == 0:
            self._land(f)

    def _land(self, f: int) -> None:
        _, job = self.in_flight.pop(f)
        mean = self.reducer.finish(job)
        if self.live_replicas is not None:  # a live job: the mean is over its replicas too (fp32)
            self.live_replicas.average_([mean])
            if self.live_replicas.failed():
                return  # a replica died in it: no outer step; the local parameters go on
        outer = self.outer[f]
        outer.grad = outer.detach() - mean if self.quant == "fp32" else mean  # the pseudo-gradient
        self.outer_optimizer.step()
        outer.grad = None
        if f in self.sent:  # keep=true: the outer parameters plus the progress made since the send
            local = parameters_to_vector(self.fragments[f])
            copy_into(self.fragments[f], local.sub_(self.sent.pop(f)).add_(outer.detach()))
        elif self.mix == 0:
            copy_into(self.fragments[f], outer.detach())
        else:
            local = parameters_to_vector(self.fragments[f])
            copy_into(self.fragments[f], local.mul_(self.mix).add_(outer.detach(), alpha=1 - self.mix))

    def synchronize(self) -> None:
        raise NotImplementedError("diloco synchronises per fragment in _count_step")

    # -- state -----------------------------------------------------------------------------------
    def local_state(self) -> dict[str, Any]:
        return {
            **super().local_state(),
            "residuals": self.reducer.state_dict(),
            "sent": {f: t.clone() for f, t in self.sent.items()},
        }

    def load_local_state(self, state: dict[str, Any]) -> None:
        super().load_local_state(state)
        self.reducer.load_state_dict(state.get("residuals", {}))
        self.sent = {int(f): t.clone() for f, t in state.get("sent", {}).items()}

    def live_state(self) -> dict[str, Any]:
        return {
            **super().live_state(),
            "outer": [o.detach().clone() for o in self.outer],
            "outer_optimizer": self.outer_optimizer.state_dict(),
        }

    def load_live_state(self, state: dict[str, Any]) -> None:
        super().load_live_state(state)
        with torch.no_grad():
            for o, t in zip(self.outer, state["outer"]):
                o.copy_(t)
        self.outer_optimizer.load_state_dict(state["outer_optimizer"])

    def state_dict(self) -> dict[str, Any]:
        # collect what is in flight now (every rank saves at the same step); it is applied at the
        # step it was due, as if it had never been stopped
        flying = {f: (lands, self.reducer.finish(job).clone()) for f, (lands, job) in self.in_flight.items()}
        state = super().state_dict()
        state["outer"] = {
            "params": [o.detach().clone() for o in self.outer],
            "optimizer": self.outer_optimizer.state_dict(),
            "in_flight": flying,
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        outer = state["outer"]
        saved = outer["params"] if isinstance(outer["params"], list) else [outer["params"]]
        if [t.numel() for t in saved] != [o.numel() for o in self.outer]:
            raise ConfigError(
                f"diloco: the checkpoint holds {len(saved)} fragment(s) of "
                f"{[t.numel() for t in saved]} elements, this run {len(self.outer)} of "
                f"{[o.numel() for o in self.outer]}; resume with the same fragments"
            )
        with torch.no_grad():
            for o, t in zip(self.outer, saved):
                o.copy_(t)
        self.outer_optimizer.load_state_dict(outer["optimizer"])
        self.in_flight = {}
        for f, (lands, mean) in outer.get("in_flight", {}).items():
            job = InFlight(int(f), mean.numel())
            job.mean = mean.clone()
            self.in_flight[int(f)] = (int(lands), job)

    def holdings(self) -> Holdings:
        held = super().holdings()
        held["params"] = [*held["params"], *self.outer, *self.sent.values()]
        held["optimizer"] = [
            *held["optimizer"],
            *optimizer_tensors(self.outer_optimizer),
            *self.reducer.residuals.values(),
        ]
        return held
