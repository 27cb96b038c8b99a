"""Your own model and training loop under gradsync, written the way a torch DDP script is.

    gradsync run --nproc 2 examples/own_loop.py --strategy zero2 --steps 40 --ckpt /tmp/own.pt

A regression MLP, a built AdamW with two parameter groups, a torch scheduler and a DataLoader:
the lines marked ``# gradsync`` are all that differ from a single-process script. Run it again
with more ``--steps`` and it continues from the checkpoint exactly where it stopped, mid-epoch
included (the data position and the scheduler are in the checkpoint).
"""

import argparse
import os

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

import gradsync

p = argparse.ArgumentParser()
p.add_argument("--strategy", default="zero2")
p.add_argument("--steps", type=int, default=40)
p.add_argument("--ckpt", default="own_loop.pt")
args = p.parse_args()

# --- own-loop example (the README shows this part) ---
g = torch.Generator().manual_seed(1)
x = torch.randn(200, 16, generator=g)
data = TensorDataset(x, x @ torch.randn(16, 1, generator=g))  # a fixed regression problem
loader = DataLoader(data, batch_size=32, shuffle=True)  # the batch you had on one process

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 1))
decay = [p for p in model.parameters() if p.dim() >= 2]
rest = [p for p in model.parameters() if p.dim() < 2]
optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=1e-2)
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=40)  # the planned run

dp = gradsync.parallelize(model, optimizer, strategy=args.strategy)  # gradsync
loader = dp.loader(loader)  # gradsync: the same 32-example batches, 32 / N on each rank
if os.path.exists(args.ckpt):
    saved = dp.load(args.ckpt)  # gradsync: model, optimizer, every rank's RNG
    loader.load_state_dict(saved["data"])
    scheduler.load_state_dict(saved["scheduler"])

while loader.step < args.steps:
    for micro in loader:  # this rank's micro-batches of one step
        for i, (xb, yb) in enumerate(micro):
            with dp.micro_step(last=i == len(micro) - 1):  # gradsync
                loss = nn.functional.mse_loss(dp.module(xb), yb) / len(micro)
                loss.backward()
        dp.step(grad_clip=1.0)  # gradsync: average, clip, optimizer.step(), zero_grad()
        scheduler.step()
        if loader.step == args.steps:
            break
    dp.print(f"step {loader.step} (epoch {loader.epoch}): loss {dp.reduce(loss.item()):.4f}")  # gradsync

dp.save(args.ckpt, data=loader.state_dict(), scheduler=scheduler.state_dict())  # gradsync
# --- end of the own-loop example ---
