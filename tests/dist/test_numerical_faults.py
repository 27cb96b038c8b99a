"""Numerical faults in a real 2-process world: a NaN loss on one rank makes every rank skip the
step (same decision everywhere, parameters untouched), and too many in a row stop the run with a
clear error while the last checkpoint stays intact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from gradsync.testing import run_world


def _train_with_nan(rank: int, config: dict[str, Any], nan_rank: int, nan_steps: list[int]) -> dict[str, Any]:
    """Train, with rank ``nan_rank``'s loss replaced by NaN on the (1-based) steps ``nan_steps``."""
    from gradsync.core.config import build_config
    from gradsync.runtime.dist import state_checksum
    from gradsync.training.trainer import Trainer

    trainer = Trainer(build_config(config))
    forward = trainer.model.forward
    calls = {"n": 0}

    def poisoned(*args: Any, **kwargs: Any) -> torch.Tensor:
        loss = forward(*args, **kwargs)
        if torch.is_grad_enabled():  # training forwards only (one micro-step per step here)
            calls["n"] += 1
            if rank == nan_rank and calls["n"] in nan_steps:
                return loss * float("nan")
        return loss

    trainer.model.forward = poisoned  # type: ignore[method-assign]
    result = trainer.fit()
    return {
        "history": result.history,
        "checksum": state_checksum(trainer.model),
        "finite": all(torch.isfinite(v).all() for v in trainer.strategy.full_model_state().values()),
    }


@pytest.mark.parametrize("strategy", ["bucketed", "zero2", "localsgd:2"])
def test_a_nan_on_one_rank_is_skipped_on_every_rank(tiny_config: Any, strategy: str) -> None:
    cfg = tiny_config(
        **{
            "parallel.nproc": 2,
            "parallel.strategy": strategy,
            "train.micro_batch": 4,
            "train.global_batch": 8,
            "train.max_steps": 8,
            "train.max_bad_steps": 2,
        }
    )
    out = run_world(2, _train_with_nan, cfg, 1, [3, 4])
    for r in out:
        skipped = [rec["step"] for rec in r["history"] if rec["skipped"]]
        assert skipped == [3, 4], (strategy, skipped)
        assert r["finite"]
        assert [rec["loss"] is None for rec in r["history"]][2:4] == [True, True]
    assert out[0]["checksum"] == out[1]["checksum"]  # the replicas never diverged


def test_too_many_non_finite_steps_stop_the_run_and_keep_the_checkpoint(tiny_config: Any) -> None:
    cfg = tiny_config(
        **{
            "parallel.nproc": 2,
            "train.micro_batch": 4,
            "train.global_batch": 8,
            "train.max_steps": 12,
            "train.ckpt_interval": 2,
            "train.max_bad_steps": 3,
        }
    )
    with pytest.raises(RuntimeError, match=r"4 consecutive steps had non-finite loss or gradients \(up to step 8\)"):
        run_world(2, _train_with_nan, cfg, 0, list(range(5, 13)))
    from gradsync.checkpoint import format as ckpt

    run = Path(cfg["train"]["run_dir"])
    found = ckpt.list_checkpoints(run)
    assert [p.name for p in found][-1] == "ckpt_0000006.pt"  # steps 5, 6 skipped: still a good state
    state = ckpt.load_checkpoint(found[-1])
    assert all(torch.isfinite(t).all() for t in state["strategy"]["model"].values())


def _save_poisoned(rank: int, config: dict[str, Any]) -> str:
    from gradsync.core.config import build_config
    from gradsync.training.trainer import Trainer

    trainer = Trainer(build_config(config))
    trainer.fit()
    if rank == 1:  # one rank's replica poisoned, as a huge update leaves it
        with torch.no_grad():
            next(trainer.model.parameters()).view(-1)[0] = float("inf")
    try:
        trainer.checkpointer.save(99)
    except Exception as e:  # noqa: BLE001 (the error is what this returns)
        return f"{type(e).__name__}: {e}"
    return "saved"


def test_non_finite_weights_are_never_written_as_a_checkpoint(tiny_config: Any) -> None:
    cfg = tiny_config(
        **{
            "parallel.nproc": 2,
            "parallel.strategy": "zero2",
            "train.micro_batch": 4,
            "train.global_batch": 8,
            "train.max_steps": 2,
        }
    )
    out = run_world(2, _save_poisoned, cfg)
    for r in out:  # every rank refuses together, not only the one that sees the inf
        assert r.startswith("TrainingError: the model's weights are not finite after step 99"), r
        assert "the last checkpoint" in r and "ckpt_0000002.pt, is intact" in r
    from gradsync.checkpoint import format as ckpt

    assert [p.name for p in ckpt.list_checkpoints(cfg["train"]["run_dir"])] == ["ckpt_0000002.pt"]
