"""A plain torch DDP training loop, as a torchrun user writes it (the shape of nanoGPT's
``train.py``), on gradsync's job: the same model, data, batch, learning-rate schedule and AdamW
settings, built from the same config, so that only the loop differs from ``gradsync train``.

What it does, like nanoGPT: ``init_process_group``, the model wrapped in
``DistributedDataParallel`` (torch's defaults: 25 MB buckets), AdamW with weight decay on matrices
only and ``fused=True`` only on CUDA, then per step: set the learning rate, for each micro-batch
forward and backward (``no_sync`` on all but the last), clip the gradient norm, step, zero the
gradients; the loss is read on rank 0 only. A step's time runs from the end of the previous one.
Rank 0 writes the step times to ``--out``.

    torchrun --nproc_per_node 2 benchmarks/plain_ddp.py --out times.json --train.max_steps=40

Any ``--section.key=value`` sets gradsync's config, as for ``gradsync train``. Driven by
``benchmarks/vs_plain_ddp.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from gradsync.core.args import parse_dotted
from gradsync.core.config import build_config
from gradsync.data import ShardedBatches
from gradsync.optim.schedule import lr_at
from gradsync.tasks import build_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ns, extra = ap.parse_known_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    cfg = build_config(None, {**parse_dotted(extra), "parallel.nproc": world})
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    task = build_task(cfg)
    torch.manual_seed(cfg.train.seed)
    model = DDP(task.build_model())
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.optim.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    o = cfg.optim
    fused = torch.cuda.is_available()  # nanoGPT: fused AdamW on CUDA only
    opt = torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, fused=fused or None)
    t = cfg.train
    batches = ShardedBatches(task.train_examples(), t.global_batch, t.micro_batch, rank, world, t.seed)
    times, mark = [], time.perf_counter()
    for step in range(t.max_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, o, t.max_steps)
        micro = next(batches)
        for i, batch in enumerate(micro):
            model.require_backward_grad_sync = i == len(micro) - 1  # nanoGPT's no_sync
            loss = task.loss(model, batch) / len(micro)
            loss.backward()
        if o.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if rank == 0 and step % t.log_interval == 0:
            loss.item()  # nanoGPT logs rank 0's loss
        now = time.perf_counter()
        times.append(now - mark)
        mark = now
    if rank == 0:
        with open(ns.out, "w") as f:
            json.dump({"step_time_s": times}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
