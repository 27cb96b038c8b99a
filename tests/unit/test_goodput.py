"""Goodput under failures (``gradsync plan --mtbf``): the restart model against a simulation of
Poisson failures, its best interval against Young/Daly's, and live recovery's bookkeeping."""

from __future__ import annotations

import random

import pytest

from gradsync.core.errors import ConfigError
from gradsync.planning.goodput import (
    Failures,
    best_interval,
    compare,
    live_goodput,
    parse_duration,
    restart_goodput,
    young_daly_interval,
)


def _f(mtbf_node_s: float = 3600.0 * 24, nodes: int = 16, **kw: float) -> Failures:
    base = dict(checkpoint_s=20.0, restart_s=120.0, reload_s=30.0, join_s=15.0, step_s=2.0, quorum_s=1.0)
    return Failures(mtbf_node_s, nodes, **{**base, **kw})


def test_durations_parse_and_bad_ones_say_what_to_write() -> None:
    assert [parse_duration(t, "x") for t in ("3h", "45m", "90s", "2d", "7.5")] == [10800, 2700, 90, 172800, 7.5]
    for bad in ("soon", "0h", "-3h", "3 weeks"):
        with pytest.raises(ConfigError, match="must be a positive duration such as 3h"):
            parse_duration(bad, "--mtbf")


def _simulate(f: Failures, tau: float, segments: int, seed: int) -> float:
    """Wall time for ``segments`` checkpointed segments of τ + δ under Poisson failures (mean
    M), each failure costing R + L (during which failures may strike again); returns τ·n / time."""
    rng = random.Random(seed)
    m, seg, down = f.mtbf_job_s, tau + f.checkpoint_s, f.restart_s + f.reload_s
    wall = 0.0
    for _ in range(segments):
        while True:
            t = rng.expovariate(1 / m)
            if t >= seg:
                wall += seg
                break
            wall += t
            while True:  # restarting until a restart completes without a failure
                t = rng.expovariate(1 / m)
                if t >= down:
                    wall += down
                    break
                wall += t
    return tau * segments / wall


@pytest.mark.parametrize("mtbf_node_s", [3 * 3600.0, 3600.0 * 24])
def test_restart_goodput_matches_a_simulation_of_poisson_failures(mtbf_node_s: float) -> None:
    f = _f(mtbf_node_s)
    tau = best_interval(f)
    simulated = _simulate(f, tau, 20000, seed=1)
    # 20,000 segments: the simulation's own spread is ~1% at these failure rates
    assert restart_goodput(f, tau) == pytest.approx(simulated, rel=0.03)


def test_the_best_interval_beats_its_neighbours_and_nears_young_daly_when_failures_are_rare() -> None:
    for f in (_f(3 * 3600.0), _f(3600.0 * 24 * 30)):
        tau = best_interval(f)
        assert restart_goodput(f, tau) >= max(restart_goodput(f, 0.5 * tau), restart_goodput(f, 2 * tau))
    rare = _f(3600.0 * 24 * 365, nodes=1)
    assert best_interval(rare) == pytest.approx(young_daly_interval(rare.checkpoint_s, rare.mtbf_job_s), rel=0.02)


def test_first_order_limit_and_live_recovery() -> None:
    f = _f(3600.0 * 24 * 365, nodes=4)  # M = 91 days: the first-order expression holds
    tau, m = 3600.0, f.mtbf_job_s
    first = tau / (tau + f.checkpoint_s) * (1 - (f.restart_s + f.reload_s + (tau + f.checkpoint_s) / 2) / m)
    assert restart_goodput(f, tau) == pytest.approx(first, rel=1e-3)
    # live: each node out (R + J) / M_node of the time; every failure costs one step and a quorum
    expected = (1 - (f.restart_s + f.join_s) / f.mtbf_node_s) * (1 - (f.step_s + f.quorum_s) / m)
    assert live_goodput(f) == pytest.approx(expected)
    frequent = compare(_f(3 * 3600.0, nodes=128))  # a failure every 84 s: restarting barely progresses
    assert frequent.live > 0.9 > 0.5 > frequent.restart > 0
