"""The optimizer as every strategy builds it: AdamW (or SGD with momentum, for the local-SGD
equivalences) with weight decay on matrices only, handed to strategies as a factory."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from gradsync.core.config import OptimConfig

OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]


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
