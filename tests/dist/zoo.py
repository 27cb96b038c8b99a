"""The zoo: models as people write them, for the tests of ``parallelize`` under every strategy
(``test_your_model.py`` against torch DDP, ``test_zoo_strategies.py`` the other strategies and
resuming). Builders import torch inside, as the spawned workers call them."""

from __future__ import annotations

from typing import Any


def convbn() -> Any:
    import torch
    import torch.nn as nn

    class ConvBN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(1, 8, 3, padding=1),
                nn.BatchNorm2d(8),
                nn.ReLU(),
                nn.Conv2d(8, 8, 3, stride=2),
                nn.BatchNorm2d(8),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(8 * 3 * 3, 4),
            )
            self.temperature = nn.Parameter(torch.tensor(1.5))  # 0-dim

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x) / self.temperature

    torch.manual_seed(0)
    return ConvBN()


def zoo(name: str) -> Any:
    """More models as people write them: a frozen backbone with a trainable head (fine-tuning), an
    LSTM classifier, and a language model whose output layer is tied to its embedding."""
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    if name == "frozen-backbone":
        backbone = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten())
        for p in backbone.parameters():
            p.requires_grad_(False)
        return nn.Sequential(backbone, nn.Linear(8 * 6 * 6, 4))
    if name == "lstm":

        class LSTMClassifier(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lstm = nn.LSTM(8, 16, batch_first=True)
                self.head = nn.Linear(16, 4)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.head(self.lstm(x.squeeze(1))[0][:, -1])  # 8 steps of 8 features

        return LSTMClassifier()

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(16, 12)
            self.mix = nn.Linear(12, 12)
            self.out = nn.Linear(12, 16, bias=False)
            self.out.weight = self.emb.weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            ids = (x.flatten(1)[:, :4].abs() * 7).long() % 16
            return self.out(torch.tanh(self.mix(self.emb(ids)))).mean(1)[:, :4]

    return Tied()


NAMES = ["frozen-backbone", "lstm", "tied"]


def branchy() -> Any:
    """A model whose steps leave parameters unused: the head is ``left`` or ``right`` by the sign of
    the batch's mean (so on some steps one rank uses a head the other does not, on others no rank
    does), and ``aux`` is never used."""
    import torch
    import torch.nn as nn

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trunk = nn.Linear(64, 16)
            self.left = nn.Linear(16, 4)
            self.right = nn.Linear(16, 4)
            self.aux = nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.trunk(x.flatten(1)))
            return self.left(h) if x.mean() > 0 else self.right(h)

    torch.manual_seed(0)
    return Branchy()


def two_groups(model: Any) -> Any:
    import torch

    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=3e-3)


def batch(step: int, rank: int) -> Any:
    import torch

    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(6, 1, 8, 8, generator=g), torch.randint(0, 4, (6,), generator=g)


def mixed() -> Any:
    """A model whose parameters are of two dtypes (a float64 head on a float32 body)."""
    import torch
    import torch.nn as nn

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh())
            self.head = nn.Linear(16, 4).double()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x).double()).float()

    torch.manual_seed(0)
    return Mixed()


def train_steps(
    dp: Any, rank: int, first: int, last: int, data: Any = None, sched: Any = None, grad_clip: float = 0.0
) -> list[float]:
    """Steps ``first`` to ``last`` of a DDP-style loop through gradsync on ``data(step, rank)``
    (default :func:`batch`): one micro-batch, cross-entropy, ``dp.step``, the scheduler."""
    import torch.nn.functional as F

    losses = []
    for step in range(first, last):
        x, y = (data or batch)(step, rank)
        with dp.micro_step(last=True):
            loss = F.cross_entropy(dp.module(x), y)
            loss.backward()
        losses.append(float(loss))
        dp.step(grad_clip=grad_clip)
        if sched is not None:
            sched.step()
    return losses
