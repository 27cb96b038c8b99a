"""Validation: the task's metrics over a fixed set of held-out examples, and when to measure them."""

from __future__ import annotations

import torch
import torch.nn as nn

from gradsync.core.config import Config
from gradsync.data import eval_batches
from gradsync.runtime.dist import Comm
from gradsync.tasks import Task
from gradsync.training.precision import autocast


class Evaluator:
    """This rank's strided share of the first ``train.eval_sequences`` held-out examples, the same
    at every evaluation, so that validation metrics are comparable across steps and runs."""

    def __init__(self, cfg: Config, task: Task, comm: Comm) -> None:
        t = cfg.train
        self.interval = t.eval_interval
        self.precision = t.precision
        self.comm = comm
        self.task = task
        self.keys: list[str] | None = None
        self.batches = eval_batches(
            task.eval_examples(), t.eval_sequences, t.micro_batch, comm.env.rank, comm.world_size
        )

    def due(self, done: int, end: int) -> bool:
        """Evaluate after ``done`` steps? Every ``train.eval_interval`` steps and at the end."""
        return done % self.interval == 0 or done == end

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """The task's metrics (``val_loss`` and any others), over all ranks (collective)."""
        device = self.comm.env.device
        model.eval()
        sums: dict[str, float] = {}
        for batch in self.batches:
            batch = tuple(t.to(device) for t in batch)
            with autocast(self.precision, device):
                for k, v in self.task.eval_sums(model, batch).items():
                    sums[k] = sums.get(k, 0.0) + v
        model.train()
        if self.keys is None:  # once: a rank may hold no evaluation example, so agree on the names
            self.keys = sorted(set().union(*self.comm.all_gather_object(sorted(sums))))
        totals = self.comm.sum_scalars([sums.get(k, 0.0) for k in self.keys])
        return self.task.eval_metrics(dict(zip(self.keys, totals)))
