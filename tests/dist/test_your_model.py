"""Models as people write them, under gradsync's strategies, against torch DDP in a real 2-process
gloo world: a ConvNet with BatchNorm and a 0-dim parameter (a learnable temperature), trained
with an AdamW built over ``model.parameters()`` in two parameter groups (weight decay on matrices
only) and a torch ``LambdaLR`` warm-up, through :func:`gradsync.parallelize` as a DDP user would
switch to it. The exact strategies give torch DDP's per-step losses within 1e-5 relative over 10
steps (the same mean gradient to rounding; AdamW then moves each coordinate by about lr whatever
rounding did, which the loss feels far less than single weights), and rank 0's BatchNorm running
statistics end where DDP's do (gradsync broadcasts rank 0's buffers before each forward, as DDP's
``broadcast_buffers=True``)."""

from __future__ import annotations

from typing import Any

import pytest
from zoo import NAMES as ZOO
from zoo import batch as _batch
from zoo import branchy as _branchy
from zoo import convbn as _model
from zoo import mixed as _mixed
from zoo import train_steps
from zoo import two_groups as _optimizer
from zoo import zoo as _zoo

from gradsync.testing import run_world

STRATEGIES = ["allreduce", "bucketed", "zero1", "zero2", "zero3"]
STEPS = 10


def _train(rank: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel

    import gradsync
    from gradsync.core.errors import ConfigError
    from gradsync.runtime.dist import init_distributed

    init_distributed("gloo", 60)  # parallelize joins the same group
    out: dict[str, Any] = {}
    model = _model()
    opt = _optimizer(model)
    ddp = DistributedDataParallel(model)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 4))
    losses = []
    for step in range(STEPS):
        x, y = _batch(step, rank)
        loss = F.cross_entropy(ddp(x), y)
        losses.append(float(loss))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    out["torch-ddp"] = {"losses": losses, "state": {k: v.clone() for k, v in model.state_dict().items()}}
    for strategy in STRATEGIES:
        model = _model()
        dp = gradsync.parallelize(model, _optimizer(model), strategy=strategy, timeout_s=60)
        sched = torch.optim.lr_scheduler.LambdaLR(dp.optimizer, lambda s: min(1.0, (s + 1) / 4))
        out[strategy] = {**_fit(dp, rank, sched), "lr": dp.optimizer.param_groups[0]["lr"]}
    for name in ZOO:
        for strategy in ["torch-ddp", *STRATEGIES]:
            model = _zoo(name)
            trainable = [p for p in model.parameters() if p.requires_grad]
            dp = gradsync.parallelize(model, torch.optim.AdamW(trainable, lr=3e-3), strategy=strategy, timeout_s=60)
            out[f"{name}/{strategy}"] = _fit(dp, rank)
    for strategy in ["torch-ddp", *STRATEGIES]:
        model = _branchy()
        dp = gradsync.parallelize(
            model, torch.optim.AdamW(model.parameters(), lr=3e-3), strategy, find_unused_parameters=True, timeout_s=60
        )
        out[f"branchy/{strategy}"] = {**_fit(dp, rank), "optimizer": dp.state_dict()["optimizer"]}
    for strategy in ["torch-ddp", *STRATEGIES]:
        model = _mixed()
        try:
            dp = gradsync.parallelize(model, torch.optim.AdamW(model.parameters(), lr=3e-3), strategy, timeout_s=60)
            out[f"mixed/{strategy}"] = _fit(dp, rank)
        except ConfigError as e:
            out[f"mixed/{strategy}"] = str(e)
    model = _branchy()  # without the option: unused parameters count as zero gradients
    dp = gradsync.parallelize(model, torch.optim.AdamW(model.parameters(), lr=3e-3), "bucketed", timeout_s=60)
    out["branchy/zeros"] = _fit(dp, rank)
    return out


def _fit(dp: Any, rank: int, sched: Any = None) -> dict[str, Any]:
    """STEPS steps of a DDP-style loop through gradsync: the losses and the final model state."""
    return {"losses": train_steps(dp, rank, 0, STEPS, sched=sched), "state": dp.full_model_state()}


@pytest.fixture(scope="module")
def world() -> list[dict[str, Any]]:
    return run_world(2, _train)


