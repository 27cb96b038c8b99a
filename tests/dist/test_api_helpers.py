"""What Accelerate and Fabric users expect from ``parallelize``, in a real 2-process gloo world:
metrics reduced and gathered over ranks, printing once, bf16 autocast through the API, and the
optimizer a script built kept working as the script uses it (its scheduler, its state, its
``zero_grad``; a direct ``step()`` refused with the reason), and a ``torch.compile``d model."""

from __future__ import annotations

from typing import Any

import pytest

from gradsync.testing import run_world


def _model() -> Any:
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))


def _batch(step: int, rank: int) -> Any:
    import torch

    g = torch.Generator().manual_seed(10 * step + rank)
    return torch.randn(4, 8, generator=g), torch.randn(4, 2, generator=g)


def _fit(dp: Any, rank: int, steps: int = 3, zero_first: Any = None) -> list[float]:
    import torch.nn.functional as F

    losses = []
    for step in range(steps):
        x, y = _batch(step, rank)
        if zero_first is not None:
            zero_first.zero_grad()  # a DDP habit: zero before backward
        with dp.micro_step():
            loss = F.mse_loss(dp.module(x), y)
            loss.backward()
        losses.append(float(loss))
        dp.step()
    return losses


def _world(rank: int) -> dict[str, Any]:
    import contextlib
    import io

    import torch

    import gradsync
    from gradsync.core.errors import ConfigError

    out: dict[str, Any] = {}
    model = _model()
    dp = gradsync.parallelize(model, torch.optim.AdamW(model.parameters(), lr=1e-2), "bucketed", timeout_s=60)
    out["reduce"] = {op: dp.reduce(float(rank + 1), op) for op in ("mean", "sum", "max", "min")}
    out["reduce_tensor"] = dp.reduce(torch.tensor([rank, 10 * rank], dtype=torch.float32), "max")
    out["reduce_int"] = dp.reduce(torch.tensor([rank + 1]), "sum")
    out["gather"] = dp.gather({"rank": rank, "n": [rank] * (rank + 1)})
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        dp.print("hello from", rank)
    out["printed"] = text.getvalue()

    # bf16 autocast through the API: the matmuls run in bf16, what the script gets back is fp32
    for precision in ("fp32", "bf16"):
        model = _model()
        seen: list[Any] = []
        model[0].register_forward_hook(lambda m, i, o, seen=seen: seen.append(o.dtype))
        dp = gradsync.parallelize(
            model, torch.optim.AdamW(model.parameters(), lr=1e-2), "zero2", precision=precision, timeout_s=60
        )
        out[precision] = {"losses": _fit(dp, rank), "inner": seen[0], "outer": dp.module(_batch(0, rank)[0]).dtype}

    # the optimizer the script built: state it held moves in, its scheduler (built before
    # parallelize) drives the strategy's, its zero_grad works in a DDP-style loop, step() is refused
    for strategy in ("bucketed", "zero2"):
        model = _model()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        model(torch.ones(1, 8)).sum().backward()
        opt.step()  # state from "before": a resumed script
        model.zero_grad()
        held = {k: v.clone() for k, v in opt.state_dict()["state"][0].items()}
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        dp = gradsync.parallelize(model, opt, strategy, timeout_s=60)
        state = dp.state_dict()["optimizer"]["state"][0]
        out[f"{strategy}/carried"] = all(torch.equal(state[k], held[k]) for k in held)
        losses = _fit(dp, rank, 2, zero_first=opt)
        for _ in range(2):
            sched.step()
        out[f"{strategy}/lr"] = dp.optimizer.param_groups[0]["lr"]
        try:
            opt.step()
            out[f"{strategy}/step"] = "accepted"
        except ConfigError as e:
            out[f"{strategy}/step"] = str(e)
        out[f"{strategy}/losses"] = losses
    # a torch.compile'd model (aot_eager: dynamo and AOTAutograd, whose backward graph is where
    # gradsync's gradient hooks must still fire, without a C++ compiler): eager's losses
    for compiled in (False, True):
        model = _model()
        net = torch.compile(model, backend="aot_eager") if compiled else model
        dp = gradsync.parallelize(net, torch.optim.AdamW(model.parameters(), lr=1e-2), "bucketed", timeout_s=60)
        out[f"compiled={compiled}"] = {"losses": _fit(dp, rank), "keys": sorted(dp.full_model_state())}
    for strategy in ("zero2", "torch-ddp"):
        model = _model()
        try:
            gradsync.parallelize(torch.compile(model), torch.optim.AdamW(model.parameters()), strategy, timeout_s=60)
            out[f"compiled/{strategy}"] = "accepted"
        except ConfigError as e:
            out[f"compiled/{strategy}"] = str(e)

    model = _model()  # the same two steps without the zero_grad habit
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.ones(1, 8)).sum().backward()
    opt.step()
    model.zero_grad()
    out["plain/losses"] = _fit(gradsync.parallelize(model, opt, "bucketed", timeout_s=60), rank, 2)
    return out


