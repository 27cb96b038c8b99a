"""Your own model and training loop under gradsync: a 30-line script.

    gradsync run --nproc 2 examples/own_loop.py --strategy zero2 --steps 40 --ckpt /tmp/own.pt

Each worker trains a small MLP on its shard of a fixed regression problem; the checkpoint lets a
second invocation continue where the first stopped (exactly: data is a function of the step).
"""

import argparse
import os

import torch
import torch.nn as nn

import gradsync

p = argparse.ArgumentParser()
p.add_argument("--strategy", default="zero2")
p.add_argument("--steps", type=int, default=40)
p.add_argument("--ckpt", default="own_loop.pt")
args = p.parse_args()

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 1))
dp = gradsync.parallelize(model, optimizer=lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2), strategy=args.strategy)
start = dp.load(args.ckpt)["step"] if os.path.exists(args.ckpt) else 0
w_true = torch.randn(16, 1, generator=torch.Generator().manual_seed(1))
for step in range(start, args.steps):
    g = torch.Generator().manual_seed(step)  # the global batch of this step, the same at any world size
    x = torch.randn(32, 16, generator=g)
    mine = x.chunk(dp.world_size)[dp.rank]  # this worker's share
    with dp.micro_step(last=True):
        loss = nn.functional.mse_loss(dp.module(mine), mine @ w_true)
        loss.backward()
    dp.step(grad_clip=1.0)
    if dp.is_main and (step + 1) % 10 == 0:
        print(f"step {step + 1}: loss {loss.item():.4f}", flush=True)
dp.save(args.ckpt, step=args.steps)
