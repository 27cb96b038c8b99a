"""Shared fixtures: a tiny, fast, fully deterministic run configuration; and the tiers, marked on
every test by its folder (``multiproc``, ``docs``, ``gpu``) and by name (``slow``)."""

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


TIER_OF_FOLDER = {"dist": "multiproc", "e2e": "multiproc", "docs": "docs", "gpu": "gpu"}
# Tests that take more than about 20 s on 2 cores (the suite prints the slowest: --durations);
# a parametrized test is named without its parameters.
SLOW = {
    "tests/dist/test_convergence_resume.py",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(item.path).relative_to(Path(__file__).parent.parent)
        tier = TIER_OF_FOLDER.get(path.parts[1]) if len(path.parts) > 2 else None
        if tier is not None:
            item.add_marker(tier)
        name = f"{path.as_posix()}::{item.originalname}"
        if path.as_posix() in SLOW or name in SLOW:
            item.add_marker("slow")


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
