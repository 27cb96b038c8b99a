"""Check a run's input once, before any worker starts, and resolve what every worker must agree on.

Everything that can be wrong with the input (config, data path, batch divisibility, checkpoint) is
checked here, in one process, so bad input costs a second and prints one line; the run folder, the
checkpoint to resume, ``--strategy auto`` (the cost model's choice, :func:`gradsync.plan.auto_strategy`)
and the peak FLOP/s used for MFU are resolved here and written into the config the workers read.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from gradsync import checkpoint as ckpt
from gradsync.catalog import AUTO
from gradsync.config import Config
from gradsync.data import ShardedBatches
from gradsync.errors import ConfigError
from gradsync.parallel import strategy_class
from gradsync.peak import worker_peak_flops
from gradsync.plan import auto_bucket_mb, auto_strategy
from gradsync.sharded_checkpoint import check_supported
from gradsync.tasks import Task, build_task
from gradsync.trackers import check_installed, parse_loggers


def prepare(cfg: Config) -> Config:
    """Validate the run on one process and resolve what every worker must agree on: the run
    folder, the checkpoint to resume, and the peak FLOP/s used for MFU."""
    t = cfg.train
    check_installed(parse_loggers(t.loggers))
    check_supported(cfg)  # a sharded checkpoint of a strategy that cannot write one
    blocker = strategy_class(cfg.parallel.strategy_spec.name).compile_blocker if cfg.train.compile and \
        cfg.parallel.strategy != AUTO else ""
    if blocker:
        raise ConfigError(f"--compile does not compose with --strategy {cfg.parallel.strategy}: {blocker}")
    updates: dict[str, object] = {}
    run_dir = t.run_dir or (_latest_run("runs") if t.resume == "auto" else "") or \
        f"runs/{time.strftime('%Y%m%d-%H%M%S')}"
    updates["train.run_dir"] = run_dir
    existing = ckpt.list_checkpoints(run_dir)
    if existing and not t.resume:
        raise ConfigError(f"run folder '{run_dir}' already holds checkpoints; pass --resume to continue "
                          "it or choose another --run-dir")
    task = None
    if cfg.parallel.nnodes == 1:  # the data is on this host: check it holds a global batch
        task = build_task(cfg)
        ShardedBatches(task.train_examples(), t.global_batch, t.micro_batch, 0, cfg.parallel.world_size, t.seed)
    path = ckpt.resolve_resume(t.resume, run_dir)
    if cfg.parallel.strategy == AUTO:
        cfg = cfg.replace(**{"parallel.strategy": _resolve_auto(cfg, path, task)})
    if cfg.parallel.bucket_mb == 0:
        cfg = cfg.replace(**{"parallel.bucket_mb": _resolve_bucket_mb(cfg, path, task)})
    if path is None and t.resume == "auto":
        print(f"gradsync: no checkpoint in '{run_dir}' to resume; starting a new run", file=sys.stderr)
    if path is not None:
        ckpt.check_compatible(ckpt.load_checkpoint(path), cfg, path)
        updates["train.resume"] = str(path)
    if t.peak_tflops == 0 and not _cuda():  # measure once here, not on every worker at once
        updates["train.peak_tflops"] = worker_peak_flops(cfg, torch.device("cpu"), cfg.parallel.nproc) / 1e12
    return cfg.replace(**updates)


def _resolve_auto(cfg: Config, resume: Path | None, task: Task | None) -> str:
    """``--strategy auto``: the strategy a resumed run was using, else the cost model's choice."""
    if resume is not None:
        chosen = ckpt.load_checkpoint(resume)["config"]["parallel"]["strategy"]
        print(f"gradsync: --strategy auto: continuing with {chosen}, the strategy of {resume}", file=sys.stderr)
        return chosen
    task = task or build_task(cfg)
    if task.name != "gpt":
        raise ConfigError(f"--strategy auto prices gradsync's GPT only; for task {task.name}, name a strategy")
    vocab = task.vocab_size  # type: ignore[attr-defined]
    chosen, why = auto_strategy(cfg, vocab)
    print(f"gradsync: --strategy auto chose {why}", flush=True)
    return chosen


def _resolve_bucket_mb(cfg: Config, resume: Path | None, task: Task | None) -> float:
    """``--bucket-mb 0``: the size a resumed run was using (compression residuals are kept per
    bucket), else the cost model's choice from the calibrated profile."""
    if resume is not None:
        chosen = float(ckpt.load_checkpoint(resume)["config"]["parallel"]["bucket_mb"])
        print(f"gradsync: --bucket-mb 0: continuing with {chosen:g} MB, the bucket size of {resume}", file=sys.stderr)
        return chosen
    task = task or build_task(cfg)
    if task.name != "gpt":
        raise ConfigError(f"--bucket-mb 0 prices gradsync's GPT only; for task {task.name}, give a size in MB")
    chosen, why = auto_bucket_mb(cfg, task.vocab_size)  # type: ignore[attr-defined]
    print(f"gradsync: --bucket-mb 0 chose {why}", flush=True)
    return chosen


def _latest_run(root: str) -> str:
    """The most recently modified run folder under ``root`` that holds a checkpoint ("" if none)."""
    runs = [p for p in Path(root).glob("*") if ckpt.list_checkpoints(p)] if Path(root).is_dir() else []
    return str(max(runs, key=lambda p: p.stat().st_mtime)) if runs else ""


def _cuda() -> bool:
    return torch.cuda.is_available()
