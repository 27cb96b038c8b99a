"""Autoregressive sampling for any causal language model whose ``forward(idx)`` returns logits."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


@torch.no_grad()
def generate(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, block_size: int,
             temperature: float = 0.8, top_k: int | None = 40,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Append ``max_new_tokens`` sampled tokens to ``idx`` (B, T): temperature, then top-k, then
    a multinomial draw from ``generator``; the context is the last ``block_size`` tokens."""
    for _ in range(max_new_tokens):
        logits = model(idx[:, -block_size:])[:, -1, :] / max(temperature, 1e-5)
        if top_k is not None:
            kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
        idx = torch.cat([idx, nxt], dim=1)
    return idx
