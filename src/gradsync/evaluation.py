"""Validation: the mean loss over a fixed set of validation sequences, and when to measure it."""

from __future__ import annotations

import torch
import torch.nn as nn

from gradsync.config import Config
from gradsync.data import TokenData, eval_batches
from gradsync.dist import Comm
from gradsync.precision import autocast


class Evaluator:
    """This rank's strided share of the first ``train.eval_sequences`` validation sequences, the
    same at every evaluation, so that validation losses are comparable across steps and runs."""

    def __init__(self, cfg: Config, data: TokenData, comm: Comm) -> None:
        t = cfg.train
        self.interval = t.eval_interval
        self.precision = t.precision
        self.comm = comm
        self.batches = eval_batches(data.val, cfg.data.seq_len, t.eval_sequences, t.micro_batch,
                                    comm.env.rank, comm.world_size)

    def due(self, done: int, end: int) -> bool:
        """Evaluate after ``done`` steps? Every ``train.eval_interval`` steps and at the end."""
        return done % self.interval == 0 or done == end

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> float:
        """Mean validation loss, averaged across all ranks (collective)."""
        device = self.comm.env.device
        model.eval()
        total, count = 0.0, 0
        for x, y in self.batches:
            x, y = x.to(device), y.to(device)
            with autocast(self.precision, device):
                total += float(model(x, y)) * x.size(0)
            count += x.size(0)
        model.train()
        s, n = self.comm.sum_scalars([total, float(count)])
        return s / n
