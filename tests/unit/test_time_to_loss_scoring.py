"""How benchmarks/network_bench.py scores time to a loss: every run against the reference repeat
of its own seed, the reference timed exactly as the runs are, a miss counted as never."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("network_bench", ROOT / "benchmarks" / "network_bench.py")
assert spec is not None and spec.loader is not None
network_bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(network_bench)


def test_runs_are_scored_against_their_own_seeds_reference() -> None:
    # (step, training seconds, validation loss); seed 2's reference is already at its step-20 loss at step 10
    ref = [[(10, 1.0, 3.0), (20, 2.0, 2.0)], [(10, 1.0, 1.5), (20, 2.0, 1.5)], [(10, 1.0, 2.5), (20, 2.0, 2.2)]]
    run = [[(10, 1.5, 2.5), (20, 3.0, 2.0)], [(10, 1.5, 1.5), (20, 3.0, 1.4)], [(10, 1.5, 2.9), (20, 3.0, 2.8)]]
    rows = [
        {"link": "loopback", "entry": "bucketed", "seeds": [1, 2, 3], "curves": ref},
        {"link": "slow", "entry": "x", "ran": ["x"] * 3, "curves": run},
    ]
    table = network_bench.ttl_table(rows)
    assert rows[0]["target"] == [2.0, 1.5, 2.2]
    assert [h[1] for h in rows[0]["reached"]] == [2.0, 1.0, 2.0]
    assert rows[1]["reached"] == [(20, 3.0), (10, 1.5), None]
    assert rows[1]["ratio"] == 2.0 / 3.0  # median of 2/3, 1/1.5 and a miss (0)
    assert "0.67, 0.67, miss" in table and "seed 2: 1.5000, reached at step 10" in table