@pytest.fixture(scope="module")
def runs(world: list[dict[str, Any]]) -> dict[str, Any]:
    return world[0]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_losses_match_torch_ddp_step_by_step(runs: dict[str, Any], strategy: str) -> None:
    ref, got = runs["torch-ddp"]["losses"], runs[strategy]["losses"]
    worst = max(abs(a - b) / abs(a) for a, b in zip(ref, got))
    assert worst <= 1e-5, f"{strategy}: per-step losses {worst:.3g} relative from torch DDP's"
    assert runs[strategy]["lr"] == pytest.approx(3e-3)  # the scheduler drove the strategy's optimizer


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_batchnorm_statistics_and_the_0dim_parameter_end_where_ddp_does(
    world: list[dict[str, Any]], strategy: str
) -> None:
    # rank 1's statistics show the broadcast: rank 0's before each forward, then its own last batch
    for rank, runs in enumerate(world):
        ref, got = runs["torch-ddp"]["state"], runs[strategy]["state"]
        assert set(ref) == set(got)
        for name in ("body.1.running_mean", "body.1.running_var", "body.4.running_var", "temperature"):
            scale = max(1.0, ref[name].abs().max().item())
            assert (ref[name] - got[name]).abs().max().item() <= 1e-4 * scale, (rank, name)
        assert int(got["body.1.num_batches_tracked"]) == int(ref["body.1.num_batches_tracked"]) == STEPS


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", ZOO)
def test_frozen_recurrent_and_tied_models_train_as_under_torch_ddp(
    runs: dict[str, Any], name: str, strategy: str
) -> None:
    ref, got = runs[f"{name}/torch-ddp"], runs[f"{name}/{strategy}"]
    worst = max(abs(a - b) / abs(a) for a, b in zip(ref["losses"], got["losses"]))
    assert worst <= 1e-5, f"{name} under {strategy}: per-step losses {worst:.3g} relative from torch DDP's"
    if name == "frozen-backbone":  # frozen weights are never updated (nor is anything else about them)
        first = _zoo(name).state_dict()
        for k in ("0.0.weight", "0.0.bias"):
            assert got["state"][k].equal(first[k]), k


def test_the_branches_leave_parameters_unused_on_some_ranks_and_on_all() -> None:
    left = [[bool(_batch(step, rank)[0].mean() > 0) for rank in (0, 1)] for step in range(STEPS)]
    assert any(a != b for a, b in left), "no step where one rank used a head the other did not"
    assert any(a == b for a, b in left), "no step where a head was unused on every rank"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_unused_parameters_are_left_alone_as_under_torch_ddp(runs: dict[str, Any], strategy: str) -> None:
    """find_unused_parameters=True: the mean where some rank used a parameter, no gradient (no
    AdamW step, no weight decay) where none did, as torch DDP's option of that name."""
    ref, got = runs["branchy/torch-ddp"], runs[f"branchy/{strategy}"]
    worst = max(abs(a - b) / abs(a) for a, b in zip(ref["losses"], got["losses"]))
    assert worst <= 1e-5, f"branchy under {strategy}: per-step losses {worst:.3g} relative from torch DDP's"
    steps = {i: float(st["step"]) for i, st in ref["optimizer"]["state"].items()}
    assert steps == {i: float(st["step"]) for i, st in got["optimizer"]["state"].items()}
    assert 0 < min(steps.values()) < STEPS  # the heads were stepped only when some rank used them
    first = _branchy().state_dict()
    for k in ("aux.weight", "aux.bias"):
        assert got["state"][k].equal(first[k]), k


def test_without_the_option_unused_parameters_count_as_zero_gradients(runs: dict[str, Any]) -> None:
    # AdamW's weight decay moves a parameter whose gradient is zero: the difference the option makes
    first = _branchy().state_dict()
    assert not runs["branchy/zeros"]["state"]["aux.weight"].equal(first["aux.weight"])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_parameters_of_two_dtypes_train_as_under_torch_ddp(runs: dict[str, Any], strategy: str) -> None:
    """A float64 head on a float32 body: buckets and ZeRO-2's units never mix dtypes; ZeRO-3,
    which flattens a layer into one buffer, says so in one line."""
    got = runs[f"mixed/{strategy}"]
    if strategy == "zero3":
        assert "zero3 shards each layer as one flat buffer, and one holds float32 and float64" in got
        return
    ref = runs["mixed/torch-ddp"]
    worst = max(abs(a - b) / abs(a) for a, b in zip(ref["losses"], got["losses"]))
    assert worst <= 1e-5, f"mixed dtypes under {strategy}: per-step losses {worst:.3g} relative from torch DDP's"
    assert got["state"]["head.weight"].dtype == ref["state"]["head.weight"].dtype
