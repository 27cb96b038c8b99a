"""Local SGD and DiLoCo in a real 2-process gloo world: averaging every step is synchronous data
parallelism (for plain SGD, whose update is linear in the gradient), and averaging less often
really does let the workers drift and saves the communication."""

from __future__ import annotations

from typing import Any

import pytest

from gradsync.testing import max_rel_diff, run_world, train_each

RUNS = {
    "sync": "bucketed",
    "localsgd-1": "localsgd:1",
    "diloco-1": "diloco:1,outer_lr=1.0,momentum=0",
    "localsgd-4": "localsgd:4",
    "diloco-4": "diloco:4",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    from conftest import TINY, merge

    root = tmp_path_factory.mktemp("local")
    configs = [
        merge(
            TINY,
            {
                "parallel.nproc": 2,
                "parallel.strategy": s,
                "optim.name": "sgd",
                "optim.lr": 0.5,
                "optim.grad_clip": 0.0,  # local SGD clips by each worker's own norm
                "train.micro_batch": 4,
                "train.global_batch": 8,
                "train.max_steps": 20,
                "train.run_dir": str(root / name),
            },
        )
        for name, s in RUNS.items()
    ]
    return dict(zip(RUNS, run_world(2, train_each, configs)[0]))


def _diff(runs: dict[str, Any], a: str, b: str) -> float:
    return max_rel_diff(runs[a]["params"], runs[b]["params"])


@pytest.mark.parametrize("name", ["localsgd-1", "diloco-1"])
def test_averaging_every_step_is_synchronous_sgd(runs: dict[str, Any], name: str) -> None:
    d = _diff(runs, "sync", name)
    assert d <= 1e-5, f"{name}: {d:.3g} of the parameter scale (measured 6e-7)"


@pytest.mark.parametrize("name", ["localsgd-4", "diloco-4"])
def test_averaging_every_h_steps_communicates_only_then(runs: dict[str, Any], name: str) -> None:
    assert _diff(runs, "sync", name) > 1e-3  # the workers really drift between averages
    sent = [r["comm_bytes"] for r in runs[name]["history"]]
    assert [i + 1 for i, b in enumerate(sent) if b] == [4, 8, 12, 16, 20]
