"""``sync_batchnorm=True`` in a real 2-process gloo world: training equals one process that sees
both ranks' batches together, with plain BatchNorm. The mean of the ranks' losses equals the
single process's loss within 1e-5 relative at each of 10 AdamW steps (the statistics are the
global batch's, so each rank's normalised activations, and their gradients, are the single
process's to float rounding), and the running statistics are the single process's, on both
ranks. Without the option each rank normalises its own half, and the losses differ
by far more: the check can tell the two apart."""

from __future__ import annotations

from typing import Any

import pytest
from zoo import train_steps

from gradsync.testing import run_world

STRATEGIES = ["bucketed", "zero2", "zero3"]
STEPS = 10


def _model() -> Any:
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1, bias=False),  # BatchNorm follows: a bias would have no gradient
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Flatten(2),  # (N, 6, 64): BatchNorm1d over channels of a sequence
        nn.BatchNorm1d(6, momentum=None),  # a cumulative average, not an exponential one
        nn.Flatten(),
        nn.Linear(6 * 64, 4),
    )


def _batch(step: int, rank: int) -> Any:
    import torch

    g = torch.Generator().manual_seed(100 * step + rank)
    return 2 + 3 * torch.randn(5, 1, 8, 8, generator=g), torch.randint(0, 4, (5,), generator=g)


def _adamw(model: Any) -> Any:
    import torch

    return torch.optim.AdamW(model.parameters(), lr=1e-2)


def _train(rank: int) -> dict[str, Any]:
    import gradsync

    out: dict[str, Any] = {}
    for strategy, sync in [(s, True) for s in STRATEGIES] + [("bucketed", False)]:
        model = _model()
        dp = gradsync.parallelize(model, _adamw(model), strategy, sync_batchnorm=sync, timeout_s=60)
        losses = train_steps(dp, rank, 0, 1, _batch)
        first = {k: v.clone() for k, v in dp.full_model_state().items()}
        losses += train_steps(dp, rank, 1, STEPS, _batch)
        out[strategy if sync else "plain"] = {"losses": losses, "first": first, "state": dp.full_model_state()}
    return out


@pytest.fixture(scope="module")
def world() -> list[dict[str, Any]]:
    return run_world(2, _train)


@pytest.fixture(scope="module")
def one_process() -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    model = _model()
    opt = _adamw(model)
    losses, first = [], {}
    for step in range(STEPS):
        (x0, y0), (x1, y1) = _batch(step, 0), _batch(step, 1)
        loss = F.cross_entropy(model(torch.cat([x0, x1])), torch.cat([y0, y1]))
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first or {k: v.clone() for k, v in model.state_dict().items()}
    return {"losses": losses, "first": first, "state": model.state_dict()}


def _worst(ref: list[float], ranks: list[list[float]]) -> float:
    mean = [sum(ls) / len(ls) for ls in zip(*ranks)]
    return max(abs(a - b) / abs(a) for a, b in zip(ref, mean))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_training_equals_one_process_with_the_whole_batch(
    world: list[dict[str, Any]], one_process: dict[str, Any], strategy: str
) -> None:
    worst = _worst(one_process["losses"], [w[strategy]["losses"] for w in world])
    assert worst <= 1e-5, f"{strategy}: mean rank loss {worst:.3g} relative from one process's"
    # After one forward the running statistics differ by the rounding of a sum over 640 values in
    # another order. After ten steps they also carry the parameters' differences: AdamW moves a
    # coordinate whose gradient is near zero by about lr whichever way rounding tipped it, so the
    # bound there is looser (1e-4 of the scale; one step's rounding is ~1e-7).
    for rank in (0, 1):
        for when, tol in (("first", 1e-5), ("state", 1e-4)):
            got, ref = world[rank][strategy][when], one_process[when]
            for name in ("1.running_mean", "1.running_var", "4.running_mean", "4.running_var"):
                scale = max(1.0, ref[name].abs().max().item())
                assert (got[name] - ref[name]).abs().max().item() <= tol * scale, (rank, when, name)
        assert int(world[rank][strategy]["state"]["1.num_batches_tracked"]) == STEPS


def test_without_it_each_rank_normalises_its_own_half(world: list[dict[str, Any]], one_process: dict[str, Any]) -> None:
    assert _worst(one_process["losses"], [w["plain"]["losses"] for w in world]) > 1e-3


def test_it_is_refused_where_it_cannot_apply() -> None:
    import torch.nn as nn

    import gradsync
    from gradsync.core.errors import ConfigError

    with pytest.raises(ConfigError, match="no BatchNorm layer"):
        gradsync.parallelize(nn.Linear(2, 2), _adamw, "bucketed", sync_batchnorm=True)
    with pytest.raises(ConfigError, match="localsgd: sync_batchnorm would communicate in every forward"):
        gradsync.parallelize(_model(), _adamw, "localsgd:4", sync_batchnorm=True)
