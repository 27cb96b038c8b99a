"""``gradsync bench``: the same model and global batch under each strategy and world size.

Every run is a real ``gradsync train`` launch (elastic agent, gloo/NCCL, one thread per worker on
CPU) for a few dozen steps, with one validation at the end (the same number of tokens for every
strategy). Each run is amortized over its steps after ``--warmup`` (tokens/s = tokens / time, the
rest per-step means, so periodic costs count); per (entry, workers) we take the median over
``--repeats`` runs, interleaved so that drift in a shared machine's speed hits every strategy
alike. An entry is a strategy spec, optionally with a compressor: ``zero2``,
``localsgd:8``, ``bucketed+powersgd:rank=4``; ``all`` is every entry of the catalog
(:func:`gradsync.core.catalog.all_entries`). Each entry is compared with its torch reference measured
in the same invocation (:func:`gradsync.core.catalog.reference_of`) and with ``bucketed``; scaling
efficiency is tokens/s with W workers / (W x tokens/s with 1).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from gradsync.core import catalog
from gradsync.core.args import add_config_args, config_from_args
from gradsync.core.config import Config
from gradsync.core.errors import ConfigError
from gradsync.core.files import save_figure
from gradsync.planning.preflight import preflight
from gradsync.runtime.launch import launch_workers, write_run_config
from gradsync.training.metrics import read_metrics


def add_args(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument(
        "--strategies",
        default="allreduce,bucketed,torch-ddp",
        help="entries strategy[+compressor], comma-separated, or 'all'",
    )
    p.add_argument("--worlds", default="1,2", help="comma-separated worker counts")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=30, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=5, help="steps before the timed ones")
    p.add_argument("--out", default="", help="write the table as Markdown to this file")
    p.add_argument("--plot", default="", help="draw tokens/s of every entry, next to its torch reference, as a PNG")


@dataclass
class RunStats:
    tokens_per_sec: float
    step_ms: float
    exposed_comm_ms: float | None
    comm_mb_per_step: float | None  # payload handed to collectives
    wire_mb_per_step: float | None = None  # what the ring algorithm sends per rank
    compression: float | None = None  # uncompressed gradient payload / payload sent
    peak_mib: float | None = None  # measured peak of parameters + gradients + optimizer state
    grads_opt_mib: float | None = None  # gradients + optimizer state held per rank
    val_loss: float | None = None


def _mb(v: float | None) -> float | None:
    return None if v is None else v / 1e6


def _step_stats(record: dict[str, Any]) -> RunStats:
    blocked = record["comm_blocked_s"]
    return RunStats(
        record["tokens_per_sec"],
        1e3 * record["step_time_s"],
        None if blocked is None else 1e3 * blocked,
        _mb(record["comm_bytes"]),
        _mb(record.get("comm_wire_bytes")),
        record.get("comm_ratio"),
    )


def _median(rows: list[RunStats]) -> RunStats:
    """Field-wise median; a field stays unknown (None) if any row does not know it."""
    values: dict[str, Any] = {}
    for f in fields(RunStats):
        col = [getattr(r, f.name) for r in rows]
        values[f.name] = None if any(v is None for v in col) else statistics.median(col)
    return RunStats(**values)


def _mean(rows: list[RunStats]) -> RunStats:
    """Amortized over a run's steps: tokens/s is total tokens over total time, every other field
    the mean per step, so that a cost paid every H steps (local SGD, DiLoCo) is spread over them
    rather than hidden by a median."""
    values: dict[str, Any] = {}
    for f in fields(RunStats):
        col = [getattr(r, f.name) for r in rows]
        values[f.name] = None if any(v is None for v in col) else statistics.fmean(col)
    values["tokens_per_sec"] = len(rows) / sum(1 / r.tokens_per_sec for r in rows)  # equal tokens per step
    return RunStats(**values)


def _run_stats(metrics_path: Path, warmup: int) -> RunStats:
    """One run, amortized over its logged steps after ``warmup``, with its memory and final
    validation loss."""
    records = read_metrics(metrics_path)
    train = [r for r in records if r["kind"] == "train"][warmup:]
    if not train:
        raise ConfigError("bench: --steps must exceed --warmup")
    stats = _mean([_step_stats(r) for r in train])
    mem = [r for r in records if r["kind"] == "memory"]
    if mem:
        stats.peak_mib = mem[-1]["peak"] / 2**20
        stats.grads_opt_mib = (mem[-1]["grads"] + mem[-1]["optimizer"]) / 2**20
    evals = [r for r in records if r["kind"] == "eval"]
    stats.val_loss = evals[-1]["val_loss"] if evals else None
    return stats


def entry_overrides(entry: str) -> dict[str, str]:
    strategy, compress = catalog.split_entry(entry)
    return {"parallel.strategy": strategy, "parallel.compress": compress}


def run(ns: argparse.Namespace, extra: Sequence[str]) -> int:
    cfg = config_from_args(ns, extra)
    entries = catalog.split_entries(ns.strategies)
    try:
        worlds = [int(w) for w in ns.worlds.split(",")]
    except ValueError:
        raise ConfigError(f"bench: --worlds must be comma-separated integers, got {ns.worlds!r}") from None
    if ns.repeats < 1 or ns.warmup < 0 or any(w < 1 for w in worlds):
        raise ConfigError("bench: --repeats must be >= 1, --warmup >= 0 and every world size >= 1")
    steps = ns.warmup + ns.steps
    for entry in entries:  # every entry is a valid config before anything runs
        cfg.replace(**entry_overrides(entry))
    root = Path(tempfile.mkdtemp(prefix="gradsync-bench-"))
    base = preflight(cfg.replace(**{"train.run_dir": str(root / "check"), "train.resume": ""}))
    results: dict[tuple[str, int], list[RunStats]] = {}
    try:
        for rep in range(ns.repeats):
            for world in worlds:
                for i, entry in enumerate(entries):
                    run_dir = root / f"{i}-w{world}-r{rep}"
                    run_cfg = base.replace(
                        **{
                            **entry_overrides(entry),
                            "parallel.nproc": world,
                            "parallel.threads": 1,
                            "train.max_steps": steps,
                            "train.eval_interval": steps,
                            "train.ckpt_interval": 0,
                            "train.sample_tokens": 0,
                            "train.progress": False,
                            "train.run_dir": str(run_dir),
                            "train.log_interval": 1,
                        }
                    )
                    config_path = write_run_config(run_cfg)
                    print(f"bench: repeat {rep + 1}/{ns.repeats}, {world} worker(s), {entry}", flush=True)
                    launch_workers(run_cfg, config_path)
                    results.setdefault((entry, world), []).append(_run_stats(run_dir / "metrics.jsonl", ns.warmup))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    medians = {k: _median(v) for k, v in results.items()}
    table = format_table(medians, entries, worlds, cfg, ns)
    print(table)
    if ns.out:
        Path(ns.out).write_text(table + "\n", encoding="utf-8")
    if ns.plot:
        plot_bench(medians, entries, worlds, Path(ns.plot))
    return 0


def plot_bench(res: dict[tuple[str, int], RunStats], entries: list[str], worlds: list[int], path: Path) -> None:
    """Tokens/s of every (entry, workers) as horizontal bars, torch's references in grey, each
    bar labelled with its validation loss (a faster entry that learns less shows it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(e, w) for w in worlds for e in entries]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.2))
    ys = range(len(rows))[::-1]
    colors = ["0.6" if catalog.split_entry(e)[0].startswith("torch-") else "tab:blue" for e, _ in rows]
    tps = [res[r].tokens_per_sec for r in rows]
    ax.barh(list(ys), tps, color=colors)
    for y, r, v in zip(ys, rows, tps):
        loss = res[r].val_loss
        ax.text(v, y, f" {v:,.0f}" + (f"  (val loss {loss:.3f})" if loss is not None else ""), va="center", fontsize=7)
    ax.set_yticks(list(ys), [f"{e} ({w})" if len(worlds) > 1 else e for e, w in rows], fontsize=8)
    ax.set_xlabel("tokens/s (median of repeats); grey: torch's own")
    ax.set_xlim(0, max(tps) * 1.45)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def format_table(
    res: dict[tuple[str, int], RunStats], entries: list[str], worlds: list[int], cfg: Config, ns: argparse.Namespace
) -> str:
    lm = cfg.task.name in catalog.LANGUAGE_TASKS
    seen = (ns.warmup + ns.steps) * cfg.train.global_batch * (cfg.data.seq_len if lm else 1)
    what = (
        f"model {cfg.model.preset}, seq {cfg.data.seq_len}" if lm else f"task {cfg.task.name} (tokens/s counts samples)"
    )
    tokens = f"{seen:,} {'tokens' if lm else 'samples'}"
    head = (
        f"{what}, global batch {cfg.train.global_batch} x "
        f"micro {cfg.train.micro_batch}, {cfg.train.precision}, one thread per worker; "
        f"median of {ns.repeats} runs x {ns.steps} steps (after {ns.warmup} warm-up); "
        f"val loss after {tokens}; torch {torch.__version__}, {platform.machine()}, "
        f"python {platform.python_version()}"
    )
    lines = [
        head,
        "",
        "| strategy | workers | tokens/s | step ms | exposed comm ms | wire MB/step | compression | "
        "peak state MiB | grads+opt MiB | val loss | vs reference | vs bucketed | scaling eff. |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in entries:
        for world in worlds:
            r = res[(entry, world)]
            ref_name = catalog.reference_of(entry)
            ref = res.get((ref_name, world)) if ref_name else None
            vs_ref = f"{r.tokens_per_sec / ref.tokens_per_sec:.3f} ({ref_name})" if ref else "-"
            buck = res.get(("bucketed", world))
            vs_b = f"{r.tokens_per_sec / buck.tokens_per_sec:.3f}" if buck and entry != "bucketed" else "-"
            one = res.get((entry, 1))
            eff = f"{r.tokens_per_sec / (world * one.tokens_per_sec):.1%}" if one and world > 1 else "-"
            lines.append(
                f"| {entry} | {world} | {r.tokens_per_sec:,.0f} | {r.step_ms:.1f} | {_fmt(r.exposed_comm_ms, '.1f')} | "
                f"{_fmt(r.wire_mb_per_step, '.3f')} | {_fmt(r.compression, '.1f')} | {_fmt(r.peak_mib, '.2f')} | "
                f"{_fmt(r.grads_opt_mib, '.2f')} | {_fmt(r.val_loss, '.4f')} | {vs_ref} | {vs_b} | {eff} |"
            )
    lines.append("")
    lines.append("command: gradsync " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    return "\n".join(lines)
