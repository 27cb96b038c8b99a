"""What the cost model chooses at launch from the calibrated profile. ``--bucket-mb 0``: large
buckets when every collective pays a long latency, small when bytes dominate and overlap matters.
``--strategy auto``: an exact strategy unless the link is slow and ``--auto-allows`` lets it trade
exactness for hiding the communication, and then the least approximate entry that does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradsync.core import catalog
from gradsync.core.config import Config, build_config
from gradsync.core.errors import ConfigError
from gradsync.planning.plan import BUCKET_CHOICES_MB, auto_bucket_mb, auto_strategy


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


def _cfg(profile: str, **more: object) -> Config:
    return build_config(
        {},
        {
            **more,
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
    assert slow_start == BUCKET_CHOICES_MB[-1] and why.startswith("100 MB (predicted step: 0.25 MB")
    thin, _ = auto_bucket_mb(_cfg(_profile(tmp_path / "b.json", alpha=0.0, beta=1e-9)), 50257)
    assert thin < 25.0  # GPT-2's 500 MB of gradients: small buckets start sooner in backward


def test_bucket_size_zero_is_the_only_non_positive_size() -> None:
    build_config({}, {"parallel.bucket_mb": 0})
    with pytest.raises(ConfigError, match="parallel.bucket_mb must be > 0 \\(or 0: chosen from the calibrated"):
        build_config({}, {"parallel.bucket_mb": -1})


def _auto(tmp_path: Path, beta: float, allows: str) -> tuple[str, str]:
    profile = _profile(tmp_path / f"{beta}.json", alpha=1e-4, beta=beta)
    return auto_strategy(_cfg(profile, **{"parallel.strategy": "auto", "parallel.auto_allows": allows}), 50257)


def test_auto_stays_exact_on_a_fast_link_whatever_it_may_choose(tmp_path: Path) -> None:
    for allows in catalog.AUTO_ALLOWS:  # 100 GB/s: GPT-2's gradients hide behind backward
        entry, why = _auto(tmp_path, 1e-11, allows)
        assert entry in catalog.exact_strategies(), (allows, why)


def test_auto_on_a_slow_link_takes_the_least_approximation_that_hides_communication(tmp_path: Path) -> None:
    slow = 2e-9  # 500 MB/s: exact strategies take ~1.5 s a step against ~0.13 s of compute
    assert _auto(tmp_path, slow, "exact")[0] in catalog.exact_strategies()
    entry, why = _auto(tmp_path, slow, "rounded")
    assert entry == "bucketed+fp16", why  # half the bytes: faster than any exact strategy
    entry, why = _auto(tmp_path, slow, "approximate")
    ladder = [e for rung in catalog.auto_ladder("approximate") for e in rung]
    assert entry.startswith("diloco:") and "fragments" in entry, why
    # the least stale DiLoCo that hides the link (H=4), not the fastest (H=32)
    assert ladder.index(entry) < ladder.index(ladder[-1]), why
    assert "weighed: " in why and "fastest diloco:32" in why


def test_auto_allows_is_checked() -> None:
    with pytest.raises(ConfigError, match="parallel.auto_allows 'some' is unknown; choose one of exact, rounded"):
        build_config({}, {"parallel.auto_allows": "some"})
