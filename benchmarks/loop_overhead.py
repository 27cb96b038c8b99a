"""What a gradsync step costs beyond forward, backward, communication and the update: ``gradsync
train --strategy torch-ddp`` against a plain DDP training loop on the same model, data, batch and
optimizer, in the same 2-process gloo world, interleaved.

The plain loop is what a torchrun user writes: set the learning rate, for each micro-batch forward
and backward (``no_sync`` on all but the last), clip, step, zero the gradients, and one scalar
all-reduce of the loss for logging. gradsync's step is the trainer's whole loop (``Trainer.fit``):
the same work plus its records, metrics file, checks and the stop-signal agreement. Each step's
time runs from the end of the previous one in both, so everything between two steps counts.

    .venv/bin/python benchmarks/loop_overhead.py [--steps 30] [--rounds 3] [--strategy torch-ddp]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

import torch
import torch.distributed as dist


def _plain(trainer: Any, steps: int) -> list[float]:
    """A plain DDP loop over the trainer's own model copy, data and optimizer settings."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from gradsync.data import ShardedBatches
    from gradsync.optim.factory import optimizer_factory
    from gradsync.optim.schedule import lr_at

    cfg, task = trainer.cfg, trainer.task
    torch.manual_seed(cfg.train.seed)
    model = DDP(task.build_model(), bucket_cap_mb=cfg.parallel.bucket_mb)
    opt = optimizer_factory(cfg.optim)(model.module)
    t = cfg.train
    batches = ShardedBatches(
        task.train_examples(), t.global_batch, t.micro_batch, dist.get_rank(), dist.get_world_size(), t.seed
    )
    times, mark = [], time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.optim, t.max_steps)
        micro = next(batches)
        total = torch.zeros(())
        for i, batch in enumerate(micro):
            ctx = model.no_sync() if i < len(micro) - 1 else torch.enable_grad()
            with ctx:
                loss = task.loss(model, batch)
                (loss / len(micro)).backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        logged = total / len(micro)
        dist.all_reduce(logged)
        now = time.perf_counter()
        times.append(now - mark)
        mark = now
    return times


def _world(rank: int, strategy: str, steps: int, rounds: int, skip: int) -> dict[str, list[float]]:
    from gradsync.core.config import build_config
    from gradsync.training.trainer import Trainer

    out: dict[str, list[float]] = {"gradsync": [], "plain": []}
    for r in range(rounds):
        cfg = build_config(
            None,
            {
                "parallel.nproc": 2,
                "parallel.threads": 1,
                "parallel.strategy": strategy,
                "train.max_steps": steps,
                "train.eval_interval": 10 * steps,
                "train.ckpt_interval": 0,
                "train.sample_tokens": 0,
                "train.progress": False,
                "train.run_dir": tempfile.mkdtemp(prefix=f"gradsync-loop-{r}-"),
            },
        )
        trainer = Trainer(cfg)
        history = trainer.fit().history
        out["gradsync"] += [h["step_time_s"] for h in history][skip:]
        out["plain"] += _plain(trainer, steps)[skip:]
    return out


def main() -> None:
    from gradsync.testing import run_world

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip", type=int, default=3, help="first steps of each run left out")
    ap.add_argument("--strategy", default="torch-ddp")
    ns = ap.parse_args()
    res = run_world(2, _world, ns.strategy, ns.steps, ns.rounds, ns.skip, timeout=3600)[0]
    g, p = statistics.median(res["gradsync"]), statistics.median(res["plain"])
    print(f"default job, 2 workers, {ns.rounds} rounds x {ns.steps} steps (first {ns.skip} left out), median step:")
    print(f"  plain DDP loop        {1e3 * p:7.1f} ms")
    print(f"  gradsync {ns.strategy:12s} {1e3 * g:7.1f} ms   ({g / p - 1:+.2%} per step)")


if __name__ == "__main__":
    main()
