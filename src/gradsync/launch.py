"""``gradsync train``: check the inputs once, then start the workers through torch's elastic agent.

Everything that can be wrong with the input (config, data path, batch divisibility, checkpoint) is
checked here, in one process, before any worker starts, so bad input costs a second and prints one
line. Workers are started by ``torch.distributed.launcher.api.elastic_launch``, the machinery
behind ``torchrun``: c10d rendezvous, one agent per node, ``nproc`` workers per agent.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import uuid
from pathlib import Path

from gradsync import checkpoint as ckpt
from gradsync.config import Config
from gradsync.errors import ConfigError, DistributedError


def prepare(cfg: Config) -> Config:
    """Validate the run on one process and resolve what every worker must agree on: the run
    folder, the checkpoint to resume, and the peak FLOP/s used for MFU."""
    import torch

    from gradsync.data import ShardedBatches, load_tokens
    from gradsync.peak import worker_peak_flops

    t = cfg.train
    updates: dict[str, object] = {}
    run_dir = t.run_dir or (_latest_run("runs") if t.resume == "auto" else "") or \
        f"runs/{time.strftime('%Y%m%d-%H%M%S')}"
    updates["train.run_dir"] = run_dir
    existing = ckpt.list_checkpoints(run_dir)
    if existing and not t.resume:
        raise ConfigError(f"run folder '{run_dir}' already holds checkpoints; pass --resume to continue "
                          "it or choose another --run-dir")
    if cfg.parallel.nnodes == 1:
        data = load_tokens(cfg.data)
        ShardedBatches(data.train, cfg.data.seq_len, t.global_batch, t.micro_batch, 0,
                       cfg.parallel.world_size, t.seed)
    path = ckpt.resolve_resume(t.resume, run_dir)
    if path is None and t.resume == "auto":
        print(f"gradsync: no checkpoint in '{run_dir}' to resume; starting a new run", file=sys.stderr)
    if path is not None:
        ckpt.check_compatible(ckpt.load_checkpoint(path), cfg, path)
        updates["train.resume"] = str(path)
    if t.peak_tflops == 0 and not _cuda():  # measure once here, not on every worker at once
        updates["train.peak_tflops"] = worker_peak_flops(cfg, torch.device("cpu"), cfg.parallel.nproc) / 1e12
    return cfg.replace(**updates)


def _latest_run(root: str) -> str:
    """The most recently modified run folder under ``root`` that holds a checkpoint ("" if none)."""
    runs = [p for p in Path(root).glob("*") if ckpt.list_checkpoints(p)] if Path(root).is_dir() else []
    return str(max(runs, key=lambda p: p.stat().st_mtime)) if runs else ""


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def launch_workers(cfg: Config, config_path: Path) -> None:
    """Run ``python -m gradsync.worker --config config_path`` on every worker and wait."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    p = cfg.parallel
    os.environ.setdefault("OMP_NUM_THREADS", str(p.threads_per_worker(p.nproc)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.WARNING)
    standalone = p.nnodes == 1 and not p.rdzv_endpoint
    lc = LaunchConfig(
        min_nodes=p.nnodes, max_nodes=p.nnodes, nproc_per_node=p.nproc,
        run_id=str(uuid.uuid4()) if standalone else p.rdzv_id,
        rdzv_backend="c10d", rdzv_endpoint="localhost:0" if standalone else p.rdzv_endpoint,
        rdzv_configs={"join_timeout": p.timeout_s},  # a node that never comes is an error, not a hang
        max_restarts=p.max_restarts, monitor_interval=0.1, start_method="spawn",
    )
    try:
        elastic_launch(lc, sys.executable)("-u", "-m", "gradsync.worker", "--config", str(config_path))
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        code = failure.exitcode
        if code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}; its error is printed above"
        restarts = f" (after {p.max_restarts} restart(s))" if p.max_restarts else ""
        raise DistributedError(f"worker rank {rank} {how}; the other workers were stopped{restarts}") from None


def write_run_config(cfg: Config) -> Path:
    """Write the resolved config into its run folder; the workers read their config from it."""
    config_path = Path(cfg.train.run_dir) / "config.toml"
    ckpt.atomic_write_bytes(config_path, cfg.to_toml().encode())  # also creates the folder
    return config_path


def train_command(cfg: Config) -> int:
    cfg = prepare(cfg)
    config_path = write_run_config(cfg)
    if cfg.parallel.world_size == 1:
        from gradsync.worker import run

        return run(["--config", str(config_path)])
    launch_workers(cfg, config_path)
    return 0
