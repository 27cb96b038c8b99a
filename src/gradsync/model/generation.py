"""Autoregressive sampling for any causal language model whose ``forward(idx)`` returns logits,
and text from a prompt (the end of training, ``gradsync sample``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from gradsync.data.tokenizers import Tokenizer


@torch.no_grad()
def generate(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    block_size: int,
    temperature: float = 0.8,
    top_k: int | None = 40,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
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


@torch.no_grad()
def sample_text(
    model: nn.Module,
    tokenizer: Tokenizer | None,
    fallback_ids: Sequence[int],
    prompt: str,
    n_tokens: int,
    seed: int,
    temperature: float = 0.8,
    top_k: int | None = 40,
) -> str:
    """Continue ``prompt`` by ``n_tokens`` with ``model.generate``. Without a tokenizer
    (pre-tokenized or synthetic data) the prompt is ``fallback_ids`` (the first validation tokens)
    and the result is printed as token ids."""
    device = next(model.parameters()).device
    if tokenizer is not None:
        ids = tokenizer.encode(prompt.encode()).astype("int64").tolist() or [0]
    else:
        ids = [int(i) for i in fallback_ids]
    gen = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    out = model.generate(
        torch.tensor([ids], device=device),
        n_tokens,  # type: ignore[operator]
        temperature=temperature,
        top_k=top_k,
        generator=gen,
    )[0].tolist()
    model.train(was_training)
    return tokenizer.decode(out) if tokenizer is not None else " ".join(map(str, out))
