"""A checkpoint written by 2 workers resumes on 1 or 4 (the same global batch, so accumulation
adjusts, and the same data order), for replicated and sharded strategies: the loss curve goes on
as if nothing had changed. Checkpoints hold the full model and the full-model optimizer state, so
nothing in them depends on the world size."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from gradsync.testing import max_rel_diff, run_world, train_each

STRATEGIES = ["bucketed", "zero2", "zero3"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Any]:
    from conftest import TINY, merge

    root = tmp_path_factory.mktemp("world")
    base = {
        s: merge(
            TINY,
            {
                "parallel.strategy": s,
                "parallel.nproc": 2,
                "train.micro_batch": 2,
                "train.global_batch": 8,
                "train.max_steps": 20,
            },
        )
        for s in STRATEGIES
    }
    first = []
    for s in STRATEGIES:  # 20 straight steps, and 10 steps that stop with a checkpoint
        first.append(merge(base[s], {"train.run_dir": str(root / f"{s}-straight")}))
        first.append(merge(base[s], {"train.run_dir": str(root / f"{s}-split"), "train.stop_after": 10}))
    out = run_world(2, train_each, first)[0]
    results = {(s, "straight"): out[2 * i] for i, s in enumerate(STRATEGIES)}
    for world in (1, 4):
        resumed = []
        for s in STRATEGIES:
            target = root / f"{s}-w{world}"
            shutil.copytree(root / f"{s}-split", target)
            resumed.append(
                merge(base[s], {"parallel.nproc": world, "train.resume": "auto", "train.run_dir": str(Path(target))})
            )
        for s, r in zip(STRATEGIES, run_world(world, train_each, resumed)[0]):
            results[(s, f"w{world}")] = r
    return results


@pytest.mark.parametrize("world", [1, 4])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_resume_on_another_world_size_continues_the_run(runs: dict[Any, Any], strategy: str, world: int) -> None:
    full, rest = runs[(strategy, "straight")], runs[(strategy, f"w{world}")]
    assert [r["step"] for r in rest["history"]] == list(range(11, 21))
    a = [r["loss"] for r in full["history"][10:]]
    b = [r["loss"] for r in rest["history"]]
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4, (a, b)  # measured: equal to 5 decimals
    diff = max_rel_diff(full["params"], rest["params"])
    assert diff < 1e-4, f"{strategy} on {world} worker(s): {diff:.3g} of the parameter scale"
