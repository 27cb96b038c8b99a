"""Small convolutional classifiers for images (2-D) and audio features (1-D).

Normalisation is GroupNorm (Wu & He 2018), not BatchNorm: BatchNorm's statistics are those of
each worker's micro-batch, so N workers would not compute what one worker computes over the same
global batch (and its running averages would differ per replica). GroupNorm normalises each
example on its own, so data-parallel training stays exactly equivalent to one process.

A convolution followed by a norm has no bias: the norm subtracts it again, so its true gradient is
zero and what autograd returns is rounding noise, which Adam's per-coordinate scaling would turn
into full-size random steps (different on every machine and world size).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class _Classifier(nn.Module):
    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy if ``labels`` is given, else logits (B, classes)."""
        logits = self.head(self.features(x).flatten(1))  # type: ignore[operator]
        return logits if labels is None else F.cross_entropy(logits.float(), labels)


class ConvNet2d(_Classifier):
    """conv-GN-GELU ×2, 2×2 max-pool, conv-GN-GELU, global average, linear."""

    def __init__(self, in_channels: int, n_classes: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1, bias=False),
            _norm(w),
            nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, padding=1, bias=False),
            _norm(2 * w),
            nn.GELU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=False),
            _norm(2 * w),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(2 * w, n_classes)


class ConvNet1d(_Classifier):
    """Over time, on (B, features, frames): conv-GN-GELU, two strided conv-GN-GELU, a third,
    global average, linear."""

    def __init__(self, in_channels: int, n_classes: int, width: int = 64) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv1d(in_channels, w, 5, padding=2, bias=False),
            _norm(w),
            nn.GELU(),
            nn.Conv1d(w, w, 5, stride=2, padding=2, bias=False),
            _norm(w),
            nn.GELU(),
            nn.Conv1d(w, 2 * w, 3, stride=2, padding=1, bias=False),
            _norm(2 * w),
            nn.GELU(),
            nn.Conv1d(2 * w, 2 * w, 3, padding=1, bias=False),
            _norm(2 * w),
            nn.GELU(),
            nn.AdaptiveAvgPool1d(1),
        )
        self.head = nn.Linear(2 * w, n_classes)
