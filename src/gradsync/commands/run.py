"""``gradsync run [launcher flags] script.py [script args]``: your own training script on N
workers, with the launcher ``gradsync train`` uses (torch elastic: c10d rendezvous, several nodes,
``--max-restarts``, collective timeouts, the store watchdog, one-line errors naming the rank).

In the script, :func:`gradsync.parallelize` (or plain ``torch.distributed``) finds the process
group already joined. After a restart, ``TORCHELASTIC_RESTART_COUNT`` > 0 tells it to resume.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradsync.core.args import ALIASES
from gradsync.core.config import ParallelConfig, build_config
from gradsync.core.errors import ConfigError
from gradsync.core.slurm import announce, slurm_settings
from gradsync.runtime.launch import run_job, write_run_config
from gradsync.runtime.script import SCRIPT_JOB

LAUNCHER_FLAGS = (
    "--nproc",
    "--nnodes",
    "--rdzv-endpoint",
    "--rdzv-id",
    "--node-rank",
    "--local-addr",
    "--backend",
    "--timeout",
    "--threads",
    "--max-restarts",
)


def add_args(p: argparse.ArgumentParser) -> None:
    for flag in LAUNCHER_FLAGS:
        key = ALIASES[flag]
        kind: dict[str, Any] = {"type": int} if flag in ("--nproc", "--nnodes", "--node-rank") else {}
        p.add_argument(flag, dest=key, metavar=key.split(".")[1].upper(), help=f"sets {key}", **kind)
    p.add_argument("script", help="the Python training script every worker runs")
    p.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments for the script")


def run(ns: argparse.Namespace, extra: Sequence[str]) -> int:
    if extra:
        raise ConfigError(f"run: unrecognized argument(s) {' '.join(extra)}; launcher flags go before the script")
    if not Path(ns.script).is_file():
        raise ConfigError(f"run: script '{ns.script}' does not exist")
    # under srun, the job step's nodes (gradsync.core.slurm); the flags win
    overrides = {**slurm_settings(), **{k: v for k, v in vars(ns).items() if "." in k and v is not None}}
    with tempfile.TemporaryDirectory(prefix="gradsync-run-") as tmp:
        # the workers read the launcher's settings from a config file, as under `gradsync train`;
        # the batch fields are not the script's business: one sequence per worker satisfies them
        default = ParallelConfig()
        world = int(overrides.get("parallel.nproc") or default.nproc) * int(
            overrides.get("parallel.nnodes") or default.nnodes
        )
        cfg = build_config(
            None, {**overrides, "train.run_dir": tmp, "train.micro_batch": 1, "train.global_batch": max(1, world)}
        )
        announce(cfg.parallel)
        run_job(cfg, write_run_config(cfg), SCRIPT_JOB, (ns.script, *ns.script_args))
    return 0
