"""Shared fixtures: a tiny, fast, fully deterministic run configuration."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

TINY: dict[str, dict[str, Any]] = {
    "model": {"preset": "tiny"},
    "data": {"source": "synthetic", "seq_len": 16, "synthetic_tokens": 60_000},
    "optim": {"lr": 3e-3, "warmup_steps": 5},
    "parallel": {"nproc": 1, "bucket_mb": 0.02, "first_bucket_mb": 0.005, "timeout_s": 60},
    "train": {
        "micro_batch": 8,
        "global_batch": 8,
        "max_steps": 20,
        "eval_interval": 1000,
        "eval_sequences": 16,
        "ckpt_interval": 0,
        "sample_tokens": 0,
        "progress": False,
    },
}


def merge(base: dict[str, dict[str, Any]], over: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Copy of ``base`` with dotted ``over`` keys applied (``{"train.max_steps": 5}``)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        section, name = key.split(".")
        out.setdefault(section, {})[name] = value
    return out


@pytest.fixture
def tiny_config(tmp_path: Path) -> Callable[..., dict[str, dict[str, Any]]]:
    """Factory: ``tiny_config(**{"train.max_steps": 5})`` -> nested config dict in a fresh run dir."""
    counter = iter(range(1000))

    def make(**over: Any) -> dict[str, dict[str, Any]]:
        cfg = merge(TINY, {"train.run_dir": str(tmp_path / f"run{next(counter)}")})
        return merge(cfg, over)

    return make
