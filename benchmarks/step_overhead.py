"""Per-step cost of each strategy in a world of one process (no network): what a strategy adds to
or saves on the compute path. Strategies run interleaved, step by step, on the same data.

    .venv/bin/python benchmarks/step_overhead.py [--steps 12] [--micro-batch 16] [--global-batch 32]
        [--strategies allreduce,bucketed,torch-ddp,zero1,zero2,zero3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from gradsync.core.config import build_config
from gradsync.tasks import build_task
from gradsync.training.trainer import Trainer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--skip", type=int, default=2, help="first steps left out of the median")
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--global-batch", type=int, default=32)
    ap.add_argument("--strategies", default="allreduce,bucketed,torch-ddp,zero1,zero2,zero3")
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = build_config(
        None,
        {
            "parallel.nproc": 1,
            "parallel.threads": 1,
            "train.progress": False,
            "train.run_dir": tempfile.mkdtemp(prefix="gradsync-overhead-"),
            "train.micro_batch": args.micro_batch,
            "train.global_batch": args.global_batch,
        },
    )
    task = build_task(base)  # one corpus, read once; each trainer builds its own model from it
    trainers = {s: Trainer(base.replace(**{"parallel.strategy": s}), task=task) for s in args.strategies.split(",")}
    times: dict[str, list[float]] = {s: [] for s in trainers}
    for step in range(args.steps):
        for name, trainer in trainers.items():
            t0 = time.perf_counter()
            trainer.train_step(step)
            times[name].append(time.perf_counter() - t0)
    ref = statistics.median(times["torch-ddp"][args.skip :])
    for name, t in times.items():
        med = statistics.median(t[args.skip :])
        print(f"{name:10s} {1e3 * med:7.1f} ms/step  ({med / ref:.3f} x torch-ddp)")


if __name__ == "__main__":
    main()
