"""``gradsync calibrate``: measure collectives (alpha, beta), compute and optimizer speed on this
machine and process group, for the cost model; writes a JSON profile (:mod:`gradsync.planning.calibration_profile`).

Launched like ``gradsync train`` (same launcher and flags), every worker measures
(:func:`gradsync.planning.calibrate.worker_job`) and rank 0 writes the profile.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

from gradsync.core.args import add_config_args, config_from_args
from gradsync.core.errors import ConfigError
from gradsync.planning.calibrate import message_sizes
from gradsync.planning.calibration_profile import default_profile_path, describe
from gradsync.runtime.launch import run_job, write_run_config

JOB = "gradsync.planning.calibrate:worker_job"


def add_args(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument("--out", default="", help="profile path (default: profile.json in the gradsync cache)")
    p.add_argument("--max-mb", type=float, default=256.0, help="largest message, MiB (from 4 KiB up)")


def run(ns: argparse.Namespace, extra: Sequence[str]) -> int:
    """Launch the workers (as ``gradsync train`` does) and print the profile rank 0 wrote."""
    cfg = config_from_args(ns, extra)
    if ns.max_mb <= 0 or ns.max_mb > 4096:
        raise ConfigError(f"calibrate: --max-mb must be in (0, 4096], got {ns.max_mb}")
    if not message_sizes(ns.max_mb)[1:]:
        raise ConfigError("calibrate: --max-mb must allow at least two message sizes (>= 0.016)")
    out = (Path(ns.out) if ns.out else default_profile_path()).resolve()
    run_dir = Path(cfg.train.run_dir or f"runs/calibrate-{time.strftime('%Y%m%d-%H%M%S')}")
    cfg = cfg.replace(**{"train.run_dir": str(run_dir), "train.resume": "", "train.progress": False})
    run_job(cfg, write_run_config(cfg), JOB, ("--out", str(out), "--max-mb", str(ns.max_mb)))
    if not out.is_file():  # another node's rank 0 wrote it
        print(f"gradsync: calibration done; rank 0 wrote the profile on its node ({out})")
        return 0
    print(describe(json.loads(out.read_text())))
    print(f"gradsync: profile written to {out}")
    return 0
