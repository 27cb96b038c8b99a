"""What the classification tasks (image, speech) share: labelled examples held in memory, top-1
accuracy, and predictions on the first test examples as their sample output."""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
import torch
import torch.nn as nn

from gradsync.core.config import Config
from gradsync.data.labeled import Augment, LabeledData, LabeledExamples
from gradsync.tasks.base import ScoredByAccuracy, Task


class ClassificationTask(ScoredByAccuracy, Task):
    """One label per example; the model's ``forward(x, labels)`` is the mean cross-entropy. The
    task's config section (``[image]``, ``[speech]``: named like the task) says whether training
    applies :meth:`augment`."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self._data: LabeledData | None = None

    @abstractmethod
    def load_data(self) -> LabeledData:
        """Read (or make) the data set, split into train and test."""

    def augment(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """One training example, randomly transformed by ``rng`` (default: unchanged)."""
        return x

    @property
    def augments(self) -> bool:
        return bool(getattr(self.cfg, self.name).augment)

    @property
    def data(self) -> LabeledData:
        if self._data is None:
            self._data = self.load_data()
        return self._data

    @property
    def description(self) -> str:  # type: ignore[override]
        return self.data.description

    @property
    def n_classes(self) -> int:
        return len(self.data.classes)

    def train_examples(self) -> LabeledExamples:
        aug: Augment | None = self.augment if self.augments else None
        return LabeledExamples(self.data.train_x, self.data.train_y, self.cfg.train.seed, aug)

    def eval_examples(self) -> LabeledExamples:
        return LabeledExamples(self.data.test_x, self.data.test_y, self.cfg.train.seed)

    def predict(
        self, model: nn.Module, prompt: str, n_tokens: int, seed: int, temperature: float = 0.8, top_k: int | None = 40
    ) -> str:
        """The model's label for ``n`` test examples spread evenly over the test set (n = the
        sample length, at most 32), next to the true one."""
        total = len(self.data.test_y)
        n = min(n_tokens, 32, total)
        idx = torch.linspace(0, total - 1, n).round().long()
        device = next(model.parameters()).device
        was = model.training
        model.eval()
        with torch.no_grad():
            guess = model(self.data.test_x[idx].to(device)).argmax(-1).cpu()
        model.train(was)
        names, truth = self.data.classes, self.data.test_y[idx]
        right = int((guess == truth).sum())
        lines = [f"{n} of {total} test examples: {right} right"]
        lines += [
            f"{'ok' if int(g) == int(t) else '  '} #{int(i):4d}: true {names[int(t)]:>10}  "
            f"predicted {names[int(g)]:>10}"
            for i, g, t in zip(idx, guess, truth)
        ]
        return "\n".join(lines)
