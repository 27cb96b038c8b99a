"""bf16 autocast trains like fp32 (parameters, gradients and the all-reduce stay fp32)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

from gradsync.testing import run_world, train_and_collect


def _both(rank: int, a: dict[str, Any], b: dict[str, Any]) -> tuple[Any, Any]:
    return train_and_collect(rank, a)["history"], train_and_collect(rank, b)["history"]


def test_bf16_autocast_tracks_fp32(tiny_config: Callable[..., Any]) -> None:
    common = {
        "parallel.nproc": 2,
        "train.micro_batch": 8,
        "train.global_batch": 16,
        "train.max_steps": 40,
        "data.source": "stdlib",
        "data.seq_len": 32,
    }
    fp32, bf16 = run_world(2, _both, tiny_config(**common), tiny_config(**common, **{"train.precision": "bf16"}))[0]
    assert all(math.isfinite(r["loss"]) for r in bf16)
    early = max(abs(a["loss"] - b["loss"]) for a, b in zip(fp32[:5], bf16[:5]))
    assert 0 < early < 0.01, early  # autocast really changed the arithmetic, but only slightly
    late32, late16 = (statistics.mean(r["loss"] for r in h[-10:]) for h in (fp32, bf16))
    assert late32 < fp32[0]["loss"] - 1.0  # it learned
    assert abs(late32 - late16) < 0.05, (late32, late16)
