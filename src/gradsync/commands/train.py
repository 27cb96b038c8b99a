"""``gradsync train``: the main job. Check the input once, then train on N workers.

The inputs are validated and resolved on one process (:func:`gradsync.planning.preflight.preflight`), the
resolved config is written into the run folder, and every worker reads it from there
(:func:`gradsync.runtime.launch.launch_workers`); a world of one trains in this process.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence

from gradsync.checkpoint import format as ckpt
from gradsync.core.args import add_config_args, config_from_args
from gradsync.core.errors import EXIT_PREEMPTED, Preempted
from gradsync.core.runlock import RunLock
from gradsync.core.slurm import announce
from gradsync.planning.preflight import preflight
from gradsync.runtime.launch import run_job, write_run_config


def add_args(p: argparse.ArgumentParser) -> None:
    add_config_args(p)


def run(ns: argparse.Namespace, extra: Sequence[str]) -> int:
    cfg = preflight(config_from_args(ns, extra))
    announce(cfg.parallel)
    # one run per folder (across nodes the folder is shared by design: each node's launcher runs)
    lock = RunLock(cfg.train.run_dir) if cfg.parallel.nnodes == 1 else contextlib.nullcontext()
    try:
        with lock:
            run_job(cfg, write_run_config(cfg))
    except Preempted as e:  # say what the stopped run left: the checkpoint written as it stopped
        found = ckpt.list_checkpoints(cfg.train.run_dir)
        where = f"the newest checkpoint is {found[-1]}" if found else "no checkpoint was written"
        raise Preempted(e.reason, f"{where}; continue with --resume (exit status {EXIT_PREEMPTED})") from None
    return 0
