"""The benchmark's arithmetic: medians over steps and runs, ratios to the torch references and to
bucketed, scaling efficiency, and the parsing of ``--strategies``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from gradsync.commands.bench import RunStats, _median, _run_stats, entry_overrides, format_table, plot_bench
from gradsync.core import catalog
from gradsync.core.catalog import split_entries
from gradsync.core.config import Config
from gradsync.core.errors import ConfigError


def _write(path: Path, blocked: float | None) -> Path:
    recs = [
        {
            "kind": "train",
            "step": i,
            "tokens_per_sec": 100 + i,
            "step_time_s": 0.1 * i,
            "comm_blocked_s": None if blocked is None else blocked * i,
            "comm_bytes": 2e6,
            "comm_wire_bytes": 2e6,
            "comm_ratio": None,
        }
        for i in range(1, 8)
    ]
    recs.insert(
        1,
        {
            "kind": "memory",
            "step": 1,
            "params": 4 * 2**20,
            "grads": 2**20,
            "optimizer": 2**21,
            "peak": 8 * 2**20,
            "process_peak": 0,
        },
    )
    recs.append({"kind": "eval", "step": 7, "val_loss": 1.5})
    path.write_text("\n".join(json.dumps(r) for r in recs))
    return path


def test_run_is_amortized_over_its_steps_after_warmup(tmp_path: Path) -> None:
    r = _run_stats(_write(tmp_path / "a.jsonl", 0.01), warmup=2)  # steps 3..7
    tps = 5 / sum(1 / (100 + i) for i in range(3, 8))  # total tokens / total time
    assert r == RunStats(pytest.approx(tps), pytest.approx(500.0), pytest.approx(50.0), 2.0, 2.0, None, 8.0, 3.0, 1.5)
    assert _run_stats(_write(tmp_path / "b.jsonl", None), warmup=2).exposed_comm_ms is None
    with pytest.raises(ConfigError, match="--steps must exceed --warmup"):
        _run_stats(tmp_path / "a.jsonl", warmup=7)


def test_periodic_communication_is_spread_over_the_steps(tmp_path: Path) -> None:
    recs = [
        {
            "kind": "train",
            "step": i,
            "tokens_per_sec": 100.0 if i % 4 else 50.0,
            "step_time_s": 0.1,
            "comm_blocked_s": 0.0,
            "comm_bytes": 0 if i % 4 else 4e6,
        }
        for i in range(1, 9)
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    r = _run_stats(tmp_path / "m.jsonl", warmup=0)
    assert r.comm_mb_per_step == pytest.approx(1.0)  # 2 x 4 MB over 8 steps, not the median 0
    assert r.tokens_per_sec == pytest.approx(8 / (6 / 100 + 2 / 50))


def test_table_ratios_and_scaling_efficiency() -> None:
    res = {
        ("bucketed", 1): RunStats(100, 10, 0.0, 1),
        ("bucketed", 2): RunStats(180, 6, 1.0, 1),
        ("torch-ddp", 1): RunStats(100, 10, None, 1),
        ("torch-ddp", 2): RunStats(200, 5, None, 1),
        ("zero1", 2): RunStats(171, 6, 1.0, 1),
        ("torch-zero1", 2): RunStats(150, 6, None, None),
    }
    ns = argparse.Namespace(repeats=3, steps=30, warmup=5)
    table = format_table(res, ["bucketed", "torch-ddp"], [1, 2], Config(), ns)
    assert "| bucketed | 2 | 180 | 6.0 | 1.0 | n/a | n/a | n/a | n/a | n/a | 0.900 (torch-ddp) | - | 90.0% |" in table
    assert "| torch-ddp | 2 | 200 | 5.0 | n/a | n/a | n/a | n/a | n/a | n/a | - | 1.111 | 100.0% |" in table
    table = format_table(res, ["zero1"], [2], Config(), ns)
    assert "| 1.140 (torch-zero1) | 0.950 | - |" in table
    assert _median([res[("bucketed", 1)], res[("bucketed", 2)], res[("torch-ddp", 2)]]).exposed_comm_ms is None


def test_strategy_entries_keep_spec_options_together() -> None:
    assert split_entries("bucketed, diloco:8,outer_lr=0.5,momentum=0,zero2,bucketed+powersgd:rank=4,min_numel=0") == [
        "bucketed",
        "diloco:8,outer_lr=0.5,momentum=0",
        "zero2",
        "bucketed+powersgd:rank=4,min_numel=0",
    ]
    assert split_entries("all") == catalog.all_entries() and "torch-fsdp:reshard=false" in split_entries("all")
    assert entry_overrides("bucketed+topk:ratio=0.1") == {
        "parallel.strategy": "bucketed",
        "parallel.compress": "topk:ratio=0.1",
    }
    assert entry_overrides("zero3") == {"parallel.strategy": "zero3", "parallel.compress": "none"}


def test_plot_draws_every_entry_as_a_png(tmp_path: Path) -> None:
    res = {("bucketed", 2): RunStats(180, 6, 1.0, 1, val_loss=2.5), ("torch-ddp", 2): RunStats(200, 5, None, 1)}
    plot_bench(res, ["bucketed", "torch-ddp"], [2], tmp_path / "sub" / "bench.png")
    data = (tmp_path / "sub" / "bench.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
