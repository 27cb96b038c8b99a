"""Check a run's input once, before any worker starts, and resolve what every worker must agree on.

Everything that can be wrong with the input (config, data path, batch divisibility, checkpoint) is
checked here, in one process, so bad input costs a second and prints one line; the run folder, the
checkpoint to resume, ``--strategy auto`` and ``--bucket-mb 0`` (the cost model's choices,
:func:`gradsync.planning.plan.auto_strategy` and :func:`gradsync.planning.plan.auto_bucket_mb`) and the peak FLOP/s
used for MFU are resolved here and written into the config the workers read.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gradsync.checkpoint import format as ckpt
from gradsync.checkpoint.dcp import check_supported
from gradsync.core.catalog import AUTO, entry_name, split_entry
from gradsync.core.config import Config
from gradsync.core.errors import ConfigError
from gradsync.data import ShardedBatches
from gradsync.parallel import strategy_class
from gradsync.planning.plan import auto_bucket_mb, auto_strategy
from gradsync.tasks import Task, build_task
from gradsync.training.peak import worker_peak_flops
from gradsync.training.trackers import check_installed, parse_loggers


def preflight(cfg: Config) -> Config:
    """Validate the run on one process and resolve what every worker must agree on: the run
    folder, the checkpoint to resume, and the peak FLOP/s used for MFU."""
    t = cfg.train
    check_installed(parse_loggers(t.loggers))
    check_supported(cfg)  # a sharded checkpoint of a strategy that cannot write one
    blocker = (
        strategy_class(cfg.parallel.strategy_spec.name).compile_blocker
        if cfg.train.compile and cfg.parallel.strategy != AUTO
        else ""
    )
    if blocker:
        raise ConfigError(f"--compile does not compose with --strategy {cfg.parallel.strategy}: {blocker}")
    updates: dict[str, object] = {}
    run_dir = (
        t.run_dir or (_latest_run("runs") if t.resume == "auto" else "") or f"runs/{time.strftime('%Y%m%d-%H%M%S')}"
    )
    updates["train.run_dir"] = run_dir
    existing = ckpt.list_checkpoints(run_dir)
    if existing and not t.resume:
        raise ConfigError(
            f"run folder '{run_dir}' already holds checkpoints; pass --resume to continue "
            "it or choose another --run-dir"
        )
    task = None
    if cfg.parallel.nnodes == 1:  # the data is on this host: check it holds a global batch
        task = build_task(cfg)
        ShardedBatches(task.train_examples(), t.global_batch, t.micro_batch, 0, cfg.parallel.world_size, t.seed)
    path = ckpt.resolve_resume(t.resume, run_dir)
    saved = ckpt.load_checkpoint(path) if path is not None else None  # read once, for all that follows
    if cfg.parallel.strategy == AUTO:
        entry = _chosen_at_launch(
            cfg,
            saved,
            path,
            task,
            LaunchChoice(
                "--strategy auto",
                "strategy",
                "strategy",
                "name a strategy",
                auto_strategy,
                read=lambda p: entry_name(p["strategy"], p["compress"]),
            ),
        )
        strategy, compress = split_entry(entry)
        cfg = cfg.replace(**{"parallel.strategy": strategy, "parallel.compress": compress})
    if cfg.parallel.bucket_mb == 0:
        cfg = cfg.replace(
            **{
                "parallel.bucket_mb": _chosen_at_launch(
                    cfg,
                    saved,
                    path,
                    task,
                    LaunchChoice(
                        "--bucket-mb 0",
                        "bucket_mb",
                        "bucket size",
                        "give a size in MB",
                        auto_bucket_mb,
                        lambda mb: f"{float(mb):g} MB",
                    ),
                )
            }
        )
    if path is None and t.resume == "auto":
        print(f"gradsync: no checkpoint in '{run_dir}' to resume; starting a new run", file=sys.stderr)
    if path is not None:
        assert saved is not None
        ckpt.check_compatible(saved, cfg, path)
        updates["train.resume"] = str(path)
    if t.peak_tflops == 0 and not _cuda():  # measure once here, not on every worker at once
        updates["train.peak_tflops"] = worker_peak_flops(cfg, torch.device("cpu"), cfg.parallel.nproc) / 1e12
    return cfg.replace(**updates)


@dataclass(frozen=True)
class LaunchChoice:
    """A setting the cost model chooses at launch from the calibrated profile: the ``flag`` that
    asks for it, its ``parallel.KEY``, what it is called, what to do where it cannot be priced, and
    the planner (:mod:`gradsync.planning.plan`) returning (value, reason)."""

    flag: str
    key: str
    what: str
    remedy: str
    choose: Callable[[Config, int], tuple[Any, str]]
    show: Callable[[Any], str] = str
    read: Callable[[dict[str, Any]], Any] | None = None  # the value from a checkpoint's parallel table


def _chosen_at_launch(
    cfg: Config, saved: dict[str, Any] | None, resume: Path | None, task: Task | None, c: LaunchChoice
) -> Any:
    """The value of ``c``: a resumed run keeps its own (its state was built with it: the strategy's
    checkpoint format, compression residuals kept per bucket); else the planner's choice, which
    prices gradsync's GPT only."""
    if saved is not None:
        table = saved["config"]["parallel"]
        chosen = c.read(table) if c.read else table[c.key]
        print(f"gradsync: {c.flag}: continuing with {c.show(chosen)}, the {c.what} of {resume}", file=sys.stderr)
        return chosen
    task = task or build_task(cfg)
    if task.name != "gpt":
        raise ConfigError(f"{c.flag} prices gradsync's GPT only; for task {task.name}, {c.remedy}")
    chosen, why = c.choose(cfg, task.vocab_size)  # type: ignore[attr-defined]
    print(f"gradsync: {c.flag} chose {why}", flush=True)
    return chosen


def _latest_run(root: str) -> str:
    """The most recently modified run folder under ``root`` that holds a checkpoint ("" if none)."""
    runs = [p for p in Path(root).glob("*") if ckpt.list_checkpoints(p)] if Path(root).is_dir() else []
    return str(max(runs, key=lambda p: p.stat().st_mtime)) if runs else ""


def _cuda() -> bool:
    return torch.cuda.is_available()
