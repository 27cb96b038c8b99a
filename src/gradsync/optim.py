"""The optimizer and its schedule, as every strategy builds it.

AdamW (or SGD with momentum, for the local-SGD equivalences) with weight decay on matrices only,
and the learning rate: linear warmup, then cosine decay to ``lr * min_lr_ratio``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn

from gradsync.config import OptimConfig

OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]


def lr_at(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay to ``lr * min_lr_ratio`` at the end."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * progress))


def optimizer_factory(cfg: OptimConfig) -> OptimizerFactory:
    """AdamW (or SGD) with weight decay on matrices only (not biases, LayerNorm gains or 1-D
    tensors), with torch's ``foreach`` (one call per group of tensors) or ``fused`` (one kernel)
    implementation when ``optim.kernel`` asks: the same update, fewer kernel launches. Strategies
    call the factory; sharded ones rebuild it over their shard's pieces (the flags travel in the
    param groups)."""

    def make(model: nn.Module) -> torch.optim.Optimizer:
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        kernel = {"foreach": {"foreach": True}, "fused": {"fused": True}}.get(cfg.kernel, {})
        if cfg.name == "sgd":
            return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, **kernel)
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, **kernel)

    return make
