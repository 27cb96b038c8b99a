"""The benchmark's arithmetic: medians over steps and runs, ratios to torch DDP, scaling efficiency."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from gradsync.bench import RunStats, _median, _median_run, format_table
from gradsync.config import Config
from gradsync.errors import ConfigError


def _write(path: Path, blocked: float | None) -> Path:
    recs = [{"kind": "train", "step": i, "tokens_per_sec": 100 + i, "step_time_s": 0.1 * i,
             "comm_blocked_s": None if blocked is None else blocked * i, "comm_bytes": 2e6}
            for i in range(1, 8)] + [{"kind": "eval", "step": 7, "val_loss": 1.0}]
    path.write_text("\n".join(json.dumps(r) for r in recs))
    return path


def test_run_median_skips_warmup_and_keeps_unknown_comm_unknown(tmp_path: Path) -> None:
    r = _median_run(_write(tmp_path / "a.jsonl", 0.01), warmup=2)  # steps 3..7
    assert r == RunStats(105, pytest.approx(500.0), pytest.approx(50.0), 2.0)
    assert _median_run(_write(tmp_path / "b.jsonl", None), warmup=2).exposed_comm_ms is None
    with pytest.raises(ConfigError, match="--steps must exceed --warmup"):
        _median_run(tmp_path / "a.jsonl", warmup=7)


def test_table_ratios_and_scaling_efficiency() -> None:
    res = {("bucketed", 1): RunStats(100, 10, 0.0, 1), ("bucketed", 2): RunStats(180, 6, 1.0, 1),
           ("torch-ddp", 1): RunStats(100, 10, None, 1), ("torch-ddp", 2): RunStats(200, 5, None, 1)}
    ns = argparse.Namespace(repeats=3, steps=30, warmup=5)
    table = format_table(res, ["bucketed", "torch-ddp"], [1, 2], Config(), ns)
    assert "| bucketed | 2 | 180 | 6.0 | 1.0 | 1.00 | 0.900 | 90.0% |" in table
    assert "| torch-ddp | 2 | 200 | 5.0 | n/a | 1.00 | 1.000 | 100.0% |" in table
    assert _median([res[("bucketed", 1)], res[("bucketed", 2)], res[("torch-ddp", 2)]]).exposed_comm_ms is None
