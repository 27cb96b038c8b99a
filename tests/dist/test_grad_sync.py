"""Gradient aggregation, checked directly (AdamW is nearly scale-invariant, so a wrong average
could hide behind it in a parameter comparison): after one synchronized step every strategy's
gradients equal the full-batch gradient of a single process."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
import torch.nn as nn

from gradsync.core.config import ParallelConfig
from gradsync.core.errors import DistributedError
from gradsync.model import build_gpt
from gradsync.parallel import strategy_class
from gradsync.parallel.sharding.sharded import ShardedStrategy
from gradsync.runtime.dist import Comm, init_distributed, verify_replicas
from gradsync.testing import run_world

B, T, V = 8, 16, 32


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, V, (B, T + 1), generator=g)
    return data[:, :-1], data[:, 1:]


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.0)


def _rel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().max() / b.abs().max().clamp_min(1e-12)


def _synced_grads(rank: int, strategy: str, accum: int) -> dict[str, torch.Tensor]:
    cfg = ParallelConfig(nproc=2, strategy=strategy, bucket_mb=0.01, first_bucket_mb=0.002)
    env = init_distributed(cfg.backend, cfg.timeout_s)
    torch.manual_seed(rank)  # different init on each rank: replication must fix it
    model = build_gpt("tiny", V, T)
    s = strategy_class(cfg.strategy_spec.name)(model, _sgd, Comm(env), cfg)
    x, y = _batch()
    mine = slice(rank * B // 2, (rank + 1) * B // 2)
    xs, ys = x[mine].chunk(accum), y[mine].chunk(accum)
    for i in range(accum):
        with s.micro_step(last=i == accum - 1):
            (s.module(xs[i], ys[i]) / accum).backward()
    s.finish_grad_sync()
    # reference: the whole batch on one process, from rank 0's (broadcast) initial weights
    ref = build_gpt("tiny", V, T)
    ref.load_state_dict(s.full_model_state())
    ref(x, y).backward()
    ref_grad = {id(p): q.grad for p, q in zip(model.parameters(), ref.parameters())}
    out = {"_bytes": torch.tensor(float(s.comm.stats.bytes) if s.measures_bytes else -1.0)}
    if isinstance(s, ShardedStrategy):  # sharded: this rank's chunk of every unit
        for u, chunk in zip(s.units, s.grad_chunks):
            out[f"unit{u.index}"] = _rel(chunk, u.my_chunk(u.flatten([ref_grad[id(p)] for p in u.params])))
    else:
        for n, p in model.named_parameters():
            g = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
            out[n] = _rel(g, ref_grad[id(p)])
    return out


SYNCHRONOUS = [
    *("allreduce", "bucketed", "torch-ddp", "zero1", "zero2", "zero3"),
    *("torch-zero1", "torch-fsdp", "torch-fsdp:reshard=false"),
]


def _all_synced_grads(rank: int) -> dict[tuple[str, int], dict[str, torch.Tensor]]:
    return {(s, accum): _synced_grads(rank, s, accum) for s in SYNCHRONOUS for accum in (1, 2)}


@pytest.fixture(scope="module")
def synced() -> list[dict[tuple[str, int], dict[str, torch.Tensor]]]:
    """Every synchronous strategy, with and without accumulation, in one 2-process world."""
    return run_world(2, _all_synced_grads)


@pytest.mark.parametrize("strategy", SYNCHRONOUS)
@pytest.mark.parametrize("accum", [1, 2])
def test_gradients_are_the_global_average(synced: list[Any], strategy: str, accum: int) -> None:
    for rank, by_run in enumerate(synced):
        rel = by_run[(strategy, accum)]
        worst = max(v.item() for k, v in rel.items() if k != "_bytes")
        assert worst < 1e-5, f"{strategy} accum={accum} rank {rank}: relative error {worst:.3g}"
    n_params = sum(p.numel() for p in build_gpt("tiny", V, T).parameters())
    sent = synced[0][(strategy, accum)]["_bytes"].item()
    if sent >= 0:  # -1: torch sends the bytes itself
        assert sent >= 4 * n_params  # every gradient byte was sent once at least


class _WithUnused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used = nn.Linear(4, 4)
        self.unused = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.used(x).pow(2).mean()


def _unused_param_step(rank: int) -> list[str]:
    cfg = ParallelConfig(nproc=2, strategy="bucketed", bucket_mb=1e-4, first_bucket_mb=1e-4, timeout_s=20)
    env = init_distributed(cfg.backend, cfg.timeout_s)
    torch.manual_seed(0)
    model = _WithUnused()
    s = strategy_class("bucketed")(model, _sgd, Comm(env), cfg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with s.micro_step(last=True):
            s.module(torch.randn(2, 4)).backward()
        s.step(grad_clip=1.0)
    assert torch.all(model.unused.weight.grad == 0)
    return [str(w.message) for w in caught]


def test_bucketed_unused_parameter_warns_instead_of_hanging() -> None:
    messages = run_world(2, _unused_param_step, timeout=60)
    assert any("unused.weight" in m for m in messages[0])


def _diverged_replicas(rank: int) -> str:
    env = init_distributed()
    torch.manual_seed(rank)
    try:
        verify_replicas(nn.Linear(3, 3), Comm(env))
    except DistributedError as e:
        return str(e)
    return ""


def test_replica_check_names_the_rank_that_differs() -> None:
    msgs = run_world(2, _diverged_replicas)
    assert all("rank(s) [1]" in m for m in msgs)
