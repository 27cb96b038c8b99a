"""``gradsync bench``: the same model and global batch under each strategy and world size.

Every run is a real ``gradsync train`` launch (elastic agent, gloo/NCCL, one thread per worker on
CPU) for a few dozen steps. Per run we take the median over the steps after ``--warmup``; per
(strategy, workers) the median over ``--repeats`` runs, interleaved so that drift in a shared
machine's speed hits every strategy alike. Ratios are against torch DDP measured in the same
invocation, and scaling efficiency is tokens/s with W workers / (W x tokens/s with 1).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gradsync.config import STRATEGY_NAMES, Config
from gradsync.errors import ConfigError
from gradsync.metrics import read_metrics


@dataclass
class RunStats:
    tokens_per_sec: float
    step_ms: float
    exposed_comm_ms: float | None
    comm_mb_per_step: float


def _step_stats(record: dict) -> RunStats:
    blocked = record["comm_blocked_s"]
    return RunStats(record["tokens_per_sec"], 1e3 * record["step_time_s"],
                    None if blocked is None else 1e3 * blocked, record["comm_bytes"] / 1e6)


def _median(rows: list[RunStats]) -> RunStats:
    """Field-wise median; exposed communication stays unknown if any row does not know it."""
    exposed = [r.exposed_comm_ms for r in rows]
    return RunStats(
        tokens_per_sec=statistics.median(r.tokens_per_sec for r in rows),
        step_ms=statistics.median(r.step_ms for r in rows),
        exposed_comm_ms=None if None in exposed else statistics.median(exposed),  # type: ignore[type-var]
        comm_mb_per_step=statistics.median(r.comm_mb_per_step for r in rows),
    )


def _median_run(metrics_path: Path, warmup: int) -> RunStats:
    """Median over one run's logged steps after ``warmup``."""
    train = [r for r in read_metrics(metrics_path) if r["kind"] == "train"][warmup:]
    if not train:
        raise ConfigError("bench: --steps must exceed --warmup")
    return _median([_step_stats(r) for r in train])


def bench_command(cfg: Config, ns: argparse.Namespace) -> int:
    from gradsync.launch import launch_workers, prepare, write_run_config

    strategies = [s.strip() for s in ns.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGY_NAMES]
    if unknown:
        raise ConfigError(f"bench: unknown strategy {unknown[0]!r}; choose from {', '.join(STRATEGY_NAMES)}")
    try:
        worlds = [int(w) for w in ns.worlds.split(",")]
    except ValueError:
        raise ConfigError(f"bench: --worlds must be comma-separated integers, got {ns.worlds!r}") from None
    if ns.repeats < 1 or ns.warmup < 0 or any(w < 1 for w in worlds):
        raise ConfigError("bench: --repeats must be >= 1, --warmup >= 0 and every world size >= 1")
    steps = ns.warmup + ns.steps
    root = Path(tempfile.mkdtemp(prefix="gradsync-bench-"))
    base = prepare(cfg.replace(**{"train.run_dir": str(root / "check"), "train.resume": ""}))
    results: dict[tuple[str, int], list[RunStats]] = {}
    try:
        for rep in range(ns.repeats):
            for world in worlds:
                for strategy in strategies:
                    run_dir = root / f"{strategy}-w{world}-r{rep}"
                    run_cfg = base.replace(**{
                        "parallel.strategy": strategy, "parallel.nproc": world, "parallel.threads": 1,
                        "train.max_steps": steps, "train.eval_interval": steps + 1,
                        "train.ckpt_interval": 0, "train.sample_tokens": 0, "train.progress": False,
                        "train.run_dir": str(run_dir), "train.log_interval": 1})
                    config_path = write_run_config(run_cfg)
                    print(f"bench: repeat {rep + 1}/{ns.repeats}, {world} worker(s), {strategy}", flush=True)
                    launch_workers(run_cfg, config_path)
                    results.setdefault((strategy, world), []).append(
                        _median_run(run_dir / "metrics.jsonl", ns.warmup))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    table = format_table({k: _median(v) for k, v in results.items()}, strategies, worlds, cfg, ns)
    print(table)
    if ns.out:
        Path(ns.out).write_text(table + "\n", encoding="utf-8")
    return 0


def format_table(res: dict[tuple[str, int], RunStats], strategies: list[str], worlds: list[int],
                 cfg: Config, ns: argparse.Namespace) -> str:
    import torch

    head = (f"model {cfg.model.preset}, seq {cfg.data.seq_len}, global batch {cfg.train.global_batch} x "
            f"micro {cfg.train.micro_batch}, {cfg.train.precision}, one thread per worker; "
            f"median of {ns.repeats} runs x {ns.steps} steps (after {ns.warmup} warm-up); "
            f"torch {torch.__version__}, {platform.machine()}, python {platform.python_version()}")
    lines = [head, "",
             "| strategy | workers | tokens/s | step ms | exposed comm ms | comm MB/step | vs torch-ddp | scaling eff. |",
             "|---|---|---|---|---|---|---|---|"]
    for strategy in strategies:
        for world in worlds:
            r = res[(strategy, world)]
            ref = res.get(("torch-ddp", world))
            ratio = f"{r.tokens_per_sec / ref.tokens_per_sec:.3f}" if ref else "-"
            one = res.get((strategy, 1))
            eff = f"{r.tokens_per_sec / (world * one.tokens_per_sec):.1%}" if one and world > 1 else "-"
            exposed = f"{r.exposed_comm_ms:.1f}" if r.exposed_comm_ms is not None else "n/a"
            lines.append(f"| {strategy} | {world} | {r.tokens_per_sec:,.0f} | {r.step_ms:.1f} | {exposed} | "
                         f"{r.comm_mb_per_step:.2f} | {ratio} | {eff} |")
    lines.append("")
    lines.append("command: gradsync " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    return "\n".join(lines)

