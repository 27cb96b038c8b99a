"""Shared fixtures: a tiny, fast, fully deterministic run configuration; and the tiers, marked on
every test by its folder (``multiproc``, ``docs``, ``gpu``) and by name (``slow``)."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

TINY: dict[str, dict[str, Any]] = {
    "model": {"preset": "tiny"},
    "data": {"source": "synthetic", "seq_len": 16, "synthetic_tokens": 60_000},
    # torch's per-tensor AdamW, not the fused default: the equivalence tolerances (1e-5 of the
    # parameter scale after 20 steps) were set with it, and the fused kernel rounds the update in
    # another order (1.0-1.5e-5 there). test_activation_checkpointing holds fused (and auto) to it.
    "optim": {"lr": 3e-3, "warmup_steps": 5, "kernel": "default"},
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
    # whole files whose shared fixture trains several runs
    "tests/dist/test_convergence_resume.py",
    "tests/dist/test_sharded_checkpoint.py",
    "tests/dist/test_tasks.py",
    "tests/dist/test_world_change.py",
    "tests/dist/test_zero.py",
    "tests/unit/test_activation_memory.py",
    # single tests
    "tests/e2e/test_calibrate.py::test_calibrate_two_workers_predicts_a_held_out_size",
    "tests/e2e/test_cli.py::test_compile_trains_the_same_losses_and_refuses_zero",
    "tests/e2e/test_cli.py::test_train_two_workers_leaves_metrics_plot_checkpoint_and_sample",
    "tests/e2e/test_cli.py::test_zero3_trains_checkpoints_samples_and_resumes_from_the_cli",
    "tests/e2e/test_faults.py::test_a_signal_to_the_launcher_saves_at_that_step_and_resumes_bitwise",
    "tests/e2e/test_faults.py::test_a_stalled_worker_is_an_error_within_the_timeout_not_a_hang",
    "tests/e2e/test_faults.py::test_killed_worker_restarts_from_the_checkpoint_and_ends_bitwise_equal",
    "tests/e2e/test_faults.py::test_one_run_per_folder_and_a_dead_runs_lock_is_taken_over",
    "tests/e2e/test_live_recovery.py::test_a_killed_replica_rejoins_from_a_peer_while_the_others_never_stop",
    "tests/e2e/test_live_recovery.py::test_a_late_zero2_replica_copies_its_optimizer_shards_from_the_same_ranks",
    "tests/e2e/test_live_recovery.py::test_diloco_across_replicas_goes_on_without_a_dead_one_and_takes_it_back",
    "tests/e2e/test_models.py::test_export_to_transformers_gives_the_same_logits",
    "tests/e2e/test_multinode_faults.py::test_node_dies_and_comes_back_resumes_to_the_uninterrupted_result",
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


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One gradsync cache folder (GRADSYNC_CACHE) for the whole session, as a user's machine has
    one: the matmul peak and trained tokenizers are measured once, not in every test, and nothing
    is written into the home folder. Tests of the cache itself, and of what a calibration profile
    in it changes, give their runs a folder of their own."""
    before = os.environ.get("GRADSYNC_CACHE")
    os.environ["GRADSYNC_CACHE"] = str(tmp_path_factory.mktemp("gradsync-cache"))
    yield os.environ["GRADSYNC_CACHE"]
    if before is None:
        os.environ.pop("GRADSYNC_CACHE", None)
    else:
        os.environ["GRADSYNC_CACHE"] = before


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
