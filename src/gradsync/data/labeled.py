"""Labelled examples held in memory (images, audio features): ``(inputs, label)`` pairs with an
optional random transform for training, seeded by the draw number (see ``batches.py``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from gradsync.data.batches import Batch

Augment = Callable[[torch.Tensor, np.random.Generator], torch.Tensor]


class LabeledExamples:
    """``inputs`` (N, ...) float32 and ``labels`` (N,) int64; ``augment(x, rng)`` transforms one
    training example (never an evaluation one)."""

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, seed: int, augment: Augment | None = None) -> None:
        if len(inputs) != len(labels):
            raise ValueError(f"{len(inputs)} inputs but {len(labels)} labels")
        self.inputs = inputs
        self.labels = labels
        self.seed = seed
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, ids: np.ndarray, draws: np.ndarray, train: bool) -> Batch:
        idx = torch.as_tensor(np.asarray(ids, dtype=np.int64))
        x = self.inputs[idx]
        if train and self.augment is not None:
            x = torch.stack([self.augment(row, np.random.default_rng([self.seed, int(d)])) for row, d in zip(x, draws)])
        return x.contiguous(), self.labels[idx]


@dataclass
class LabeledData:
    """A classification data set, split once: train and test examples, class names."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    description: str

    def standardized(self) -> LabeledData:
        """A copy with every input scaled by the train split's mean and standard deviation per
        channel (axis 1), the same numbers for both splits."""
        dims = [d for d in range(self.train_x.dim()) if d != 1]
        mean = self.train_x.mean(dim=dims, keepdim=True)
        std = self.train_x.std(dim=dims, keepdim=True).clamp_min(1e-6)
        return replace(self, train_x=(self.train_x - mean) / std, test_x=(self.test_x - mean) / std)
