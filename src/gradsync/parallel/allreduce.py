"""Textbook data parallelism: after the whole backward pass, all-reduce every gradient one by one
and divide by the world size. No overlap, one collective per tensor: the baseline the other
strategies improve on."""

from __future__ import annotations

import torch

from gradsync.parallel.base import Strategy


class AllReduceStrategy(Strategy):
    name = "allreduce"

    def finish_grad_sync(self) -> None:
        for p in self.model.parameters():
            if not p.requires_grad:
                continue
            if p.grad is None:  # unused this step: contribute zeros so every rank issues the same calls
                p.grad = torch.zeros_like(p)
            self.comm.all_reduce(p.grad)
            p.grad.div_(self.comm.world_size)
