"""Goodput under failures: the fraction of a job's time that trains, for restart-from-checkpoint
and for live recovery, given how often a node fails. Torch-free, for ``gradsync plan --mtbf``.

**Restart from a checkpoint** (what torch elastic, Slurm requeue and gradsync's ``--max-restarts``
do): every failure stops every worker, which restarts (``restart_s``, R), reloads the newest
checkpoint (``reload_s``, L) and redoes the work since it. With a checkpoint every ``τ`` seconds of
training that costs ``δ`` to write, and failures of the whole job as a Poisson process of mean
``M`` (a node's MTBF / nodes; failures may strike during a restart too), the expected wall time
to get one segment ``τ + δ`` done is ``M e^{(R+L)/M} (e^{(τ+δ)/M} − 1)`` (Daly 2006, eq. 13), so

    G(τ) = τ / (M e^{(R+L)/M} (e^{(τ+δ)/M} − 1)).

:func:`best_interval` maximises it numerically, from Daly's first-order interval ``√(2 δ M) − δ``
(Young 1974 without the ``− δ``), which is close when ``M`` is long.

**Live recovery** (torchft, Horovod Elastic): a failed node's replica leaves at the next step and
the others keep training; it comes back after ``restart_s`` and copies the live state from a peer
(``join_s``) instead of reading a checkpoint. Each node is then out a fraction ``(R + J) / M_node``
of the time, and each failure costs every replica the step in flight and a new quorum
(``step_s + quorum_s``). So

    G = (1 − (R + J) / M_node) · (1 − (t_step + Q) / M).

While a replica is out, the survivors take its share of each step's global batch (gradsync keeps
the batch whole; :mod:`gradsync.runtime.replicas`), so steps take longer by ``N/(N−1)`` on
compute-bound replicas: the work it would have done is what the first factor counts as lost.
Checkpoints are still written (a whole-job failure still needs one), at an interval the user
chooses; their cost is left out of this comparison.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from gradsync.core.errors import ConfigError

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, what: str) -> float:
    """``"3h"``, ``"45m"``, ``"90s"``, ``"2d"`` or plain seconds, in seconds (> 0)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([smhd]?)\s*", text.lower())
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"{what} must be a positive duration such as 3h, 45m, 90s or 2d, got '{text}'")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


@dataclass(frozen=True)
class Failures:
    """What a failure costs: times in seconds (see the module docstring for the symbols)."""

    mtbf_node_s: float  # one node's mean time between failures
    nodes: int
    checkpoint_s: float  # δ: writing one checkpoint (the part training waits for)
    restart_s: float  # R: processes back and the group re-formed
    reload_s: float  # L: reading the checkpoint back
    join_s: float  # J: a newcomer copying the live state from a peer
    step_s: float  # one training step (lost to every replica when a peer dies in it)
    quorum_s: float = 1.0  # Q: the survivors agreeing on the new membership

    def __post_init__(self) -> None:
        if self.mtbf_node_s <= 0 or self.nodes < 1:
            raise ConfigError("the MTBF must be > 0 and the number of nodes >= 1")
        if min(self.checkpoint_s, self.restart_s, self.reload_s, self.join_s, self.step_s, self.quorum_s) < 0:
            raise ConfigError("checkpoint, restart, reload, join, step and quorum times must be >= 0")

    @property
    def mtbf_job_s(self) -> float:
        """M: the job fails when any node does."""
        return self.mtbf_node_s / self.nodes


def young_daly_interval(checkpoint_s: float, mtbf_s: float) -> float:
    """Seconds of training between checkpoints: Daly's ``√(2 δ M) − δ`` (for ``δ < M/2``; else
    ``M``), at least one second."""
    if checkpoint_s >= mtbf_s / 2:
        return mtbf_s
    return max(1.0, math.sqrt(2 * checkpoint_s * mtbf_s) - checkpoint_s)


def restart_goodput(f: Failures, interval_s: float) -> float:
    """G(τ) of restart-from-checkpoint with a checkpoint every ``interval_s`` seconds of training."""
    m = f.mtbf_job_s
    x = (interval_s + f.checkpoint_s) / m
    if x > 700 or (f.restart_s + f.reload_s) / m > 700:  # e^x overflows: nothing ever finishes
        return 0.0
    return interval_s / (m * math.exp((f.restart_s + f.reload_s) / m) * math.expm1(x))


def best_interval(f: Failures) -> float:
    """The checkpoint interval that maximises :func:`restart_goodput` (G is unimodal in τ: a
    golden-section search on log τ, from 1 s to 100 M)."""
    lo, hi = 0.0, math.log(max(2.0, 100 * f.mtbf_job_s))
    g = (math.sqrt(5) - 1) / 2
    for _ in range(80):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        if restart_goodput(f, math.exp(a)) >= restart_goodput(f, math.exp(b)):
            hi = b
        else:
            lo = a
    return math.exp((lo + hi) / 2)


def live_goodput(f: Failures) -> float:
    """G of live recovery (no checkpoint read, the survivors never stop)."""
    out = (f.restart_s + f.join_s) / f.mtbf_node_s
    return max(0.0, 1 - out) * max(0.0, 1 - (f.step_s + f.quorum_s) / f.mtbf_job_s)


@dataclass(frozen=True)
class Goodput:
    interval_s: float  # restart-from-checkpoint's best checkpoint interval
    first_order_s: float  # Daly's first-order interval, for comparison
    restart: float
    live: float
    failures_per_day: float


def compare(f: Failures) -> Goodput:
    """Both modes for ``f``, restart at its best checkpoint interval."""
    tau = best_interval(f)
    daly = young_daly_interval(f.checkpoint_s, f.mtbf_job_s)
    return Goodput(tau, daly, restart_goodput(f, tau), live_goodput(f), 86400.0 / f.mtbf_job_s)


def format_goodput(f: Failures, g: Goodput) -> str:
    lines = [
        f"failures: a node every {_human(f.mtbf_node_s)} x {f.nodes} node(s) = the job every "
        f"{_human(f.mtbf_job_s)} ({g.failures_per_day:.1f} a day)",
        "",
        "| recovery | goodput | what a failure costs |",
        "|---|---|---|",
        f"| restart from checkpoint | {g.restart:.1%} | every worker: restart {_human(f.restart_s)} + reload "
        f"{_human(f.reload_s)} + the work since the last checkpoint; a checkpoint ({_human(f.checkpoint_s)}) "
        f"every {_human(g.interval_s)} of training, the best interval (Young/Daly: {_human(g.first_order_s)}) |",
        f"| live recovery | {g.live:.1%} | the failed replica: restart {_human(f.restart_s)} + copy from a peer "
        f"{_human(f.join_s)}; the others: one step ({_human(f.step_s)}) + quorum ({_human(f.quorum_s)}) |",
    ]
    return "\n".join(lines)


def _human(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s" if seconds >= 1 else f"{1e3 * seconds:.0f} ms"
