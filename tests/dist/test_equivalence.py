"""Every strategy, in a real 2-process gloo world, reaches the parameters of single-process
training with the same global batch, and torch DDP's."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from gradsync.testing import max_rel_diff, run_world, train_and_collect

STEPS = 20


def _run_all(rank: int, configs: list[dict[str, Any]]) -> list[Any]:
    return [train_and_collect(rank, c)["params"] for c in configs]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, torch.Tensor]]:
    from conftest import TINY, merge

    root = tmp_path_factory.mktemp("equiv")
    single = merge(
        TINY,
        {
            "train.max_steps": STEPS,
            "train.micro_batch": 8,
            "train.global_batch": 8,
            "train.run_dir": str(root / "single"),
        },
    )
    [ref] = run_world(1, _run_all, [single])[0]
    runs: dict[str, dict[str, Any]] = {}
    for strategy in ("allreduce", "bucketed", "torch-ddp"):
        for micro in (4, 2):  # 4: no accumulation; 2: two accumulation micro-steps
            runs[f"{strategy}/micro{micro}"] = merge(
                TINY,
                {
                    "parallel.nproc": 2,
                    "parallel.strategy": strategy,
                    "train.max_steps": STEPS,
                    "train.micro_batch": micro,
                    "train.global_batch": 8,
                    "train.run_dir": str(root / f"{strategy}-{micro}"),
                },
            )
    names = list(runs)
    params = run_world(2, _run_all, [runs[n] for n in names])[0]
    return {"single": ref, **dict(zip(names, params))}


@pytest.mark.parametrize("strategy", ["allreduce", "bucketed"])
@pytest.mark.parametrize("micro", [4, 2])
def test_matches_single_process(results: dict[str, Any], strategy: str, micro: int) -> None:
    diff = max_rel_diff(results["single"], results[f"{strategy}/micro{micro}"])
    assert diff <= 1e-5, f"{strategy} micro={micro}: {diff:.3g} of the parameter scale"


@pytest.mark.parametrize("strategy", ["allreduce", "bucketed"])
@pytest.mark.parametrize("micro", [4, 2])
def test_matches_torch_ddp(results: dict[str, Any], strategy: str, micro: int) -> None:
    diff = max_rel_diff(results[f"torch-ddp/micro{micro}"], results[f"{strategy}/micro{micro}"])
    assert diff <= 1e-6, f"{strategy} micro={micro} vs torch DDP: {diff:.3g} of the parameter scale"


def test_training_moved_the_parameters(results: dict[str, Any], tiny_config: Any) -> None:
    """Guard against a vacuous pass: 20 steps must change the parameters well beyond tolerance."""
    from gradsync.core.config import build_config
    from gradsync.model import build_gpt

    cfg = build_config(tiny_config())
    torch.manual_seed(cfg.train.seed)
    init = build_gpt("tiny", cfg.data.synthetic_vocab, cfg.data.seq_len).state_dict()
    assert max_rel_diff(results["single"], init) > 1e-2
