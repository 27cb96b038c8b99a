"""What one NVIDIA GPU can check of gradsync's CUDA paths (``pytest -m gpu``; skipped without
CUDA): every strategy trains on CUDA with NCCL at world size 1 and matches ``allreduce``; ZeRO-3
releases the CUDA storage of a unit it is not using; bf16 autocast trains. Run by
``benchmarks/gpu_check.sh``."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from gradsync.testing import max_rel_diff, run_world, train_each

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")]

STRATEGIES = ["allreduce", "bucketed", "zero1", "zero2", "zero3", "torch-ddp"]


def _configs(tmp: Any, precision: str = "fp32") -> list[dict[str, dict[str, Any]]]:
    from conftest import TINY, merge

    return [
        merge(
            TINY,
            {
                "parallel.strategy": s,
                "parallel.backend": "nccl",
                "train.precision": precision,
                "train.max_steps": 6,
                "train.run_dir": str(tmp / f"{s}-{precision}"),
            },
        )
        for s in STRATEGIES
    ]


def test_every_strategy_trains_on_cuda_with_nccl(tmp_path: Any) -> None:
    out = run_world(1, train_each, _configs(tmp_path))[0]
    for s, r in zip(STRATEGIES, out):
        assert max_rel_diff(out[0]["params"], r["params"]) < 1e-5, s


def test_bf16_autocast_trains_on_cuda(tmp_path: Any) -> None:
    out = run_world(1, train_each, _configs(tmp_path, "bf16")[:2])[0]
    for r in out:
        losses = [h["loss"] for h in r["history"]]
        assert all(x == x for x in losses) and losses[-1] < losses[0]


def test_zero3_releases_cuda_storage_between_uses() -> None:
    import os

    import torch.distributed as dist

    from gradsync.core.config import OptimConfig, ParallelConfig
    from gradsync.model.gpt import GPT, GPTShape
    from gradsync.optim.factory import optimizer_factory
    from gradsync.parallel import build_strategy
    from gradsync.runtime.dist import Comm, init_distributed
    from gradsync.testing import free_port

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        RANK="0",
        WORLD_SIZE="1",
        LOCAL_RANK="0",
        LOCAL_WORLD_SIZE="1",
    )
    env = init_distributed("nccl", 60)
    try:
        model = GPT(GPTShape(256, 32, 4, 4, 256, 0.0)).to(env.device)
        full = sum(p.numel() * 4 for p in model.parameters())
        strategy = build_strategy(model, optimizer_factory(OptimConfig()), Comm(env), ParallelConfig(strategy="zero3"))
        held = sum(f.untyped_storage().size() for f in strategy.full)  # type: ignore[attr-defined]
        assert held < full / 2, (held, full)  # every unit released: only the chunks (world 1: whole) stay
    finally:
        dist.destroy_process_group()


def _profiled(tmp: Any, backend: str) -> dict[str, Any]:
    from conftest import TINY, merge

    return merge(
        TINY,
        {
            "parallel.strategy": "bucketed",
            "parallel.backend": backend,
            "train.max_steps": 5,
            "train.profile": "3:5",
            "train.run_dir": str(tmp / f"profiled-{backend}"),
        },
    )


def test_a_profiled_cuda_step_is_timed_on_the_device(tmp_path: Any) -> None:
    """On a GPU the timeline's spans take CUDA events' times (the host's kept beside them), and
    torch's trace holds the kernels that `gradsync timeline` counts as device-busy time."""
    import json

    from gradsync.planning import timeline_view as tv

    run_world(1, train_each, [_profiled(tmp_path, "nccl")])
    run = tmp_path / "profiled-nccl"
    tl = tv.load(run)[0]
    spans = [e for e in tl["events"] if e["lane"] == "compute"]
    assert spans and all("host_start" in e["detail"] and e["end"] >= e["start"] for e in spans)
    assert tv.compute_ms(tl, 4, "backward") > 0
    trace = json.loads((run / "profile" / "rank0.trace.json").read_text())
    busy = tv.device_busy_ms(trace, tl, 4)
    assert busy is not None and 0 < busy[0] <= busy[1], busy