@pytest.fixture(scope="module")
def world() -> list[dict[str, Any]]:
    return run_world(2, _world)


def test_metrics_reduce_and_gather_over_ranks_on_every_rank(world: list[dict[str, Any]]) -> None:
    for out in world:
        assert out["reduce"] == {"mean": 1.5, "sum": 3.0, "max": 2.0, "min": 1.0}
        assert out["reduce_tensor"].tolist() == [1.0, 10.0]
        assert out["reduce_int"].tolist() == [3] and str(out["reduce_int"].dtype) == "torch.int64"
        assert out["gather"] == [{"rank": 0, "n": [0]}, {"rank": 1, "n": [1, 1]}]


def test_print_speaks_once(world: list[dict[str, Any]]) -> None:
    assert world[0]["printed"] == "hello from 0\n" and world[1]["printed"] == ""


def test_bf16_runs_the_forward_in_bf16_and_returns_fp32(world: list[dict[str, Any]]) -> None:
    import torch

    out = world[0]
    assert (out["fp32"]["inner"], out["fp32"]["outer"]) == (torch.float32, torch.float32)
    assert (out["bf16"]["inner"], out["bf16"]["outer"]) == (torch.bfloat16, torch.float32)
    # bf16 keeps 8 bits of mantissa: the losses agree to a few parts in 2^8, not more
    worst = max(abs(a - b) / abs(a) for a, b in zip(out["fp32"]["losses"], out["bf16"]["losses"]))
    assert 0 < worst < 0.05


@pytest.mark.parametrize("strategy", ["bucketed", "zero2"])
def test_the_optimizer_the_script_built_keeps_working(world: list[dict[str, Any]], strategy: str) -> None:
    out = world[0]
    assert out[f"{strategy}/carried"]  # the state it held before parallelize
    assert out[f"{strategy}/lr"] == pytest.approx(1e-2 * 0.5**2)  # its scheduler drove the strategy's
    assert "call dp.step() instead of optimizer.step()" in out[f"{strategy}/step"]
    # zero_grad before backward (a DDP habit) changes nothing
    assert out[f"{strategy}/losses"] == out["plain/losses"]


def test_a_compiled_model_trains_as_the_eager_one_where_the_strategy_allows(world: list[dict[str, Any]]) -> None:
    eager, compiled = world[0]["compiled=False"], world[0]["compiled=True"]
    worst = max(abs(a - b) / abs(a) for a, b in zip(eager["losses"], compiled["losses"]))
    assert worst <= 1e-6, f"compiled: losses {worst:.3g} relative from eager"
    assert compiled["keys"] == eager["keys"]  # the module's own names: checkpoints load either way
    assert "does not compose with zero2" in world[0]["compiled/zero2"]
    assert "torch-ddp wraps the model itself" in world[0]["compiled/torch-ddp"]
