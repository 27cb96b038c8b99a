"""The task seam: everything a run needs to know about its workload, and nothing more.

A :class:`Task` builds the model, gives the train and evaluation examples (which
:class:`~gradsync.data.ShardedBatches` shards deterministically), computes the loss of a batch,
the evaluation metrics, the FLOPs of a sample (for MFU) and what ``gradsync sample`` prints. The
trainer, the strategies, checkpoints, bench and calibrate use only this seam; a strategy sees an
``nn.Module`` and a loss.

Write your own by subclassing :class:`Task` and pass ``--task package.module:factory``, where
``factory(cfg)`` returns it (see docs/guide/applications.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from gradsync.core.config import Config
from gradsync.data import Batch, Examples


class Task(ABC):
    """A workload: model, examples, loss, metrics.

    Subclasses set ``name`` and ``description`` and implement :meth:`build_model`,
    :meth:`train_examples` and :meth:`eval_examples`. The default :meth:`loss` calls
    ``module(*batch)``, so a model whose ``forward(inputs..., targets)`` returns the mean loss
    needs nothing more; override :meth:`loss` otherwise."""

    name: str = "task"
    description: str = ""
    #: what ``tokens_per_sec`` counts per example: the sequence length for language models, 1
    #: (samples) for classification
    tokens_per_sample: int = 1
    #: nats per token of the best possible model, when the data knows it (synthetic data)
    entropy_rate: float | None = None

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    @classmethod
    def from_run(cls, cfg: Config, run_dir: Path) -> Task:
        """The task of a finished run, from what its folder keeps (:meth:`save_assets`); by
        default simply the task its config describes."""
        return cls(cfg)

    # -- what every task gives -------------------------------------------------------------------
    @abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model (seeded by the caller), on the CPU."""

    @abstractmethod
    def train_examples(self) -> Examples:
        """The training split."""

    @abstractmethod
    def eval_examples(self) -> Examples:
        """The held-out split that evaluation reads (its first ``train.eval_sequences`` examples)."""

    def loss(self, module: nn.Module, batch: Batch) -> torch.Tensor:
        """The mean loss of one micro-batch, through ``module`` (the strategy's, with its hooks)."""
        return module(*batch)

    def eval_sums(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        """Sums over one evaluation batch that :meth:`eval_metrics` turns into metrics after they
        are summed over ranks. Default: the loss times the batch size, and the batch size."""
        n = batch[0].size(0)
        return {"loss": float(self.loss(model, batch)) * n, "n": float(n)}

    def eval_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """Metrics from the summed :meth:`eval_sums`; ``val_loss`` is always one of them."""
        return {"val_loss": sums["loss"] / sums["n"]}

    def flops_per_sample(self, model: nn.Module) -> float:
        """Training FLOPs (forward + backward) of one example. Default: counted by
        ``torch.utils.flop_counter`` on one evaluation example (matmuls and convolutions; a
        model's formula, where known, overrides this)."""
        return measured_flops_per_sample(self, model)

    def predict(
        self, model: nn.Module, prompt: str, n_tokens: int, seed: int, temperature: float = 0.8, top_k: int | None = 40
    ) -> str:
        """What ``gradsync sample`` prints and ``sample.txt`` holds for this task ("" = nothing)."""
        return ""

    def warnings(self) -> list[str]:
        """Advice about this configuration, printed when a run starts (e.g. a learning rate the
        model is known not to train at)."""
        return []

    # -- what a run folder keeps -----------------------------------------------------------------
    def save_assets(self, run_dir: Path) -> None:  # noqa: B027 (optional: most tasks keep nothing)
        """Write what a run folder needs to use its model later (e.g. the tokenizer); rank 0 only."""

    def summary(self) -> dict[str, Any]:
        """Extra fields for ``summary.json``."""
        return {"task": self.name, "entropy_rate": self.entropy_rate}


def classification_sums(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> dict[str, float]:
    """Summed cross-entropy, number of scored targets and number of correct top-1 predictions."""
    flat, y = logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1)
    keep = y != ignore_index
    loss = F.cross_entropy(flat[keep], y[keep], reduction="sum") if keep.any() else torch.zeros(())
    correct = (flat[keep].argmax(-1) == y[keep]).sum()
    return {"loss": float(loss), "n": float(keep.sum()), "correct": float(correct)}


def accuracy_metrics(sums: dict[str, float], prefix: str = "val") -> dict[str, float]:
    n = max(sums["n"], 1.0)
    return {f"{prefix}_loss": sums["loss"] / n, f"{prefix}_accuracy": sums["correct"] / n}


class ScoredByAccuracy:
    """Evaluation of a model that maps inputs to logits over classes (a classifier, a masked LM):
    loss and top-1 accuracy over the scored targets (labels of -100 are not scored). Put it
    before :class:`Task` in the bases."""

    def eval_sums(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        x, labels = batch
        return classification_sums(model(x), labels)

    def eval_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        return accuracy_metrics(sums)


def measured_flops_per_sample(task: Task, model: nn.Module) -> float:
    """FLOPs of forward + backward on one evaluation example, counted on a copy-free pass (the
    gradients it leaves are cleared)."""
    batch = task.eval_examples().batch(
        torch.zeros(1, dtype=torch.long).numpy(), torch.zeros(1, dtype=torch.long).numpy(), False
    )
    device = next(model.parameters()).device
    batch = tuple(t.to(device) for t in batch)
    counter = FlopCounterMode(display=False)
    with counter:
        task.loss(model, batch).backward()
    for p in model.parameters():
        p.grad = None
    return float(counter.get_total_flops())
