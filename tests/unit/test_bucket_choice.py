"""``--bucket-mb 0``: the bucket size comes from the calibrated profile through the cost model —
large when every collective pays a long latency, small when bytes dominate and overlap matters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradsync.core.config import build_config
from gradsync.core.errors import ConfigError
from gradsync.planning.plan import BUCKET_CHOICES_MB, auto_bucket_mb


def _profile(path: Path, alpha: float, beta: float) -> str:
    coll = {
        op: {"alpha_s": alpha, "beta_s_per_byte": beta, "residual": 0.0, "points": []}
        for op in ("all_reduce", "reduce_scatter", "all_gather", "broadcast")
    }
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "device": "test CPU",
                "backend": "gloo",
                "world_size": 4,
                "threads": 1,
                "peak_flops": 5e12,
                "memory_bytes": 8e10,
                "optimizer_s_per_param": 1e-10,
                "elementwise_s_per_elem": 1e-11,
                "compute": {"flops_per_token": 1e9, "tokens": 1024, "forward_s": 0.1, "backward_s": 0.2},
                "collectives": coll,
            }
        )
    )
    return str(path)


def _cfg(profile: str) -> object:
    return build_config(
        {},
        {
            "model.preset": "gpt2",
            "data.source": "synthetic",
            "data.seq_len": 128,
            "train.micro_batch": 4,
            "train.global_batch": 16,
            "parallel.nproc": 4,
            "parallel.bucket_mb": 0,
            "parallel.profile": profile,
        },
    )


def test_latency_bound_links_get_large_buckets_bandwidth_bound_ones_small(tmp_path: Path) -> None:
    slow_start, why = auto_bucket_mb(_cfg(_profile(tmp_path / "a.json", alpha=0.05, beta=1e-12)), 50257)
    assert slow_start == BUCKET_CHOICES_MB[-1] and why.startswith("100 MB (predicted step: 1 MB")
    thin, _ = auto_bucket_mb(_cfg(_profile(tmp_path / "b.json", alpha=0.0, beta=1e-9)), 50257)
    assert thin < 25.0  # GPT-2's 500 MB of gradients: small buckets start sooner in backward


def test_bucket_size_zero_is_the_only_non_positive_size() -> None:
    build_config({}, {"parallel.bucket_mb": 0})
    with pytest.raises(ConfigError, match="parallel.bucket_mb must be > 0 \\(or 0: chosen from the calibrated"):
        build_config({}, {"parallel.bucket_mb": -1})
